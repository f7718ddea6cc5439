"""Per-addon metrics: the recoverability facts of each addon, as Prometheus series.

Every series carries the labels ``tenant``, ``app``, ``addon`` and ``tier`` (one series per
addon, never per request). The gauges are read from the latest :class:`AddonSample` of each
addon, which :mod:`paas_pitr.observability.sampler` refreshes in the background; only the
ages (``..._lag_seconds``) are computed at scrape time, so they never go stale between two
samples.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from paas_pitr.backups import ArchiveState
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.projections import (
    BackupStatus,
    WalArchiveStatus,
    archive_timeout_of,
)
from paas_pitr.drills.records import DrillRecord
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import PitrError
from paas_pitr.plans import tier_for_plan
from paas_pitr.timestamps import parse_k8s_time

LABELS = ("tenant", "app", "addon", "tier")
Outcome = Literal["succeeded", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("succeeded", "failed")

RESTORE_DURATION = "paas_pitr_restore_duration_seconds"
DRILL_DURATION = "paas_pitr_drill_duration_seconds"
# Restores and drills take from tens of seconds (a small base backup) to hours (replaying
# days of WAL).
DURATION_BUCKETS = (15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)


class AddonLabels(NamedTuple):
    tenant: str
    app: str
    addon: str
    tier: str


def labels_of(cluster: Manifest) -> AddonLabels:
    """The metric labels of an addon's Cluster (or of one of its recovery Clusters)."""
    labels = cluster.get("metadata", {}).get("labels") or {}
    return AddonLabels(
        tenant=str(labels.get(naming.LABEL_TENANT, "")),
        app=str(labels.get(naming.LABEL_APP, "")),
        addon=str(labels.get(naming.LABEL_ADDON, "")),
        tier=str(labels.get(naming.LABEL_TIER, "")),
    )


def _tier_of_plan(plan: str) -> str:
    try:
        return tier_for_plan(plan).value
    except PitrError:
        return ""


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


@dataclass(frozen=True, slots=True)
class AddonSample:
    """What one addon's objects said at ``sampled_at`` (Unix seconds throughout)."""

    labels: AddonLabels
    created_at: float | None
    """The addon Cluster's creationTimestamp: the age a missing first backup is measured from."""
    last_base_backup_at: float | None
    """End of the newest completed base backup of the current incarnation."""
    newest_restorable_at: float | None
    """The window's newest restorable instant (pro: any instant; standard: a backup's end)."""
    last_archived_wal_at: float | None
    """When the newest archived WAL segment was written (``None``: the engine cannot tell)."""
    archiving_failing: bool
    """``ContinuousArchiving`` is False: the last ``archive_command`` failed."""
    archiving_on: bool
    backups_failed: int
    """Failed Backups of the current incarnation still present as objects."""
    window_seconds: float
    """Width of the current restorable range (0 while none is open)."""
    archive_timeout_seconds: float
    sampled_at: float


def sample_addon(state: ArchiveState, *, now: datetime) -> AddonSample:
    """The sample of an addon from its archive state (see ``BackupService.compose``)."""
    cluster = state.cluster
    completed = [
        b.stopped_at
        for b in state.backups
        if b.status is BackupStatus.COMPLETED and b.stopped_at is not None
    ]
    window = state.window
    width = 0.0
    if window.earliest is not None and window.latest is not None:
        width = max(0.0, (window.latest - window.earliest).total_seconds())
    newest = window.latest
    if newest is None and window.restore_points:
        newest = max(p.at for p in window.restore_points)
    return AddonSample(
        labels=labels_of(cluster),
        created_at=_epoch(parse_k8s_time(cluster.get("metadata", {}).get("creationTimestamp"))),
        last_base_backup_at=_epoch(max(completed)) if completed else None,
        newest_restorable_at=_epoch(newest),
        last_archived_wal_at=_epoch(state.wal_archive.last_archived_at),
        archiving_failing=state.wal_archive.status is WalArchiveStatus.FAILING,
        archiving_on=state.wal_archive.status is not WalArchiveStatus.DISABLED,
        backups_failed=sum(1 for b in state.backups if b.status is BackupStatus.FAILED),
        window_seconds=width,
        archive_timeout_seconds=archive_timeout_of(cluster).total_seconds(),
        sampled_at=now.timestamp(),
    )


class _Families:
    """The gauge families of one scrape, filled addon by addon."""

    def __init__(self) -> None:
        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=LABELS)

        self.created = gauge(
            "paas_pitr_addon_created_timestamp_seconds",
            "When the addon's Cluster was created (Unix time)",
        )
        self.last_backup = gauge(
            "paas_pitr_last_base_backup_timestamp_seconds",
            "End of the newest completed base backup of the addon's current incarnation "
            "(Unix time; absent before the first one)",
        )
        self.newest = gauge(
            "paas_pitr_newest_restorable_timestamp_seconds",
            "The newest instant a restore can reach (Unix time; absent while the window is "
            "not open)",
        )
        self.archive_lag = gauge(
            "paas_pitr_wal_archive_lag_seconds",
            "Now minus when the newest archived WAL segment was written (absent where the "
            "engine cannot read the archive)",
        )
        self.failing = gauge(
            "paas_pitr_wal_archiving_failing",
            "1 while WAL archiving fails (CNPG's ContinuousArchiving condition is False)",
        )
        self.archiving = gauge(
            "paas_pitr_wal_archiving_enabled", "1 while the plan archives WAL, 0 on plans without"
        )
        self.failed = gauge(
            "paas_pitr_backups_failed",
            "Failed base backups of the current incarnation still present as Backup objects",
        )
        self.width = gauge(
            "paas_pitr_recoverability_window_seconds",
            "Width of the current restorable range (0 while none is open)",
        )
        self.timeout = gauge(
            "paas_pitr_archive_timeout_seconds",
            "The addon's archive_timeout: at most how stale its newest archived WAL should be",
        )
        self.sampled = gauge(
            "paas_pitr_addon_sample_timestamp_seconds",
            "When the addon's objects were last read for these metrics (Unix time)",
        )

    def add(self, sample: AddonSample, now: float) -> None:
        values = list(sample.labels)

        def put(family: GaugeMetricFamily, value: float | None) -> None:
            if value is not None:
                family.add_metric(values, value)

        put(self.created, sample.created_at)
        put(self.last_backup, sample.last_base_backup_at)
        put(self.newest, sample.newest_restorable_at)
        if sample.last_archived_wal_at is not None:
            put(self.archive_lag, max(0.0, now - sample.last_archived_wal_at))
        put(self.failing, float(sample.archiving_failing))
        put(self.archiving, float(sample.archiving_on))
        put(self.failed, float(sample.backups_failed))
        put(self.width, sample.window_seconds)
        put(self.timeout, sample.archive_timeout_seconds)
        put(self.sampled, sample.sampled_at)

    def __iter__(self) -> Iterator[Metric]:
        return iter(vars(self).values())


class AddonMetrics(Collector):
    """The per-addon series of one registry: gauges from the latest samples, and the restore
    and drill duration histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._samples: dict[AddonLabels, AddonSample] = {}
        self.restore_duration = Histogram(
            RESTORE_DURATION,
            "Restores by how long they took from request to ready or failed",
            [*LABELS, "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.drill_duration = Histogram(
            DRILL_DURATION,
            "Restore drills by how long they took from start to verdict",
            [*LABELS, "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        registry.register(self)

    def replace(self, samples: Iterable[AddonSample]) -> None:
        """The samples of every addon now: addons not among them are gone, and so are their
        series (histograms included)."""
        fresh = {s.labels: s for s in samples}
        for gone in self._samples.keys() - fresh.keys():
            for histogram in (self.restore_duration, self.drill_duration):
                for outcome in OUTCOMES:
                    try:
                        histogram.remove(*gone, outcome)
                    except KeyError:
                        continue
        for labels in fresh.keys() - self._samples.keys():
            # Zero-valued children exist from the start, so the first failure is an increase
            # (``increase()`` sees nothing on a series that appears already at 1).
            for histogram in (self.restore_duration, self.drill_duration):
                for outcome in OUTCOMES:
                    histogram.labels(*labels, outcome)
        self._samples = fresh

    def observe_restore(self, labels: AddonLabels, outcome: Outcome, seconds: float) -> None:
        self.restore_duration.labels(*labels, outcome).observe(max(0.0, seconds))

    def observe_drill(self, labels: AddonLabels, outcome: Outcome, seconds: float) -> None:
        """For restore drills: call once per finished drill, with the addon's labels
        (:func:`labels_of` its Cluster) and how long the drill took."""
        self.drill_duration.labels(*labels, outcome).observe(max(0.0, seconds))

    def observe_drill_record(self, record: DrillRecord) -> None:
        """A finished drill (``DrillMetrics.finished``): its duration from request to
        verdict, under its addon's labels (the tier from the addon's latest sample, else
        from the drill's plan)."""
        if record.finished_at is None:
            return
        sampled = next(
            (
                labels
                for labels in self._samples
                if (labels.tenant, labels.app, labels.addon)
                == (record.tenant, record.app_id, record.addon_id)
            ),
            None,
        )
        labels = sampled or AddonLabels(
            record.tenant, record.app_id, record.addon_id, _tier_of_plan(record.plan)
        )
        outcome: Outcome = "succeeded" if record.status == "passed" else "failed"
        self.observe_drill(
            labels, outcome, (record.finished_at - record.requested_at).total_seconds()
        )

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        now = time.time()
        for sample in self._samples.values():
            families.add(sample, now)
        yield from families

    def describe(self) -> Iterator[Metric]:
        # Described up front so the registry can check for name clashes at registration.
        yield from _Families()
