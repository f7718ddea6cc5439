"""In-place restores for real: a restore into a new server, verified, then switched behind
the addon's own connection, with the previous server kept for an undo.

An app connection string taken before the restore is used throughout: it must read the
restored data after the switch, and the pre-restore data (writes after the target
included) after the undo.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.engines.local import switch as switch_module
from paas_pitr.engines.local.instance import Instance
from paas_pitr.switchover.record import is_hibernated
from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import wait_for_rows
from tests.integration.local.conftest import LocalApi, local_settings, wait_for
from tests.integration.local.test_pitr import (
    instant_between_commits,
    snapshot,
    written_then_damaged,
)

APP = "app-1"


def restore_in_place(api: LocalApi, addon_id: str, target: datetime) -> dict[str, Any]:
    api.wait_restorable(APP, addon_id, format_api_time(target))
    response = api.client.post(
        f"/v1/apps/{APP}/addons/{addon_id}/restore",
        json={"timestamp": format_api_time(target), "target": "in_place"},
    )
    assert response.status_code == 202, response.text
    data = dict(response.json()["data"])
    assert data["status"] == "restore_triggered"
    assert data["target"] == "in_place"
    return data


def wait_settled(api: LocalApi, addon_id: str, restore_id: str) -> dict[str, Any]:
    url = f"/v1/apps/{APP}/addons/{addon_id}/restores/{restore_id}"
    return dict(
        wait_for(
            lambda: (
                (r := api.client.get(url).json()["data"])["status"] in ("switched", "failed") and r
            ),
            timeout=240,
            what=f"in-place restore {restore_id} to settle",
        )
    )


def current_server(api: LocalApi, addon_id: str) -> str:
    cluster = api.engine.objects.get("Cluster", addon_id)
    assert cluster is not None
    return incarnation_server_name_of(cluster)


def test_switch_then_undo_through_the_apps_own_connection(
    local_api: LocalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The newest restorable instant of the addon's data before and after its server stops.
    ends: list[tuple[str | None, str | None]] = []
    real_final = switch_module.final_latest_restorable

    def final_latest_restorable(instance: Instance) -> str | None:
        before = instance.meta.get("latest_restorable")
        after = real_final(instance)
        ends.append((before, after))
        return after

    monkeypatch.setattr(switch_module, "final_latest_restorable", final_latest_restorable)
    addon_id, uri, target, expected = written_then_damaged(local_api)
    after = snapshot(uri)
    before_server = current_server(local_api, addon_id)
    port = local_api.addon(APP, addon_id)["connection"]["port"]

    started = restore_in_place(local_api, addon_id, target)
    restore = wait_settled(local_api, addon_id, started["restore_id"])
    assert restore["status"] == "switched", (restore["reason"], restore["switch"])

    # The app's own connection string, taken before the restore, reads the restored data.
    assert snapshot(uri) == expected
    assert local_api.addon(APP, addon_id)["connection"]["port"] == port
    switch = restore["switch"]
    assert [c["name"] for c in switch["checks"]] == [
        "promoted_and_writable",
        "reached_target",
        "amcheck",
        "user_tables",
    ]
    assert all(c["passed"] for c in switch["checks"])
    assert 0 < switch["unavailable_seconds"] < 30
    assert switch["from_incarnation"] == before_server
    assert switch["to_incarnation"] == current_server(local_api, addon_id)
    assert switch["to_incarnation"] != before_server
    kept = switch["kept"]
    assert kept["cluster_name"] == restore["cluster_name"]
    assert kept["incarnation"] == before_server
    assert kept["state"] == "hibernated"
    assert f"/restores/{restore['restore_id']}/undo" in kept["how"]
    assert restore["connection"] is None
    # The kept server is stopped, its Cluster hibernated.
    kept_cluster = local_api.engine.objects.get("Cluster", restore["cluster_name"])
    assert kept_cluster is not None and is_hibernated(kept_cluster)
    assert not local_api.engine.instances[restore["cluster_name"]].server.is_running()
    # Nor does its WAL archiver run: a hibernated cluster archives nothing.
    archivers = local_api.engine.archiving.archivers
    assert archivers is not None
    wait_for(lambda: archivers.pid(restore["cluster_name"]) is None, timeout=30)
    # The switched-away range ends with the newest heartbeat its server archived, read once
    # it had stopped (its last segments are archived while it stops), not before.
    final = local_api.engine.instances[restore["cluster_name"]].latest_restorable
    ((before_stop, after_stop),) = ends
    assert before_stop is not None and after_stop is not None and final is not None
    assert datetime.fromisoformat(after_stop) == final > datetime.fromisoformat(before_stop)
    window = local_api.backups(APP, addon_id)["window"]
    (earlier,) = [r for r in window["ranges"] if r["server_name"] == before_server]
    assert (earlier["latest"], earlier["current"]) == (format_api_time(final), False)

    (asked,) = wait_for_rows(local_api.dsn, 1, "addon.restore_pitr")
    assert asked[2]["target"] == "in_place"
    (switched,) = wait_for_rows(local_api.dsn, 1, "addon.switchover")
    assert switched[2]["restore_id"] == restore["restore_id"]
    assert switched[2]["from_incarnation"] == before_server

    undone = local_api.client.post(
        f"/v1/apps/{APP}/addons/{addon_id}/restores/{restore['restore_id']}/undo"
    )
    assert undone.status_code == 200, undone.text
    view = undone.json()["data"]
    assert view["status"] == "undone"
    assert view["switch"]["kept"]["incarnation"] == switch["to_incarnation"]
    # The pre-restore data is back, the writes made after the target included.
    assert snapshot(uri) == after
    assert current_server(local_api, addon_id) == before_server
    (audited,) = wait_for_rows(local_api.dsn, 1, "addon.undo")
    assert audited[2]["restore_id"] == restore["restore_id"]
    assert audited[2]["back_to_incarnation"] == before_server

    again = local_api.client.post(
        f"/v1/apps/{APP}/addons/{addon_id}/restores/{restore['restore_id']}/undo"
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "undo_not_available"


@pytest.fixture
def strict_api(workdir: Path, audit_dsn: str) -> Iterator[LocalApi]:
    # No restore can be this close to its target: the newest commit (a heartbeat every
    # second) is always further before it, so the verification fails for real.
    api = LocalApi(local_settings(workdir, inplace_max_distance_seconds=0.000001), audit_dsn)
    yield api
    api.stop()


def test_a_failed_verification_switches_nothing(strict_api: LocalApi) -> None:
    addon_id, uri, target, _ = written_then_damaged(strict_api)
    after = snapshot(uri)
    before_server = current_server(strict_api, addon_id)
    started = restore_in_place(strict_api, addon_id, target)
    restore = wait_settled(strict_api, addon_id, started["restore_id"])
    assert restore["status"] == "failed", restore
    assert restore["reason"].startswith("verification failed (reached_target)")
    assert restore["hint"].startswith("the recovered data does not end at the recovery target")
    # Hibernated: its server is stopped (no connection is offered), its data kept.
    assert restore["connection"] is None
    instance = strict_api.engine.instances[restore["cluster_name"]]
    wait_for(
        lambda: not instance.server.is_running(),
        timeout=60,
        what="the failed restore's PostgreSQL to stop",
    )
    assert restore["switch"]["kept"] is None
    assert snapshot(uri) == after
    assert current_server(strict_api, addon_id) == before_server
    assert not wait_for_rows(strict_api.dsn, 0, "addon.switchover")
    (failed,) = wait_for_rows(strict_api.dsn, 1, "addon.restore_failed")
    assert failed[2]["restore_id"] == restore["restore_id"]
    undo = strict_api.client.post(
        f"/v1/apps/{APP}/addons/{addon_id}/restores/{restore['restore_id']}/undo"
    )
    assert undo.status_code == 409, undo.text


def test_a_restart_during_switching_ends_switched_and_a_second_restore_goes_back(
    local_api: LocalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    addon_id, uri, target, expected = written_then_damaged(local_api)
    damaged_at = instant_between_commits()
    after = snapshot(uri)
    before_server = current_server(local_api, addon_id)
    local_api.wait_restorable(APP, addon_id, format_api_time(damaged_at))

    # The switch dies after its first rename, and keeps dying until the service restarts:
    # what a kill at that point leaves (the journal and the data directories half moved).
    renames: list[str] = []
    real_rename = os.rename

    def dying_rename(source: Any, target_path: Any) -> None:
        if str(source).endswith("/data") or str(source).endswith("data.switching"):
            if renames:
                raise OSError("killed (test)")
            renames.append(str(source))
        real_rename(source, target_path)

    monkeypatch.setattr("paas_pitr.engines.local.switch.os.rename", dying_rename)
    started = restore_in_place(local_api, addon_id, target)
    url = f"/v1/apps/{APP}/addons/{addon_id}/restores/{started['restore_id']}"
    wait_for(
        lambda: local_api.client.get(url).json()["data"]["status"] == "switching" and renames,
        timeout=240,
        what="the switch to be under way",
    )
    local_api.stop()
    monkeypatch.setattr("paas_pitr.engines.local.switch.os.rename", real_rename)
    local_api.start()

    restore = wait_settled(local_api, addon_id, started["restore_id"])
    assert restore["status"] == "switched", (restore["reason"], restore["switch"])
    assert snapshot(uri) == expected
    assert current_server(local_api, addon_id) == restore["switch"]["to_incarnation"]

    # The window spans the incarnation switched away from, up to the switch: a second
    # in-place restore goes back to an instant before the first switch.
    listing = local_api.wait_current_range(APP, addon_id)
    earlier = [r for r in listing["window"]["ranges"] if r["server_name"] == before_server]
    assert earlier and not earlier[-1]["current"]
    assert datetime.fromisoformat(earlier[-1]["latest"]) >= damaged_at
    second = restore_in_place(local_api, addon_id, damaged_at)
    assert second["incarnation"] == before_server
    done = wait_settled(local_api, addon_id, second["restore_id"])
    assert done["status"] == "switched", done
    assert snapshot(uri) == after
    assert done["switch"]["from_incarnation"] == restore["switch"]["to_incarnation"]

    # Twice switched, the addon restores into a new cluster from before the first switch.
    listing = local_api.backups(APP, addon_id)
    servers = {r["server_name"] for r in listing["window"]["ranges"]}
    assert {before_server, restore["switch"]["to_incarnation"]} <= servers
    response = local_api.restore(APP, addon_id, format_api_time(target))
    assert response.status_code == 202, response.text
    assert response.json()["data"]["incarnation"] == before_server
    copy = local_api.wait_restore(APP, addon_id, response.json()["data"]["restore_id"])
    assert copy["status"] == "ready", copy
    assert snapshot(copy["connection"]["uri"]) == expected
    assert snapshot(uri) == after
