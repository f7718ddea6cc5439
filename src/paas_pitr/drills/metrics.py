"""The drills' Prometheus metrics, per addon (labels: tenant, app, addon)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from paas_pitr.drills.records import DrillRecord

_LABELS = ("tenant", "app", "addon")
# A reason is free text from PostgreSQL: cut to keep one failure series readable.
REASON_CHARS = 200


class DrillMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_passed = Gauge(
            "paas_pitr_drill_last_passed_timestamp_seconds",
            "When the addon's newest passed restore drill finished (Unix time)",
            _LABELS,
            registry=registry,
        )
        self.last_rto = Gauge(
            "paas_pitr_drill_last_rto_seconds",
            "The newest restore drill's RTO: wall time from its recovery cluster's request "
            "to ready",
            _LABELS,
            registry=registry,
        )
        self.failed = Counter(
            "paas_pitr_drills_failed",
            "Restore drills that failed, by addon and failing check",
            (*_LABELS, "check"),
            registry=registry,
        )
        self.last_failure = Gauge(
            "paas_pitr_drill_last_failure",
            "1 for the addon's newest failed drill, with its failing check and reason (one "
            "series per addon; removed once a drill passes)",
            (*_LABELS, "check", "reason"),
            registry=registry,
        )
        self._failure_labels: dict[tuple[str, str, str], tuple[str, ...]] = {}

    def observe(self, record: DrillRecord) -> None:
        """Record a finished drill."""
        addon = (record.tenant, record.app_id, record.addon_id)
        if record.rto_seconds is not None:
            self.last_rto.labels(*addon).set(record.rto_seconds)
        previous = self._failure_labels.pop(addon, None)
        if previous is not None:
            self.last_failure.remove(*previous)
        if record.status == "passed":
            finished = record.finished_at or record.requested_at
            self.last_passed.labels(*addon).set(finished.timestamp())
            return
        check = record.failing_check or "unknown"
        self.failed.labels(*addon, check).inc()
        labels = (*addon, check, (record.reason or "")[:REASON_CHARS])
        self.last_failure.labels(*labels).set(1)
        self._failure_labels[addon] = labels
