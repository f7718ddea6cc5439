from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from paas_pitr.addons import AddonService
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository
from paas_pitr.backups import BackupService
from paas_pitr.context import Caller
from paas_pitr.drills.access import MemoryAccess
from paas_pitr.drills.metrics import DrillMetrics
from paas_pitr.drills.service import DrillService
from paas_pitr.drills.store import InMemoryDrillStore
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.names import NameKey
from paas_pitr.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)
BACKUP_END = NOW - timedelta(hours=2)
CALLER = Caller("acme")


@dataclass
class Drills:
    engine: InMemoryEngine
    addons: AddonService
    service: DrillService
    store: InMemoryDrillStore
    audit: AuditLog
    registry: CollectorRegistry

    def events(self, action: str) -> list[dict[str, Any]]:
        return [e.details for e in self.audit.journal.read_all() if e.action == action]


def completed_backup(cluster: str, end: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": f"{cluster}-{end:%H%M%S}",
            "labels": {"cnpg.io/cluster": cluster},
            "creationTimestamp": (end - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"cluster": {"name": cluster}, "method": "barmanObjectStore"},
        "status": {
            "phase": "completed",
            "backupId": end.strftime("%Y%m%dT%H%M%S"),
            "startedAt": (end - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stoppedAt": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "beginLSN": "0/2000028",
            "endLSN": "0/3000100",
        },
    }


async def backed_up_addon(drills: Drills, plan: str = "pro", app: str = "app-1") -> str:
    view = await drills.addons.create_addon_generic(CALLER, app, plan=plan, version="16")
    addon = view.addon_id
    drills.engine.set_status(
        "Cluster",
        addon,
        {
            "phase": "Cluster in healthy state",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ClusterIsReady"},
                {"type": "ContinuousArchiving", "status": "True", "reason": "ok"},
            ],
        },
    )
    if plan != "free":
        drills.engine.put(completed_backup(addon, BACKUP_END))
        drills.engine.archived_at[addon] = NOW - timedelta(minutes=1)
    return addon


@pytest.fixture
def drills(tmp_path: Path) -> Iterator[Drills]:
    settings = Settings(state_dir=tmp_path, cnpg_mode="in-tree", drill_max_concurrent=1)
    engine = InMemoryEngine()
    audit = AuditLog(InMemoryAuditRepository(), AuditJournal(tmp_path / "journal.jsonl"))
    addons = AddonService(engine, settings, audit, name_key=NameKey(b"n" * 32))
    store = InMemoryDrillStore()
    registry = CollectorRegistry()
    service = DrillService(
        addons,
        BackupService(addons),
        store,
        MemoryAccess(),
        DrillMetrics(registry),
        poll_seconds=0.01,
    )
    yield Drills(engine, addons, service, store, audit, registry)
    audit.journal.close()
