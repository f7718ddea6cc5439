"""The backups listing served from kept projections: never stale after a change, kept while
nothing changes, and time-dependent windows recomputed as time passes."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from paas_pitr.addons import AddonService
from paas_pitr.audit import AuditLog
from paas_pitr.backups import BackupService
from paas_pitr.cnpg.window import WindowState
from paas_pitr.context import Caller
from paas_pitr.engines.base import Kind, Manifest
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.names import NameKey
from paas_pitr.settings import Settings
from tests.integration.operator_play import backup_obj

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


class Recorder:
    def log_event(self, **event: Any) -> None:
        return None


class CountingEngine(InMemoryEngine):
    """Counts Backup lists (the cost the cache saves)."""

    def __init__(self) -> None:
        super().__init__()
        self.backup_lists = 0

    async def list(self, kind: Kind, labels: Any = None) -> list[Manifest]:
        if kind == "Backup":
            self.backup_lists += 1
        return await super().list(kind, labels)


class ListingEngine(CountingEngine):
    """An engine without revisions (as the Kubernetes one): every status write bumps the
    object's resourceVersion, as the API server does."""

    def __init__(self) -> None:
        super().__init__()
        self._status_versions = itertools.count(10_000)

    def revision(self, kind: Kind) -> str | None:
        return None

    def set_status(self, kind: Kind, name: str, status: dict[str, Any]) -> None:
        super().set_status(kind, name, status)
        self.objects[(kind, name)]["metadata"]["resourceVersion"] = str(next(self._status_versions))

    def put(self, obj: Manifest) -> None:
        stored = copy.deepcopy(dict(obj))
        stored["metadata"].setdefault("resourceVersion", str(next(self._status_versions)))
        super().put(stored)


class World:
    def __init__(self, tmp_path: Path, engine: CountingEngine) -> None:
        self.engine = engine
        self.addons = AddonService(
            engine,
            Settings(state_dir=tmp_path),
            cast(AuditLog, Recorder()),
            name_key=NameKey(b"n" * 32),
        )
        self.backups = BackupService(self.addons)

    async def addon(self, plan: str = "pro") -> tuple[str, str]:
        view = await self.addons.create_addon_generic(
            Caller("acme"), "shop", plan=plan, version="16"
        )
        name = view.addon_id
        self.engine.set_status(
            "Cluster", name, {"conditions": [{"type": "ContinuousArchiving", "status": "True"}]}
        )
        self.engine.archived_at[name] = NOW - timedelta(minutes=3)
        return name, str(self.engine.objects[("Cluster", name)]["metadata"]["uid"])

    async def listing(self, name: str, now: datetime = NOW) -> tuple[list[tuple[str, str]], Any]:
        cluster = await self.engine.get("Cluster", name)
        assert cluster is not None
        state = await self.backups.archive_state(cluster, now=now)
        return [(b.name, b.status.value) for b in state.backups], state.window


async def test_a_change_to_a_backup_shows_at_once_and_nothing_changed_lists_nothing(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=30)))
    world.engine.put(backup_obj(name, uid, f"{name}-b2", NOW - timedelta(hours=6), "running"))
    assert (await world.listing(name))[0] == [
        (f"{name}-b2", "running"),
        (f"{name}-b1", "completed"),
    ]
    lists = world.engine.backup_lists
    assert (await world.listing(name))[0] == [
        (f"{name}-b2", "running"),
        (f"{name}-b1", "completed"),
    ]
    assert world.engine.backup_lists == lists  # kept: nothing changed

    finished = backup_obj(name, uid, f"{name}-b2", NOW - timedelta(hours=6))
    world.engine.set_status("Backup", f"{name}-b2", finished["status"])
    backups, _ = await world.listing(name)
    assert backups == [(f"{name}-b2", "completed"), (f"{name}-b1", "completed")]
    assert world.engine.backup_lists == lists + 1

    world.engine.put(backup_obj(name, uid, f"{name}-b3", NOW - timedelta(hours=1)))
    assert [b for b, _ in (await world.listing(name))[0]] == [
        f"{name}-b3",
        f"{name}-b2",
        f"{name}-b1",
    ]
    await world.engine.delete("Backup", f"{name}-b1")
    assert [b for b, _ in (await world.listing(name))[0]] == [f"{name}-b3", f"{name}-b2"]


async def test_the_window_follows_the_archive_and_the_cluster(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    first_end = NOW - timedelta(hours=30)
    world.engine.put(backup_obj(name, uid, f"{name}-b1", first_end))
    _, window = await world.listing(name)
    assert window.state is WindowState.OPEN
    assert window.latest == NOW - timedelta(minutes=3)

    world.engine.archived_at[name] = NOW - timedelta(minutes=1)
    _, window = await world.listing(name)
    assert window.latest == NOW - timedelta(minutes=1)

    # The operator writes the first recoverability point (a Cluster status change only).
    status = copy.deepcopy(world.engine.objects[("Cluster", name)]["status"])
    world.engine.set_status(
        "Cluster", name, {**status, "firstRecoverabilityPoint": "2026-05-01T00:00:00Z"}
    )
    _, window = await world.listing(name)
    assert window.earliest == datetime(2026, 5, 1, 0, 0, 2, tzinfo=UTC)


async def test_a_window_that_depends_on_the_time_is_computed_at_each_time(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon(plan="standard")
    # Ended at NOW: a restore point once surely consistent, two seconds later.
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW))
    _, window = await world.listing(name, now=NOW)
    assert (window.state, window.opens_at) == (WindowState.OPENING, NOW + timedelta(seconds=2))
    _, window = await world.listing(name, now=NOW + timedelta(seconds=3))
    assert window.state is WindowState.OPEN
    assert [p.name for p in window.restore_points] == [f"{name}-b1"]
    # Kept from then on, never served for an earlier time.
    _, window = await world.listing(name, now=NOW + timedelta(seconds=1))
    assert window.state is WindowState.OPENING


async def test_a_pro_window_estimated_from_the_time_follows_the_time(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    del world.engine.archived_at[name]  # no archive reading: now - archive_timeout
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=30)))
    _, window = await world.listing(name, now=NOW)
    later = NOW + timedelta(minutes=10)
    _, window_later = await world.listing(name, now=later)
    assert window.latest_source == "estimate"
    assert window_later.latest is not None and window.latest is not None
    assert window_later.latest - window.latest == timedelta(minutes=10)


async def test_without_revisions_a_listing_is_kept_per_resource_version(tmp_path: Path) -> None:
    world = World(tmp_path, ListingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=6), "running"))
    assert (await world.listing(name))[0] == [(f"{name}-b1", "running")]
    finished = backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=6))
    world.engine.set_status("Backup", f"{name}-b1", finished["status"])
    backups, window = await world.listing(name)
    assert backups == [(f"{name}-b1", "completed")]
    assert window.state is WindowState.OPEN


async def test_a_new_incarnation_never_sees_the_old_ones_backups(tmp_path: Path) -> None:
    world = World(tmp_path, CountingEngine())
    name, uid = await world.addon()
    world.engine.put(backup_obj(name, uid, f"{name}-b1", NOW - timedelta(hours=6)))
    assert len((await world.listing(name))[0]) == 1
    # Same name, another uid (deleted and re-created): its Backups are not those of uid.
    cluster = world.engine.objects[("Cluster", name)]
    cluster["metadata"]["uid"] = "another-uid"
    world.engine.set_status("Cluster", name, cluster.get("status", {}))
    assert (await world.listing(name))[0] == []
