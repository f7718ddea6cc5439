"""Expired in-place restores recorded on the addon's Cluster (pure)."""

from __future__ import annotations

import json

from paas_pitr.restore_views import RestoreView
from paas_pitr.switchover.expired import (
    ANNOTATION_EXPIRED_RESTORES,
    KEPT,
    expired_restores,
    with_expired,
)

ADDON = {"metadata": {"name": "db-acme-app-1", "annotations": {"other": "kept"}}}


def view(restore_id: str) -> RestoreView:
    return RestoreView(
        restore_id=restore_id,
        app_id="app-1",
        addon_id="db-acme-app-1",
        status="switched",
        timestamp="2026-05-04T11:00:00Z",
        target="in_place",
        cluster_name=f"db-acme-app-1-r{restore_id[:8]}",
        connection={"host": "somewhere"},
        switch={"kept": {"incarnation": "db-acme-app-1-0a1b2c3d", "state": "hibernated"}},
    )


def test_an_expired_restore_is_listed_with_its_kept_cluster_deleted() -> None:
    updated = with_expired(ADDON, view("a" * 32), undo_until="2026-05-05T11:00:00Z")
    assert updated["metadata"]["annotations"]["other"] == "kept"
    assert ADDON["metadata"]["annotations"] == {"other": "kept"}  # not modified in place
    (listed,) = expired_restores(updated)
    assert (listed.restore_id, listed.status, listed.connection) == ("a" * 32, "expired", None)
    assert listed.reason == (
        "the undo time passed at 2026-05-05T11:00:00Z: the kept cluster was deleted"
    )
    assert listed.switch is not None
    assert listed.switch["kept"]["state"] == "deleted"
    assert '{"incarnation": "db-acme-app-1-0a1b2c3d"}' in listed.switch["kept"]["how"]


def test_a_restore_is_recorded_once_and_only_the_newest_are_kept() -> None:
    addon = ADDON
    for index in range(KEPT + 3):
        addon = with_expired(addon, view(f"{index:032d}"), undo_until=None)
    addon = with_expired(addon, view(f"{KEPT + 2:032d}"), undo_until=None)  # again
    listed = [v.restore_id for v in expired_restores(addon)]
    assert len(listed) == KEPT
    assert listed[0] == f"{KEPT + 2:032d}"
    assert listed[-1] == f"{3:032d}"
    assert len(set(listed)) == KEPT


def test_an_unreadable_annotation_lists_nothing() -> None:
    for raw in ("not json", json.dumps({"a": 1}), json.dumps([{"restore_id": 3}])):
        addon = {"metadata": {"annotations": {ANNOTATION_EXPIRED_RESTORES: raw}}}
        assert expired_restores(addon) == []
    assert expired_restores(None) == []
