"""Validation of every user-supplied value that ends up in a Kubernetes name, label or S3 key.

Values from URLs flow into object names, label values and S3 prefixes; anything that is not
a DNS-1123 label is refused before it reaches a builder, so a crafted ``../`` or an
over-long name can never produce an object the API server (or our own object store) would
interpret differently.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

from paas_pitr.errors import AddonIdNotOwned, InvalidName

DNS1123_LABEL_MAX = 63
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# CNPG derives further names from a Cluster's name (pods "<name>-<n>", the job
# "<name>-<n>-full-recovery", services "<name>-rw"...), and those must stay valid labels
# themselves. 47 leaves room for the longest suffix we know of ("-1-full-recovery").
CLUSTER_NAME_MAX = 47
# A recovery cluster is "<addon>-r<8 hex>", so an addon id must leave 10 characters.
RESTORE_SUFFIX_LEN = 10
ADDON_ID_MAX = CLUSTER_NAME_MAX - RESTORE_SUFFIX_LEN


def validate_label(value: str, *, what: str, max_length: int = DNS1123_LABEL_MAX) -> str:
    """Return ``value`` if it is a DNS-1123 label of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} must be a non-empty string", details={"field": what})
    if len(value) > max_length:
        raise InvalidName(
            f"{what} {value!r} is {len(value)} characters long; at most {max_length} allowed",
            details={"field": what, "value": value, "max_length": max_length},
        )
    if not _DNS1123_LABEL.match(value):
        raise InvalidName(
            f"{what} {value!r} is not a DNS-1123 label: use lower-case letters, digits and "
            "'-', starting and ending with a letter or digit",
            details={"field": what, "value": value},
        )
    return value


def validate_tenant(value: str) -> str:
    return validate_label(value, what="tenant")


def validate_app(value: str) -> str:
    return validate_label(value, what="app")


def validate_addon_id(value: str) -> str:
    return validate_label(value, what="addon id", max_length=ADDON_ID_MAX)


def validate_cluster_name(value: str) -> str:
    return validate_label(value, what="cluster name", max_length=CLUSTER_NAME_MAX)


# --- names are the tenant's own ------------------------------------------------------
#
# All objects live in one namespace, so a name one tenant takes is taken for all. Every name
# a request can cause to exist is therefore reserved to one tenant by its spelling:
# ``db-{tenant}-...``, where each '-' of the tenant is written twice. A tenant without '-'
# (``acme``) keeps the seed's ``db-acme-app-1`` verbatim; ``acme-app`` gets ``db-acme--app-1``,
# which no other tenant can spell (the tenant ends at the first single '-', and tenant names
# never end with '-'), so ``acme`` and ``acme-app`` can never reach each other's names.
# Names derived from one (``-store``, ``-daily``, ``-r<8 hex>``, CNPG's ``-1``, ``-rw``...)
# only append, so they stay in the same tenant's space.


def tenant_name_prefix(tenant: str) -> str:
    """``db-{tenant}-`` with each '-' of the tenant doubled: what the tenant's names start
    with, and no other tenant's can."""
    return f"db-{validate_tenant(tenant).replace('-', '--')}-"


def name_owner(name: str) -> str | None:
    """The tenant whose space ``name`` is in (see :func:`tenant_name_prefix`), or ``None``
    for a name no tenant can spell."""
    if not name.startswith("db-"):
        return None
    rest, tenant, i = name[3:], [], 0
    while i < len(rest):
        if rest[i] != "-":
            tenant.append(rest[i])
            i += 1
            continue
        run = len(rest[i:]) - len(rest[i:].lstrip("-"))
        if run % 2:
            # The first odd run of '-' ends the tenant: one '-' exactly (a tenant never ends
            # with '-'), followed by something.
            owner = "".join(tenant)
            if run != 1 or i + 1 >= len(rest) or not _DNS1123_LABEL.match(owner):
                return None
            return owner
        tenant.append("-" * (run // 2))
        i += run
    return None


def validate_own_addon_id(tenant: str, addon_id: str) -> str:
    """An explicit addon id, refused unless it is in ``tenant``'s space. The answer depends on
    the tenant and the id only, never on what exists."""
    validate_addon_id(addon_id)
    if name_owner(addon_id) != tenant:
        prefix = tenant_name_prefix(tenant)
        raise AddonIdNotOwned(
            f"addon id {addon_id!r} is not one of tenant {tenant!r}'s names: they start with "
            f"{prefix!r}",
            details={"field": "addon id", "value": addon_id, "prefix": prefix},
        )
    return addon_id


def default_addon_id(tenant: str, app: str) -> str:
    """The seed's convention, ``db-{tenant}-{app}`` (``db-acme-app-1``), in the tenant's own
    space: a '-' in the tenant is doubled (``acme-app`` -> ``db-acme--app-1``)."""
    validate_app(app)
    addon_id = tenant_name_prefix(tenant) + app
    if len(addon_id) > ADDON_ID_MAX:
        raise InvalidName(
            f"the default addon id {addon_id!r} would exceed {ADDON_ID_MAX} characters; "
            f"pass an explicit, shorter addon id (starting with {tenant_name_prefix(tenant)!r})",
            details={"field": "addon id", "value": addon_id, "max_length": ADDON_ID_MAX},
        )
    return addon_id


class NameKey:
    """Derives names from a server secret, so that nobody without it can compute in advance
    a name a request will create (and take it first, in another tenant's name or by any
    other means). The key is derived from the token signing key: every replica has it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a name key must be at least 32 bytes long")
        self._key = key

    def digest(self, purpose: str, *parts: str) -> bytes:
        message = "\x00".join((purpose, *parts)).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def restore_id(self, tenant: str, idempotency_key: str) -> str:
        """The restore id (and so the recovery cluster's name) of a keyed restore request:
        the same for every retry of it, on every replica; unknowable to anyone else."""
        return uuid.UUID(bytes=self.digest("restore", tenant, idempotency_key)[:16]).hex
