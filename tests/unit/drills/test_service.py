"""The drill use-case on the in-memory engine: the test plays the operator (the cluster's
status) and the clock; checks that need a database are in tests/integration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.drills.records import DrillRecord
from paas_pitr.drills.service import INTERRUPTED
from paas_pitr.errors import DrillInProgress, NoBackupForTarget, PlanHasNoBackups
from tests.unit.drills.conftest import CALLER, NOW, Drills, backed_up_addon


def drill_clusters(drills: Drills) -> list[dict[str, Any]]:
    return [
        obj
        for (kind, _), obj in drills.engine.objects.items()
        if kind == "Cluster" and obj["metadata"]["labels"][naming.LABEL_ROLE] == naming.ROLE_DRILL
    ]


async def until(check: Any) -> Any:
    for _ in range(500):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.01)
    pytest.fail(f"never true: {check}")


async def test_a_drill_never_counts_as_a_restore(drills: Drills) -> None:
    addon = await backed_up_addon(drills)
    record = await drills.service.start(CALLER, "app-1", addon)
    (cluster,) = await until(lambda: drill_clusters(drills))

    assert cluster["metadata"]["name"] == record.cluster_name
    assert cluster["metadata"]["labels"][naming.LABEL_ROLE] == naming.ROLE_DRILL
    restores = await drills.engine.list(
        "Cluster", {naming.LABEL_TENANT: "acme", naming.LABEL_ROLE: naming.ROLE_RESTORE}
    )
    assert restores == []
    with pytest.raises(DrillInProgress):
        await drills.service.start(CALLER, "app-1", addon)
    await drills.service.close()


async def test_the_engine_runs_one_drill_at_a_time_by_default(drills: Drills) -> None:
    first = await backed_up_addon(drills, app="app-1")
    second = await backed_up_addon(drills, app="app-2")
    one = await drills.service.start(CALLER, "app-1", first)
    two = await drills.service.start(CALLER, "app-2", second)
    await until(lambda: drill_clusters(drills))
    await asyncio.sleep(0.1)

    assert [c["metadata"]["name"] for c in drill_clusters(drills)] == [one.cluster_name]
    waiting = await drills.store.get(second, two.drill_id)
    assert waiting is not None
    assert (waiting.status, waiting.progress) == (
        "queued",
        "waiting for a drill slot on this engine",
    )
    # The first fails: the second gets the slot.
    drills.engine.set_status(
        "Cluster",
        one.cluster_name or "",
        {"phase": "Cluster is unrecoverable and needs manual intervention"},
    )
    await until(
        lambda: [c for c in drill_clusters(drills) if c["metadata"]["name"] == two.cluster_name]
    )
    await drills.service.close()


async def test_plans_and_windows_refuse_before_anything_is_created(drills: Drills) -> None:
    free = await backed_up_addon(drills, plan="free")
    with pytest.raises(PlanHasNoBackups):
        await drills.service.start(CALLER, "app-1", free)
    standard = await drills.addons.create_addon_generic(CALLER, "app-2", plan="standard")
    with pytest.raises(NoBackupForTarget):
        await drills.service.start(CALLER, "app-2", standard.addon_id)
    assert drill_clusters(drills) == []
    assert drills.store.records == {}


async def test_a_kill_mid_drill_is_cleaned_up_at_the_next_start(drills: Drills) -> None:
    """What a killed process leaves: the drill cluster (and its ObjectStore) and a running
    record. The next start deletes them and records the drill as interrupted."""
    addon = await backed_up_addon(drills)
    leftover = DrillRecord(
        drill_id="0badc0de" * 4,
        tenant="acme",
        app_id="app-1",
        addon_id=addon,
        plan="pro",
        status="running",
        trigger="schedule",
        requested_by="system:drill-scheduler",
        requested_at=NOW,
        cluster_name=f"{addon}-d0badc0d",
    )
    await drills.store.save(leftover)
    labels = {naming.LABEL_ROLE: naming.ROLE_DRILL, naming.LABEL_DRILL_ID: leftover.drill_id}
    for kind, name in (
        ("Cluster", f"{addon}-d0badc0d"),
        ("ObjectStore", f"{addon}-d0badc0d-store"),
    ):
        drills.engine.put({"kind": kind, "metadata": {"name": name, "labels": labels}})

    assert await drills.service.recover() == 1

    assert drill_clusters(drills) == []
    assert ("ObjectStore", f"{addon}-d0badc0d-store") not in drills.engine.objects
    record = await drills.store.get(addon, leftover.drill_id)
    assert record is not None
    assert (record.status, record.failing_check, record.reason) == (
        "failed",
        "interrupted",
        INTERRUPTED,
    )
    (event,) = drills.events("addon.drill")
    assert (event["drill_id"], event["outcome"], event["trigger"]) == (
        leftover.drill_id,
        "failed",
        "schedule",
    )
    assert await drills.service.recover() == 0
    assert len(drills.events("addon.drill")) == 1


async def test_latest_is_the_default_target_as_for_a_restore(drills: Drills) -> None:
    one = await backed_up_addon(drills, app="app-1")
    two = await backed_up_addon(drills, app="app-2")
    default = await drills.service.start(CALLER, "app-1", one)
    latest = await drills.service.start(CALLER, "app-2", two, timestamp="latest")
    await drills.service.close()

    assert (latest.target, latest.target_time, latest.backup_id) == (
        default.target,
        default.target_time,
        default.backup_id,
    )
    assert latest.target == "point_in_time"
