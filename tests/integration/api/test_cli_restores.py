"""The CLI's restore commands for in-place restores, against the real HTTP server
(in-memory engine): the test plays the engine's switch by writing the in-place record on
the recovery Cluster, as the switchover service does, and ``restores wait`` must stop at
every status a restore ends in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.restore_views import FINISHED_STATUSES
from paas_pitr.switchover.record import InPlaceRecord, Phase, with_record
from tests.integration.api.test_cli_ops import (
    addon_with_backups,
    in_pipe,
    later,
    start_restore,
)
from tests.integration.conftest import RunningApi
from tests.integration.operator_play import finish_restore


@pytest.fixture
def engine() -> InMemoryEngine:
    return InMemoryEngine(mode="in-tree")


def in_place(engine: InMemoryEngine, cluster: str, phase: Phase | None) -> None:
    """Make ``cluster``'s restore an in-place one, at ``phase`` (``None``: not switched
    yet, so a ready cluster is being verified)."""
    stored = engine.objects[("Cluster", cluster)]
    annotations = stored["metadata"]["annotations"]
    request = json.loads(annotations[naming.ANNOTATION_RESTORE_REQUEST])
    annotations[naming.ANNOTATION_RESTORE_REQUEST] = json.dumps({**request, "target": "in_place"})
    if phase is not None:
        record = InPlaceRecord(
            phase=phase, from_server="db-old", to_server="db-new", reason="amcheck failed"
        )
        engine.objects[("Cluster", cluster)] = with_record(stored, record)


def test_restores_wait_ends_at_switched_then_at_undone(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    cluster = restore["cluster_name"]
    in_place(engine, cluster, None)

    def ready() -> None:
        finish_restore(engine, cluster)
        in_place(engine, cluster, None)

    timers = [
        later(1.5, ready),
        later(3.5, lambda: in_place(engine, cluster, Phase.SWITCHING)),
        later(5.5, lambda: in_place(engine, cluster, Phase.SWITCHED)),
    ]
    args = ("--app", "shop", "--addon", addon, "--restore-id", restore["restore_id"])
    result = in_pipe(api, "restores", "wait", *args, "--timeout", "60")
    for timer in timers:
        timer.join()
    assert result.returncode == 0, result.stderr
    phases = [re.sub(r" \(\d+s\)$", "", line) for line in result.stderr.splitlines()]
    assert phases == [
        "restore triggered: waiting for the new cluster to start",
        "verifying: checking the restored cluster before the switch",
        "switching: the addon's connection moves to the restored data",
        "switched: the addon serves the restored data (undo: `restores undo`)",
    ]
    assert json.loads(result.stdout)["status"] == "switched"

    in_place(engine, cluster, Phase.UNDONE)
    undone = in_pipe(api, "restores", "wait", *args, "--timeout", "60")
    assert undone.returncode == 0, undone.stderr
    assert undone.stderr == "undone: the addon serves its data from before the switch (0s)\n"
    assert json.loads(undone.stdout)["status"] == "undone"


def test_restores_wait_exits_1_on_a_failed_verification(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    finish_restore(engine, restore["cluster_name"])
    in_place(engine, restore["cluster_name"], Phase.FAILED)
    args = ("--app", "shop", "--addon", addon, "--restore-id", restore["restore_id"])
    result = in_pipe(api, "restores", "wait", *args, "--timeout", "60")
    assert result.returncode == 1
    assert "restore failed: amcheck failed" in result.stderr


def test_the_statuses_a_restore_ends_in_are_the_dashboards() -> None:
    from tests.unit.test_dashboard import script

    dashboard = script("dashboard.js")
    (listed,) = re.findall(r"const FINISHED = new Set\(\[([^\]]*)\]\);", dashboard)
    assert set(json.loads(f"[{listed}]")) == FINISHED_STATUSES


def test_restore_in_place_undo_and_delete_reach_the_api(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    base = ("--app", "shop", "--addon", addon)
    # The in-memory engine cannot switch: the API's answer proves the CLI asked in place.
    placed = in_pipe(api, "restore", *base, "--timestamp", "latest", "--target", "in_place")
    assert placed.returncode == 2
    assert placed.stderr.startswith("paas-pitr: error [in_place_not_available]: ")

    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    finish_restore(engine, restore["cluster_name"])
    args = (*base, "--restore-id", restore["restore_id"])
    undo = in_pipe(api, "restores", "undo", *args)
    assert undo.returncode == 2
    assert undo.stderr.startswith("paas-pitr: error [in_place_not_available]: ")

    deleted = in_pipe(api, "restores", "delete", *args)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stderr == f"restore {restore['restore_id']} deleted\n"
    assert ("Cluster", restore["cluster_name"]) not in engine.objects
    gone = in_pipe(api, "restores", "show", *args)
    assert gone.returncode == 2
    assert gone.stderr.startswith("paas-pitr: error [not_found]: ")

    helped = in_pipe(api, "restore", "--help", COLUMNS="200")
    assert "in_place" in helped.stdout
    assert "into a NEW cluster (the addon is never touched), or in place" in helped.stdout
