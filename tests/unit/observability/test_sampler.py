"""Per-addon samples from the in-memory engine's objects, and restores observed once."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from paas_pitr.addons import AddonService
from paas_pitr.audit import AuditLog
from paas_pitr.backups import BackupService
from paas_pitr.cnpg import naming
from paas_pitr.context import Caller
from paas_pitr.drills.records import DrillRecord
from paas_pitr.engines.kubernetes import KubernetesEngine
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.names import NameKey
from paas_pitr.observability.addon_metrics import AddonLabels, AddonMetrics
from paas_pitr.observability.sampler import (
    AddonSampler,
    StoredClusters,
    WatchedClusters,
    cluster_source,
)
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time
from tests.integration.operator_play import backup_obj

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


class Recorder:
    def log_event(self, **event: Any) -> None:
        return None


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.engine = InMemoryEngine()
        settings = Settings(state_dir=tmp_path)
        addons = AddonService(
            self.engine, settings, cast(AuditLog, Recorder()), name_key=NameKey(b"n" * 32)
        )
        self.addons = addons
        self.registry = CollectorRegistry()
        self.metrics = AddonMetrics(self.registry)
        self.sampler = AddonSampler(
            StoredClusters(self.engine),
            self.engine,
            BackupService(addons),
            self.metrics,
            started_at=NOW - timedelta(minutes=30),
        )

    async def addon(self, app: str = "shop") -> str:
        view = await self.addons.create_addon_generic(Caller("acme"), app, plan="pro", version="16")
        name = view.addon_id
        self.engine.objects[("Cluster", name)]["metadata"]["creationTimestamp"] = format_api_time(
            NOW - timedelta(days=3)
        )
        self.engine.set_status(
            "Cluster",
            name,
            {
                "conditions": [
                    {"type": "ContinuousArchiving", "status": "False", "message": "AccessDenied"}
                ]
            },
        )
        uid = self.engine.objects[("Cluster", name)]["metadata"]["uid"]
        for number, hours in enumerate((30, 6)):
            self.engine.put(
                backup_obj(name, uid, f"{name}-b{number}", NOW - timedelta(hours=hours))
            )
        self.engine.put(backup_obj(name, uid, f"{name}-f", NOW - timedelta(hours=1), "failed"))
        self.engine.archived_at[name] = NOW - timedelta(minutes=3)
        return name

    def restore(self, addon: str, name: str, created: datetime, ended: datetime, ok: bool) -> None:
        cluster = copy.deepcopy(self.engine.objects[("Cluster", addon)])
        cluster["metadata"] = {
            "name": name,
            "uid": name,
            "creationTimestamp": format_api_time(created),
            "labels": {
                **cluster["metadata"]["labels"],
                naming.LABEL_ROLE: naming.ROLE_RESTORE,
                naming.LABEL_RESTORE_ID: name,
            },
        }
        ready = {
            "type": "Ready",
            "status": "True" if ok else "False",
            "reason": "ClusterIsReady" if ok else "RecoveryFailed",
            "lastTransitionTime": format_api_time(ended),
        }
        cluster["status"] = {"conditions": [ready]}
        self.engine.put(cluster)


def exposition(world: World) -> str:
    return generate_latest(world.registry).decode()


def value(world: World, name: str, addon: str, **extra: str) -> float | None:
    """The sample ``name`` of ``addon`` (tenant acme, app shop, tier pitr) in a scrape."""
    wanted = {"tenant": "acme", "app": "shop", "addon": addon, "tier": "pitr", **extra}
    for family in text_string_to_metric_families(exposition(world)):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    return None


async def test_a_sample_states_the_addon_facts(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon = await world.addon()
    (sample,) = await world.sampler.sample(NOW)
    assert sample.labels == AddonLabels("acme", "shop", addon, "pitr")
    assert sample.created_at == (NOW - timedelta(days=3)).timestamp()
    assert sample.last_base_backup_at == (NOW - timedelta(hours=6)).timestamp()
    assert sample.newest_restorable_at == (NOW - timedelta(minutes=3)).timestamp()
    assert sample.last_archived_wal_at == (NOW - timedelta(minutes=3)).timestamp()
    assert sample.archiving_failing is True
    assert sample.backups_failed == 1
    # From the end of the oldest backup to the newest WAL; the end is a whole second, so it
    # stands for any instant of that second: consistent two seconds later.
    assert (
        sample.window_seconds
        == (timedelta(hours=30) - timedelta(minutes=3, seconds=2)).total_seconds()
    )
    assert value(world, "paas_pitr_wal_archiving_failing", addon) == 1.0
    assert value(world, "paas_pitr_backups_failed", addon) == 1.0
    assert value(world, "paas_pitr_archive_timeout_seconds", addon) == 60.0
    count = "paas_pitr_restore_duration_seconds_count"
    assert value(world, count, addon, outcome="failed") == 0.0


async def test_a_deleted_addon_loses_its_series(tmp_path: Path) -> None:
    world = World(tmp_path)
    kept, gone = await world.addon("shop"), await world.addon("blog")
    await world.sampler.sample(NOW)
    assert f'addon="{gone}"' in exposition(world)
    await world.engine.delete("Cluster", gone)
    await world.sampler.sample(NOW)
    assert f'addon="{gone}"' not in exposition(world)
    assert f'addon="{kept}"' in exposition(world)


async def test_each_restore_is_observed_once_from_request_to_outcome(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon = await world.addon()
    world.restore(addon, "r-ok", NOW - timedelta(minutes=20), NOW - timedelta(minutes=16), True)
    world.restore(addon, "r-bad", NOW - timedelta(minutes=10), NOW - timedelta(minutes=9), False)
    # Ended before this process started: an earlier process observed it.
    world.restore(addon, "r-old", NOW - timedelta(hours=2), NOW - timedelta(hours=1), False)
    await world.sampler.sample(NOW)
    await world.sampler.sample(NOW)
    restore = "paas_pitr_restore_duration_seconds"
    assert value(world, f"{restore}_count", addon, outcome="succeeded") == 1.0
    assert value(world, f"{restore}_sum", addon, outcome="succeeded") == 240.0
    assert value(world, f"{restore}_count", addon, outcome="failed") == 1.0
    assert value(world, f"{restore}_sum", addon, outcome="failed") == 60.0


async def test_drills_report_through_the_hook(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon = await world.addon()
    await world.sampler.sample(NOW)
    world.metrics.observe_drill(AddonLabels("acme", "shop", addon, "pitr"), "succeeded", 95.0)
    bucket = "paas_pitr_drill_duration_seconds_bucket"
    assert value(world, bucket, addon, le="60.0", outcome="succeeded") == 0.0
    assert value(world, bucket, addon, le="120.0", outcome="succeeded") == 1.0
    assert value(world, bucket, addon, le="120.0", outcome="failed") == 0.0


async def test_watched_clusters_follow_the_watch_events() -> None:
    watched = WatchedClusters()
    first = {"metadata": {"name": "db-acme-shop", "resourceVersion": "1"}}
    second = {"metadata": {"name": "db-acme-shop", "resourceVersion": "2"}}
    other = {"metadata": {"name": "db-acme-blog", "resourceVersion": "3"}}
    await watched("SYNC", first)
    await watched("ADDED", other)
    await watched("MODIFIED", second)
    assert await watched.clusters() == [second, other]
    await watched("DELETED", second)
    assert await watched.clusters() == [other]


def test_the_kubernetes_engine_feeds_the_watched_clusters(tmp_path: Path) -> None:
    engine = KubernetesEngine(Settings(state_dir=tmp_path, engine="kubernetes"))
    source = cluster_source(engine)
    assert isinstance(source, WatchedClusters)
    assert engine.listeners == [source]
    memory = InMemoryEngine()
    assert isinstance(cluster_source(memory), StoredClusters)
    assert memory.listeners == []


async def test_a_finished_drill_is_observed_under_its_addon(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon = await world.addon()
    await world.sampler.sample(NOW)
    record = DrillRecord(
        drill_id="d1",
        tenant="acme",
        app_id="shop",
        addon_id=addon,
        plan="pro",
        status="failed",
        trigger="schedule",
        requested_by="scheduler",
        requested_at=NOW - timedelta(minutes=3),
        finished_at=NOW,
    )
    world.metrics.observe_drill_record(record)
    world.metrics.observe_drill_record(record.model_copy(update={"finished_at": None}))
    drill = "paas_pitr_drill_duration_seconds"
    assert value(world, f"{drill}_count", addon, outcome="failed") == 1.0
    assert value(world, f"{drill}_sum", addon, outcome="failed") == 180.0
    assert value(world, f"{drill}_count", addon, outcome="succeeded") == 0.0
