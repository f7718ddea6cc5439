"""Per-tenant restore limits against the in-memory engine: which restore clusters count as
under way and which as kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import PointInTime, build_recovery_cluster
from paas_pitr.context import Caller
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.errors import LimitReached, TooManyRestores
from paas_pitr.quotas import check_restore_limits
from paas_pitr.settings import Settings
from paas_pitr.switchover.record import (
    ANNOTATION_HIBERNATION,
    InPlaceRecord,
    Phase,
    with_record,
)

ACME = Caller("acme")
TARGET = datetime(2026, 5, 4, 11, 0, tzinfo=UTC)


async def add_restore(
    engine: InMemoryEngine,
    index: int,
    *,
    status: dict[str, object] | None,
    record: InPlaceRecord | None = None,
    hibernated: bool = False,
) -> None:
    cluster = build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id=f"{index:x}" * 32,
        target=PointInTime(TARGET),
        source_server_name="db-acme-app-1-0a0a0a0a",
        server_name=naming.incarnation_server_name("db-acme-app-1", f"{index:08x}"),
    ).cluster
    if record is not None:
        cluster = with_record(cluster, record)
    if hibernated:
        cluster["metadata"].setdefault("annotations", {})[ANNOTATION_HIBERNATION] = "on"
    await engine.create(cluster)
    if status is not None:
        engine.set_status("Cluster", cluster["metadata"]["name"], status)


HIBERNATED_STATUS = {"phase": "Cluster in hibernation", "readyInstances": 0}


async def test_kept_in_place_clusters_are_not_restores_under_way(tmp_path: Path) -> None:
    engine = InMemoryEngine()
    settings = Settings(state_dir=tmp_path, max_concurrent_restores_per_tenant=3)
    switched = InPlaceRecord(phase=Phase.SWITCHED)
    for index in range(3):
        # What three in-place restores leave: kept (hibernated) clusters with no ready
        # instance, which read as recovering by their status alone.
        await add_restore(engine, index, status=HIBERNATED_STATUS, record=switched, hibernated=True)
    await check_restore_limits(engine, settings, ACME, "app-1", "db-acme-app-1")

    # A failed in-place restore has ended too, whatever its status says.
    await add_restore(
        engine,
        3,
        status={"phase": "Setting up primary"},
        record=switched.evolve(phase=Phase.FAILED),
    )
    await check_restore_limits(engine, settings, ACME, "app-1", "db-acme-app-1")

    # Restores really recovering still count.
    await add_restore(engine, 4, status={"phase": "Setting up primary"})
    await add_restore(engine, 5, status=None)
    await add_restore(engine, 6, status={"phase": "Setting up primary"})
    with pytest.raises(TooManyRestores) as raised:
        await check_restore_limits(engine, settings, ACME, "app-1", "db-acme-app-1")
    assert raised.value.details == {
        "limit": 3,
        "setting": "PAAS_PITR_MAX_CONCURRENT_RESTORES_PER_TENANT",
    }


async def test_kept_in_place_clusters_count_as_kept_restore_clusters(tmp_path: Path) -> None:
    engine = InMemoryEngine()
    settings = Settings(state_dir=tmp_path, max_restores_per_addon=2)
    undone = InPlaceRecord(phase=Phase.UNDONE)
    for index in range(2):
        await add_restore(engine, index, status=HIBERNATED_STATUS, record=undone, hibernated=True)
    with pytest.raises(LimitReached) as raised:
        await check_restore_limits(engine, settings, ACME, "app-1", "db-acme-app-1")
    assert raised.value.details == {"limit": 2, "setting": "PAAS_PITR_MAX_RESTORES_PER_ADDON"}
