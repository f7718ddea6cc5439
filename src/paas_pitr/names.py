"""Validation of every user-supplied value that ends up in a Kubernetes name, label or S3 key.

Values from URLs flow into object names, label values and S3 prefixes; anything that is not
a DNS-1123 label is refused before it reaches a builder, so a crafted ``../`` or an
over-long name can never produce an object the API server (or our own object store) would
interpret differently.
"""

from __future__ import annotations

import re

from paas_pitr.errors import InvalidName

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


def default_addon_id(tenant: str, app: str) -> str:
    """The seed's convention: ``db-{tenant}-{app}`` (``db-acme-app-1``)."""
    validate_tenant(tenant)
    validate_app(app)
    addon_id = f"db-{tenant}-{app}"
    if len(addon_id) > ADDON_ID_MAX:
        raise InvalidName(
            f"the default addon id {addon_id!r} would exceed {ADDON_ID_MAX} characters; "
            "pass an explicit, shorter addon id",
            details={"field": "addon id", "value": addon_id, "max_length": ADDON_ID_MAX},
        )
    return addon_id
