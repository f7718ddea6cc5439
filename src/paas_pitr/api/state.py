"""What the running app holds: the engine, the audit log and the use-cases built on them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from paas_pitr.addons import AddonService
from paas_pitr.archives import ArchiveService
from paas_pitr.audit import AuditLog
from paas_pitr.auth import TokenAuthority
from paas_pitr.backups import BackupService
from paas_pitr.drills.service import DrillService
from paas_pitr.drills.wiring import build_drills
from paas_pitr.engines.base import Engine
from paas_pitr.names import NameKey
from paas_pitr.restore_views import RestoreTracker
from paas_pitr.restores import RestoreService
from paas_pitr.settings import Settings


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "paas_pitr_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "paas_pitr_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.restores = Counter("paas_pitr_restores", "Restores triggered", registry=self.registry)
        self.audit_pending = Gauge(
            "paas_pitr_audit_pending_events",
            "Audit events not yet in the database",
            registry=self.registry,
        )
        self.audit_delivered = Gauge(
            "paas_pitr_audit_delivered_events",
            "Audit events written to the database since start",
            registry=self.registry,
        )
        self.audit_stalled = Gauge(
            "paas_pitr_audit_delivery_stalled_seconds",
            "How long audit events have waited without any being delivered (0: none waits)",
            registry=self.registry,
        )
        self.disk_free = Gauge(
            "paas_pitr_state_disk_free_bytes",
            "Free space on the disk of the state directory (the audit journal's)",
            registry=self.registry,
        )


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    audit: AuditLog
    tokens: TokenAuthority
    addons: AddonService
    backups: BackupService
    restores: RestoreService
    archives: ArchiveService
    metrics: Metrics
    drills: DrillService
    # Run last at shutdown (the embedded database): uvicorn re-raises SIGTERM after the
    # lifespan ends, so code after ``uvicorn.run`` never runs.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Long-running supervisors started with the app and cancelled when it stops.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)

    @classmethod
    def build(
        cls, settings: Settings, engine: Engine, audit: AuditLog, tokens: TokenAuthority
    ) -> AppState:
        addons = AddonService(engine, settings, audit, name_key=NameKey(tokens.derive_key("names")))
        backups = BackupService(addons)
        archives = ArchiveService(addons, audit)
        engine.listeners.append(RestoreTracker(audit))
        metrics = Metrics()
        drills = build_drills(settings, engine, addons, backups, metrics.registry)
        return cls(
            settings=settings,
            engine=engine,
            audit=audit,
            tokens=tokens,
            addons=addons,
            backups=backups,
            restores=RestoreService(addons, backups, archives),
            archives=archives,
            metrics=metrics,
            drills=drills.service,
            closers=drills.closers,
            background=[drills.scheduler.run_forever],
        )
