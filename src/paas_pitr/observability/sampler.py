"""Reads every addon's objects at an interval and turns them into :class:`AddonSample`\\ s.

Where the Clusters come from depends on the engine: the Kubernetes engine already watches
them, so :class:`WatchedClusters` keeps what its watch delivered and a sample costs no
request for them (per interval, whatever the scrape rate: one list of Backups, and per
addon its ObjectStore in plugin mode and one read of its archive's newest WAL); the local
and in-memory engines hold their objects in process, so :class:`StoredClusters` lists them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from paas_pitr.backups import BackupService
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.projections import RestoreState, condition, restore_state, uses_plugin
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import PitrError
from paas_pitr.observability.addon_metrics import (
    AddonMetrics,
    AddonSample,
    Outcome,
    labels_of,
    sample_addon,
)
from paas_pitr.timestamps import parse_k8s_time

log = logging.getLogger(__name__)

MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGER}


class ClusterSource(Protocol):
    async def clusters(self) -> list[Manifest]:
        """Every Cluster this control plane manages (addons and recovery clusters)."""


class StoredClusters:
    """The engine's own store (local and in-memory engines: no request leaves the process)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def clusters(self) -> list[Manifest]:
        return await self.engine.list("Cluster", MANAGED)


class WatchedClusters:
    """The Clusters the Kubernetes engine's watch delivered, kept by name: a listener
    (``engine.listeners``) fed with every SYNC/ADDED/MODIFIED/DELETED event."""

    def __init__(self) -> None:
        self._clusters: dict[str, Manifest] = {}

    async def __call__(self, event_type: str, cluster: Manifest) -> None:
        name = str(cluster.get("metadata", {}).get("name", ""))
        if event_type == "DELETED":
            self._clusters.pop(name, None)
        else:
            self._clusters[name] = cluster

    async def clusters(self) -> list[Manifest]:
        return list(self._clusters.values())


def cluster_source(engine: Engine) -> ClusterSource:
    """The source for ``engine``; a :class:`WatchedClusters` is registered as its listener."""
    if engine.name == "kubernetes":
        watched = WatchedClusters()
        engine.listeners.append(watched)
        return watched
    return StoredClusters(engine)


def _role(cluster: Manifest) -> str | None:
    labels = cluster.get("metadata", {}).get("labels") or {}
    role = labels.get(naming.LABEL_ROLE)
    return str(role) if role is not None else None


def _key(cluster: Manifest) -> str:
    metadata = cluster.get("metadata", {})
    return str(metadata.get("uid") or metadata.get("name"))


class AddonSampler:
    """Refreshes :class:`AddonMetrics` from the objects, and observes each restore's
    duration once, when it is first seen ready or failed."""

    def __init__(
        self,
        source: ClusterSource,
        engine: Engine,
        backups: BackupService,
        metrics: AddonMetrics,
        *,
        started_at: datetime | None = None,
    ) -> None:
        self.source = source
        self.engine = engine
        self.backups = backups
        self.metrics = metrics
        # Restores that ended before this process started were observed by an earlier one.
        self.started_at = started_at or datetime.now(UTC)
        self._finished: set[str] = set()

    async def sample(self, now: datetime | None = None) -> list[AddonSample]:
        """One pass: raises ``PitrError`` when the engine cannot list (nothing is replaced)."""
        now = now or datetime.now(UTC)
        clusters = await self.source.clusters()
        addons = [c for c in clusters if _role(c) == naming.ROLE_ADDON]
        raw_backups = await self.engine.list("Backup") if addons else []
        samples = []
        for cluster in addons:
            name = str(cluster["metadata"]["name"])
            store = (
                await self.engine.get("ObjectStore", naming.object_store_name(name))
                if uses_plugin(cluster)
                else None
            )
            last_archived = await self.engine.last_archived_at(cluster)
            state = self.backups.compose(cluster, raw_backups, store, last_archived, now=now)
            samples.append(sample_addon(state, now=now))
        self.metrics.replace(samples)
        self._observe_restores([c for c in clusters if _role(c) == naming.ROLE_RESTORE], now)
        return samples

    def _observe_restores(self, clusters: Iterable[Manifest], now: datetime) -> None:
        clusters = list(clusters)
        present = {_key(c) for c in clusters}
        # Forget deleted recovery clusters: the set stays as small as the clusters kept.
        self._finished &= present
        for cluster in clusters:
            state, _ = restore_state(cluster)
            if state not in (RestoreState.READY, RestoreState.FAILED):
                continue
            metadata = cluster.get("metadata", {})
            key = _key(cluster)
            if key in self._finished:
                continue
            self._finished.add(key)
            ready = condition(cluster, "Ready")
            ended = parse_k8s_time((ready or {}).get("lastTransitionTime")) or now
            created = parse_k8s_time(metadata.get("creationTimestamp"))
            if created is None or ended < self.started_at:
                continue
            outcome: Outcome = "succeeded" if state is RestoreState.READY else "failed"
            self.metrics.observe_restore(
                labels_of(cluster), outcome, (ended - created).total_seconds()
            )

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.sample()
            except PitrError as exc:
                # The previous samples stay: a scrape shows the last known facts, and
                # paas_pitr_addon_sample_timestamp_seconds shows how old they are.
                log.warning("cannot sample addon metrics: %s", exc.message)
            except Exception:
                log.exception("sampling addon metrics failed")
            await asyncio.sleep(interval_seconds)
