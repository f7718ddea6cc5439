"""How the drills are put together for an engine: their store, access, metrics, scheduler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from paas_pitr.addons import AddonService
from paas_pitr.backups import BackupService
from paas_pitr.drills.access import access_for
from paas_pitr.drills.metrics import DrillMetrics
from paas_pitr.drills.scheduler import DrillScheduler
from paas_pitr.drills.service import DrillService
from paas_pitr.drills.store import (
    ConfigMapDrillStore,
    DrillStore,
    InMemoryDrillStore,
    SqliteDrillStore,
)
from paas_pitr.engines.base import Engine
from paas_pitr.settings import Settings


@dataclass
class Drills:
    service: DrillService
    scheduler: DrillScheduler
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def build_drills(
    settings: Settings,
    engine: Engine,
    addons: AddonService,
    backups: BackupService,
    registry: CollectorRegistry,
) -> Drills:
    """The drills of ``engine``, their records where that engine keeps its state."""
    closers: list[Callable[[], Awaitable[None]]] = []
    store: DrillStore
    if engine.name == "local":
        sqlite = SqliteDrillStore(engine.root / "drills.sqlite3")  # type: ignore[attr-defined]

        async def close_store() -> None:
            sqlite.close()

        closers.append(close_store)
        store = sqlite
    elif engine.name == "kubernetes":
        store = ConfigMapDrillStore(
            engine.api,  # type: ignore[attr-defined]
            lambda addon_id: engine.get("Cluster", addon_id),
        )
    else:
        store = InMemoryDrillStore()
    service = DrillService(
        addons,
        backups,
        store,
        access_for(engine, settings.heartbeat_seconds),
        DrillMetrics(registry),
    )
    # Addon views carry their newest finished drill.
    addons.last_drill_of = service.last_drill
    scheduler = DrillScheduler(
        service,
        schedule=settings.drill_schedule,
        poll_seconds=settings.drill_schedule_poll_seconds,
    )
    return Drills(service, scheduler, closers)
