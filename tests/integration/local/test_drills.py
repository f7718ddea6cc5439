"""Restore drills on the local engine for real: PostgreSQL, barman-cloud and the S3 server.

A drill restores the addon into a throwaway cluster, checks it and deletes it; when the
archive is damaged behind the API's back (the embedded S3 server keeps objects as plain
files) the drill fails with PostgreSQL's (or barman-cloud's) own reason, shown in the API,
the audit row and the metrics.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from paas_pitr.cli import app
from paas_pitr.cnpg import naming
from tests.integration.api.test_api import wait_for_rows
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import switch_wal, write_initial_data
from tests.integration.local.test_restore_failures import (
    restorable_target_after_a_backup,
    wal_segments,
)

CHECKS = ["recovery", "promoted_and_writable", "reached_target", "amcheck", "user_tables"]


def drill(api: LocalApi, addon_id: str) -> dict[str, Any]:
    response = api.client.post(f"/v1/apps/app-1/addons/{addon_id}/drills")
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


def wait_drill(api: LocalApi, addon_id: str, drill_id: str) -> dict[str, Any]:
    url = f"/v1/apps/app-1/addons/{addon_id}/drills/{drill_id}"
    return dict(
        wait_for(
            lambda: (
                (d := api.client.get(url).json()["data"])["status"] in ("passed", "failed") and d
            ),
            timeout=240,
            what=f"drill {drill_id}",
        )
    )


def drill_clusters(api: LocalApi) -> list[dict[str, Any]]:
    return api.engine.objects.list("Cluster", {naming.LABEL_ROLE: naming.ROLE_DRILL})


def assert_cleaned_up(api: LocalApi, cluster_name: str) -> None:
    wait_for(lambda: not drill_clusters(api), what="the drill cluster's deletion")
    instance = api.settings.state_dir / "local" / "instances" / cluster_name
    wait_for(lambda: not instance.exists(), what="the drill server's removal")


def metric(api: LocalApi, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(api.client.get("/metrics").text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def test_a_pro_drill_passes_with_its_rto_and_checks(
    local_api: LocalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAAS_PITR_URL", local_api.running.url)
    monkeypatch.setenv("PAAS_PITR_TOKEN", local_api.running.token())
    cli = CliRunner()
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    listing = local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    write_initial_data(uri)
    switch_wal(local_api, addon_id)
    written = datetime.now(UTC)
    local_api.wait_restorable("app-1", addon_id, written.isoformat())

    ran = cli.invoke(app, ["drills", "run", "--app", "app-1", "--addon", addon_id, "--wait"])

    assert ran.exit_code == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert record["status"] == "passed", record
    # Not a terminal: one progress line per step, then the outcome with the RTO.
    assert f"drill {record['drill_id'][:8]}: " in ran.stderr
    # The phases as they were seen (a fast restore's checks may come and go between polls).
    assert "restoring" in ran.stderr and "passed" in ran.stderr
    assert f"drill {record['drill_id']} passed: RTO {record['rto_seconds']}s" in ran.stderr
    listed = cli.invoke(app, ["drills", "list", "--app", "app-1", "--addon", addon_id])
    assert listed.exit_code == 0, listed.stderr
    assert record["drill_id"] in listed.stdout and "passed" in listed.stdout
    assert [c["name"] for c in record["checks"]] == CHECKS
    checks = {c["name"]: c for c in record["checks"]}
    reached = checks["reached_target"]["figures"]
    assert reached["measured_by"] == "heartbeat"
    assert reached["target"] == record["target_time"]
    # The newest restorable instant is an archived heartbeat: recovery stops right on it.
    assert 0 <= reached["distance_seconds"] <= local_api.settings.heartbeat_seconds + 1
    assert checks["user_tables"]["figures"]["per_database"]["app"] == 2
    assert checks["amcheck"]["figures"]["budget_hit"] is False
    assert checks["amcheck"]["figures"]["indexes_checked"] > 0
    assert checks["promoted_and_writable"]["figures"]["timeline"] >= 2
    assert record["backup_id"] == listing["items"][0]["backup_id"]
    assert record["rto_seconds"] > 0
    assert record["data_bytes"] > 0
    assert record["wal_bytes_replayed"] > 0
    assert record["restore_rate_bytes_per_second"] > 0
    assert_cleaned_up(local_api, record["cluster_name"])
    # Never a user's restore.
    restores = local_api.client.get(f"/v1/apps/app-1/addons/{addon_id}/restores")
    assert restores.json()["data"] == []
    assert local_api.addon("app-1", addon_id)["last_drill"]["status"] == "passed"
    (row,) = wait_for_rows(local_api.dsn, 1, "addon.drill")
    assert (row[2]["outcome"], row[2]["rto_seconds"]) == ("passed", record["rto_seconds"])


@pytest.mark.parametrize("fixture", ["local_api", "plugin_api"])
def test_a_standard_drill_restores_the_newest_base_backup(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    local_api: LocalApi = request.getfixturevalue(fixture)
    addon = local_api.create_addon("standard")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    write_initial_data(uri)
    listing = local_api.wait_backups_completed("app-1", addon_id)
    point = wait_for(
        lambda: local_api.backups("app-1", addon_id)["window"]["restore_points"],
        what="a restore point",
    )[0]
    wait_for(
        lambda: datetime.now(UTC) > datetime.fromisoformat(point["at"]),
        what="the backup to be consistent",
    )

    record = wait_drill(local_api, addon_id, drill(local_api, addon_id)["drill_id"])

    assert record["status"] == "passed", record
    assert (record["target"], record["backup_id"]) == (
        "backup_end",
        listing["items"][0]["backup_id"],
    )
    assert [c["name"] for c in record["checks"]] == CHECKS
    assert record["rto_seconds"] > 0
    assert_cleaned_up(local_api, record["cluster_name"])


def failed_drill(api: LocalApi, addon_id: str) -> dict[str, Any]:
    record = wait_drill(api, addon_id, drill(api, addon_id)["drill_id"])
    assert record["status"] == "failed", record
    assert record["failing_check"] == "recovery", record
    assert record["hint"], record
    assert_cleaned_up(api, record["cluster_name"])
    (row,) = wait_for_rows(api.dsn, 1, "addon.drill")
    assert (row[2]["outcome"], row[2]["failing_check"], row[2]["reason"]) == (
        "failed",
        "recovery",
        record["reason"],
    )
    labels = {"tenant": "acme", "app": "app-1", "addon": addon_id}
    assert metric(api, "paas_pitr_drills_failed_total", check="recovery", **labels) == 1
    assert (
        metric(
            api,
            "paas_pitr_drill_last_failure",
            check="recovery",
            reason=record["reason"][:200],
            **labels,
        )
        == 1
    )
    return record


def test_a_drill_fails_when_a_wal_object_the_target_needs_is_removed(
    local_api: LocalApi,
) -> None:
    addon_id, backup, server, _ = restorable_target_after_a_backup(local_api)
    segments = wal_segments(server)
    gap = sorted(name for name in segments if name > backup["end_wal"])[0]
    segments[gap].unlink()

    record = failed_drill(local_api, addon_id)

    assert record["reason"].startswith(
        "recovery ended before configured recovery target was reached"
    ), record
    assert f"WAL segment {gap} is missing from the archive" in record["reason"], record


def test_a_drill_fails_when_a_base_backup_object_is_corrupted(local_api: LocalApi) -> None:
    addon_id, backup, server, _ = restorable_target_after_a_backup(local_api)
    (data,) = (server / "base" / backup["backup_id"]).glob("data.tar*")
    content = bytearray(data.read_bytes())
    # Garbage over the middle of the archive, as a bad disk or a torn upload leaves it.
    middle = len(content) // 2
    content[middle : middle + 4096] = b"\xa5" * min(4096, len(content) - middle)
    data.write_bytes(bytes(content))

    record = failed_drill(local_api, addon_id)

    assert record["reason"].startswith("base backup restore failed: "), record


def test_a_restart_in_the_middle_of_a_drill_leaves_no_cluster(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id = addon["addon_id"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    started = drill(local_api, addon_id)
    wait_for(lambda: drill_clusters(local_api), what="the drill cluster")

    local_api.restart()

    assert_cleaned_up(local_api, started["cluster_name"])
    record = local_api.client.get(
        f"/v1/apps/app-1/addons/{addon_id}/drills/{started['drill_id']}"
    ).json()["data"]
    assert (record["status"], record["failing_check"]) == ("failed", "interrupted")
    assert "interrupted" in record["reason"]
