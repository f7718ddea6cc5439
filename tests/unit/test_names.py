from __future__ import annotations

import uuid

import pytest

from paas_pitr.errors import AddonIdNotOwned, InvalidName
from paas_pitr.names import (
    ADDON_ID_MAX,
    NameKey,
    default_addon_id,
    name_owner,
    tenant_name_prefix,
    validate_addon_id,
    validate_label,
    validate_own_addon_id,
    validate_tenant,
)


@pytest.mark.parametrize("value", ["acme", "a", "app-1", "0abc", "a" * 63])
def test_valid_labels(value: str) -> None:
    assert validate_label(value, what="x") == value


@pytest.mark.parametrize(
    "value",
    ["", "Acme", "-acme", "acme-", "ac_me", "ac.me", "../etc", "a/b", "a" * 64, "é", "a b"],
)
def test_invalid_labels_are_refused(value: str) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_tenant(value)
    assert caught.value.code == "invalid_name"
    assert caught.value.details["field"] == "tenant"


def test_default_addon_id_follows_the_seed() -> None:
    assert default_addon_id("acme", "app-1") == "db-acme-app-1"


def test_default_addon_id_too_long_asks_for_an_explicit_one() -> None:
    with pytest.raises(InvalidName, match="explicit, shorter addon id"):
        default_addon_id("a" * 20, "b" * 20)


def test_addon_id_leaves_room_for_the_restore_suffix() -> None:
    validate_addon_id("a" * ADDON_ID_MAX)
    with pytest.raises(InvalidName, match=f"at most {ADDON_ID_MAX}"):
        validate_addon_id("a" * (ADDON_ID_MAX + 1))


# --- names are the tenant's own ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "app", "addon_id"),
    [
        ("acme", "app-1", "db-acme-app-1"),
        ("acme-app", "1", "db-acme--app-1"),
        ("a--b", "c", "db-a----b-c"),
    ],
)
def test_default_addon_ids_are_in_their_tenants_space(tenant: str, app: str, addon_id: str) -> None:
    assert default_addon_id(tenant, app) == addon_id
    assert name_owner(addon_id) == tenant
    assert validate_own_addon_id(tenant, addon_id) == addon_id


def _labels(alphabet: str, max_length: int) -> list[str]:
    found = [""]
    for _ in range(max_length):
        found += [w + c for w in found for c in alphabet if len(w) < max_length]
    return sorted({w for w in found if w and _is_label(w)})


def _is_label(value: str) -> bool:
    try:
        validate_label(value, what="x")
    except InvalidName:
        return False
    return True


def test_no_name_is_in_two_tenants_spaces() -> None:
    """Exhaustively over short tenants and suffixes of 'a' and '-': every name spelled for a
    tenant (and every name derived from it by appending) decodes to that tenant only."""
    tenants = _labels("a-", 6)
    suffixes = [s for s in _labels("a-", 4) if not s.startswith("-")]
    owners: dict[str, str] = {}
    for tenant in tenants:
        for suffix in suffixes:
            name = tenant_name_prefix(tenant) + suffix
            assert name_owner(name) == tenant, name
            for derived in (name + "-store", name + "-r0123abcd", name + "-1-full-recovery"):
                assert name_owner(derived) == tenant, derived
            assert owners.setdefault(name, tenant) == tenant, (name, tenant, owners[name])


@pytest.mark.parametrize(
    ("tenant", "addon_id"),
    [
        ("globex", "db-acme-app-2"),  # another tenant's convention
        ("acme", "db-acme--app-2"),  # acme-app's space, not acme's
        ("acme-app", "db-acme-app-2"),  # acme's space, not acme-app's
        ("acme", "mydb"),  # no tenant's space: anyone could take it
        ("acme", "db-acme"),
    ],
)
def test_explicit_ids_outside_the_tenants_space_are_refused(tenant: str, addon_id: str) -> None:
    with pytest.raises(AddonIdNotOwned) as caught:
        validate_own_addon_id(tenant, addon_id)
    assert caught.value.code == "addon_id_not_owned"
    assert caught.value.http_status == 422
    assert caught.value.details == {
        "field": "addon id",
        "value": addon_id,
        "prefix": tenant_name_prefix(tenant),
    }


@pytest.mark.parametrize("name", ["db-acme", "db-acme-", "db--acme-x", "db-a---b", "x-acme-1"])
def test_names_no_tenant_can_spell(name: str) -> None:
    assert name_owner(name) is None


def test_keyed_restore_ids_need_the_key() -> None:
    one, other = NameKey(b"1" * 32), NameKey(b"2" * 32)
    assert one.restore_id("acme", "k-1") == one.restore_id("acme", "k-1")
    assert len(one.restore_id("acme", "k-1")) == 32
    assert one.restore_id("acme", "k-1") != other.restore_id("acme", "k-1")
    assert one.restore_id("acme", "k-1") != one.restore_id("globex", "k-1")
    assert one.restore_id("acme", "k-1") != one.restore_id("acme", "k-2")
    # Not the unkeyed derivation it replaces (uuid5 of tenant and key, computable by all).
    legacy = uuid.uuid5(uuid.UUID("0b6f5b7e-4d0c-4c1e-9a52-7d3f4f2d9a10"), "acme:k-1").hex
    assert one.restore_id("acme", "k-1") != legacy
    with pytest.raises(ValueError, match="32 bytes"):
        NameKey(b"short")
