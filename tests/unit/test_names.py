from __future__ import annotations

import pytest

from paas_pitr.errors import InvalidName
from paas_pitr.names import (
    ADDON_ID_MAX,
    default_addon_id,
    validate_addon_id,
    validate_label,
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
