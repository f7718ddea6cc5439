"""Deleted incarnations: the tombstone written before the Cluster goes, the incarnations and
their ranges read from the bucket, restore targets inside one, and the retention sweeper."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from paas_pitr.addons import AddonService
from paas_pitr.archives import ArchiveService
from paas_pitr.audit import AuditLog
from paas_pitr.cnpg.builders import BackupEnd, PointInTime
from paas_pitr.cnpg.history import ArchivePeriod, history_annotation
from paas_pitr.context import Caller
from paas_pitr.engines.base import Kind
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.errors import (
    ArchiveBucketNotConfigured,
    NoBackupForTarget,
    NotFound,
    ObjectStoreError,
    OutsideRecoverabilityWindow,
)
from paas_pitr.incarnations import resolve_target
from paas_pitr.names import NameKey
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time
from paas_pitr.tombstones import TOMBSTONE_ROOT, Tombstone, record_deletion, tombstone_key

DESTINATION = "s3://paas-pg-backups/acme/app-1"
ACME = Caller("acme")
T0 = datetime(2026, 4, 1, 3, 0, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def log_event(self, **event: Any) -> None:
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e["action"] for e in self.events]


class World:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.engine = InMemoryEngine()
        self.bucket = self.engine.bucket
        self.settings = Settings(state_dir=tmp_path, **settings)
        self.audit = Recorder()
        self.addons = AddonService(
            self.engine, self.settings, cast(AuditLog, self.audit), name_key=NameKey(b"n" * 32)
        )
        self.archives = ArchiveService(self.addons, cast(AuditLog, self.audit))

    async def addon(self, plan: str = "pro", caller: Caller = ACME, app: str = "app-1") -> str:
        view = await self.addons.create_addon_generic(caller, app, plan=plan, version="16")
        assert view.backups is not None or plan == "free"
        return view.backups.server_name if view.backups else view.addon_id

    def archive(self, server: str, *, destination: str = DESTINATION, days: int = 2) -> None:
        """A backup a day from T0, and WAL up to an hour after the last one."""
        for day in range(days):
            begin = T0 + timedelta(days=day)
            self.bucket.add_backup(destination, server, begin, begin + timedelta(minutes=2))
        self.bucket.add_wal(
            destination, server, "000000010000000000000009", T0 + timedelta(days=days - 1, hours=1)
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_delete_records_the_incarnation_before_the_cluster_goes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await world.addon("pro")
    world.archive(server)
    recorded_when_deleted: list[bool] = []
    delete = world.engine.delete

    async def watching_delete(kind: Kind, name: str) -> bool:
        recorded_when_deleted.append(bool(world.bucket.keys(TOMBSTONE_ROOT)))
        return await delete(kind, name)

    monkeypatch.setattr(world.engine, "delete", watching_delete)
    before = datetime.now(UTC)
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    assert recorded_when_deleted == [True, True, True]

    raw = await world.bucket.get_json(tombstone_key("acme", "app-1", server))
    tombstone = Tombstone.load(raw, tombstone_key("acme", "app-1", server))
    assert tombstone is not None
    assert tombstone.deleted_at >= before
    assert tombstone.retained_until == tombstone.deleted_at + timedelta(days=35)
    assert (tombstone.tier, tombstone.retention, tombstone.plan) == ("pitr", "35d", "pro")
    assert (tombstone.tenant, tombstone.app, tombstone.addon) == ("acme", "app-1", "db-acme-app-1")
    assert tombstone.destination == DESTINATION
    assert tombstone.version == "16"
    assert tombstone.deleted_by == "tenant:acme"
    assert await world.engine.get("Cluster", "db-acme-app-1") is None
    # Nothing of the archive was touched, and the delete is audited with the promise.
    assert len(world.bucket.keys(f"acme/app-1/{server}/")) == 5
    (event,) = [e for e in world.audit.events if e["action"] == "addon.delete"]
    assert event["details"]["retained_until"] == format_api_time(tombstone.retained_until)
    assert event["details"]["server_name"] == server


async def test_standard_keeps_seven_days(world: World) -> None:
    server = await world.addon("standard")
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    key = tombstone_key("acme", "app-1", server)
    tombstone = Tombstone.load(await world.bucket.get_json(key), key)
    assert tombstone is not None
    assert tombstone.retained_until - tombstone.deleted_at == timedelta(days=7)


async def test_a_free_addon_that_never_archived_needs_no_record(world: World) -> None:
    await world.addon("free")
    world.bucket.down = True  # not even asked
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    assert await world.engine.get("Cluster", "db-acme-app-1") is None


async def test_an_addon_moved_to_free_keeps_its_archive_for_the_longest_retention(
    world: World,
) -> None:
    server = await world.addon("pro")
    await world.addons.change_plan(ACME, "app-1", "db-acme-app-1", "free")
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    key = tombstone_key("acme", "app-1", server)
    tombstone = Tombstone.load(await world.bucket.get_json(key), key)
    assert tombstone is not None and tombstone.plan == "free"
    assert tombstone.retained_until - tombstone.deleted_at == timedelta(days=35)


async def test_no_record_no_delete(world: World) -> None:
    await world.addon("pro")
    world.bucket.down = True
    with pytest.raises(ObjectStoreError) as raised:
        await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    assert raised.value.http_status == 503
    assert await world.engine.get("Cluster", "db-acme-app-1") is not None
    assert [c for c in world.engine.calls if c[0] == "delete"] == []
    assert "addon.delete" not in world.audit.actions()


async def test_without_bucket_credentials_the_delete_says_what_to_set(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.addon("pro")
    monkeypatch.setattr(world.engine, "archive_bucket", lambda: None)
    with pytest.raises(ArchiveBucketNotConfigured) as raised:
        await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    assert raised.value.code == "archive_bucket_not_configured"
    assert raised.value.http_status == 503
    assert raised.value.details["missing_settings"] == [
        "PAAS_PITR_S3_ACCESS_KEY_ID",
        "PAAS_PITR_S3_SECRET_ACCESS_KEY",
    ]
    assert await world.engine.get("Cluster", "db-acme-app-1") is not None


# --- incarnations --------------------------------------------------------------------------


async def test_incarnations_of_a_recreated_addon(world: World) -> None:
    old = await world.addon("pro")
    world.archive(old)
    # What the engine knew to be restorable when the addon was deleted (the newest WAL
    # object is later: it was stored after its last commit).
    last_restorable = T0 + timedelta(days=1, minutes=59)
    world.engine.archived_at["db-acme-app-1"] = last_restorable
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    new = await world.addon("standard")
    assert new != old
    world.bucket.add_backup(
        DESTINATION, new, T0 + timedelta(days=9), T0 + timedelta(days=9, seconds=30)
    )
    # Neighbours that are not incarnations of this addon id.
    world.archive("db-acme-app-1-r0123abcd-00000000")
    world.archive("db-acme-app-10-00000000")

    views = await world.archives.incarnations(ACME, "app-1", "db-acme-app-1")
    assert [(v.server_name, v.current) for v in views] == [(new, True), (old, False)]
    current, deleted = views
    assert current.deleted_at is None and current.retained_until is None
    assert (current.tier, current.point_in_time) == ("daily", False)
    # A whole-second end (truncated) serves targets from two seconds after it.
    assert current.earliest == current.latest == T0 + timedelta(days=9, seconds=32)
    assert deleted.tier == "pitr" and deleted.retention == "35d"
    assert deleted.deleted_at is not None and deleted.retained_until is not None
    assert deleted.retained_until - deleted.deleted_at == timedelta(days=35)
    assert [b.backup_id for b in deleted.base_backups] == ["20260402T030000", "20260401T030000"]
    # Whole-second backup end: two seconds later (truncation, then the end-of-backup
    # record); latest is what was restorable when the addon was deleted, not the newest
    # WAL object's time.
    assert deleted.earliest == T0 + timedelta(minutes=2, seconds=2)
    assert deleted.newest_wal_at == T0 + timedelta(days=1, hours=1)
    assert deleted.latest == last_restorable
    assert [(r.earliest, r.latest) for r in deleted.ranges] == [(deleted.earliest, deleted.latest)]


async def test_incarnations_after_the_addon_is_gone(world: World) -> None:
    old = await world.addon("pro")
    world.archive(old)
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    (view,) = await world.archives.incarnations(ACME, "app-1", "db-acme-app-1")
    assert view.server_name == old and not view.current
    # Another tenant sees nothing: tenancy is by prefix, and nothing is exactly like missing.
    with pytest.raises(NotFound) as raised:
        await world.archives.incarnations(Caller("globex"), "app-1", "db-acme-app-1")
    assert raised.value.message == "addon 'db-acme-app-1' not found in app 'app-1'"
    with pytest.raises(NotFound):
        await world.archives.incarnations(ACME, "app-1", "db-acme-app-2")


async def test_a_gap_in_the_archive_cuts_the_range(world: World) -> None:
    server = "db-acme-app-1-0a1b2c3d"
    off, on = T0 + timedelta(days=1), T0 + timedelta(days=3)
    deleted_at = T0 + timedelta(days=5)
    periods = [
        ArchivePeriod(on=None, off=off, latest=off - timedelta(minutes=5)),
        ArchivePeriod(on=on, off=deleted_at, latest=T0 + timedelta(days=4)),
    ]
    tombstone = Tombstone(
        tenant="acme",
        app="app-1",
        addon="db-acme-app-1",
        server_name=server,
        destination=DESTINATION,
        plan="pro",
        tier="pitr",
        retention="35d",
        retention_days=35,
        deleted_at=deleted_at,
        retained_until=deleted_at + timedelta(days=35),
        archive_history=history_annotation(periods),
    )
    await world.bucket.put_json(tombstone_key("acme", "app-1", server), tombstone.as_json())
    world.bucket.add_backup(DESTINATION, server, T0, T0 + timedelta(minutes=2, microseconds=5))
    # Taken while archiving was off: never restorable.
    world.bucket.add_backup(DESTINATION, server, off + timedelta(hours=1), off + timedelta(hours=2))
    world.bucket.add_backup(DESTINATION, server, on + timedelta(hours=1), on + timedelta(hours=2))
    world.bucket.add_wal(DESTINATION, server, "000000010000000000000009", T0 + timedelta(days=4))

    _, incarnation = await world.archives.incarnation(ACME, "app-1", "db-acme-app-1", server)
    assert [(s.earliest, s.latest) for s in incarnation.spans] == [
        (T0 + timedelta(minutes=2, seconds=1, microseconds=5), off - timedelta(minutes=5)),
        (on + timedelta(hours=2, seconds=2), T0 + timedelta(days=4)),
    ]
    in_gap = T0 + timedelta(days=2)
    with pytest.raises(OutsideRecoverabilityWindow) as raised:
        resolve_target(incarnation, in_gap)
    assert "gap" in raised.value.message
    assert raised.value.details["incarnation"] == server
    assert raised.value.details["window"]["ranges"][1]["latest"] == "2026-04-05T03:00:00Z"
    target, base = resolve_target(incarnation, T0 + timedelta(days=3, hours=5))
    assert target == PointInTime(T0 + timedelta(days=3, hours=5))
    assert base is not None and base.begin_time == on + timedelta(hours=1)


async def test_standard_incarnations_restore_backup_ends(world: World) -> None:
    server = await world.addon("standard")
    world.archive(server)
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    _, incarnation = await world.archives.incarnation(ACME, "app-1", "db-acme-app-1", server)
    target, base = resolve_target(incarnation, T0 + timedelta(days=1, hours=5))
    assert target == BackupEnd("20260402T030000", T0 + timedelta(days=1, minutes=2, seconds=2))
    assert base is not None and base.backup_id == "20260402T030000"
    with pytest.raises(NoBackupForTarget):
        resolve_target(incarnation, T0)


async def test_an_incarnation_must_belong_to_the_addon(world: World) -> None:
    server = await world.addon("pro")
    world.archive(server)
    world.archive("db-acme-app-2-00000000")
    for other in ("db-acme-app-2-00000000", "db-acme-app-1-r0123abcd-00000000", "nope"):
        with pytest.raises(NotFound):
            await world.archives.incarnation(ACME, "app-1", "db-acme-app-1", other)


# --- the sweeper -------------------------------------------------------------------------


async def _deleted(world: World, plan: str = "pro") -> tuple[str, Tombstone]:
    server = await world.addon(plan)
    world.archive(server)
    await world.addons.delete(ACME, "app-1", "db-acme-app-1")
    key = tombstone_key("acme", "app-1", server)
    tombstone = Tombstone.load(await world.bucket.get_json(key), key)
    assert tombstone is not None
    return server, tombstone


async def test_the_sweeper_keeps_everything_until_retention_has_passed(world: World) -> None:
    _, tombstone = await _deleted(world)
    kept = world.bucket.keys()
    assert await world.archives.sweep(now=tombstone.retained_until) == []
    assert await world.archives.sweep(now=tombstone.retained_until - timedelta(seconds=1)) == []
    assert world.bucket.keys() == kept
    assert "addon.archive_expired" not in world.audit.actions()


async def test_the_sweeper_expires_the_deleted_incarnation_only(world: World) -> None:
    old, tombstone = await _deleted(world)
    current = await world.addon("pro")
    world.archive(current)
    other_tenant = "db-globex-app-1-00000000"
    world.archive(other_tenant, destination="s3://paas-pg-backups/globex/app-1")
    current_keys = world.bucket.keys(f"acme/app-1/{current}/")
    later = tombstone.retained_until + timedelta(seconds=1)

    (expired,) = await world.archives.sweep(now=later)
    assert expired.server_name == old
    assert world.bucket.keys(f"acme/app-1/{old}/") == []
    assert world.bucket.keys(TOMBSTONE_ROOT) == []
    assert world.bucket.keys(f"acme/app-1/{current}/") == current_keys
    assert world.bucket.keys("globex/")
    (event,) = [e for e in world.audit.events if e["action"] == "addon.archive_expired"]
    assert event["actor"] == "system:paas-pitr"
    assert event["target_id"] == "db-acme-app-1"
    assert event["details"]["server_name"] == old
    assert event["details"]["objects_deleted"] == 5
    assert event["details"]["retained_until"] == format_api_time(tombstone.retained_until)
    # Replicas sweeping the same record write one row: the event id is the incarnation's.
    assert event["event_id"] == uuid.uuid5(
        uuid.UUID("6f1d3c52-8a0e-4b7e-9a55-2c4e7d1b9f30"), f"archive_expired:acme/app-1/{old}"
    )
    # Nothing left to do on the next round; the addon's incarnations are the current one.
    assert await world.archives.sweep(now=later) == []
    views = await world.archives.incarnations(ACME, "app-1", "db-acme-app-1")
    assert [v.server_name for v in views] == [current]


async def test_the_sweeper_never_deletes_on_doubt(world: World) -> None:
    server, tombstone = await _deleted(world)
    later = tombstone.retained_until + timedelta(days=1)
    key = tombstone_key("acme", "app-1", server)
    archive = world.bucket.keys(f"acme/app-1/{server}/")

    world.engine.down = True  # cannot tell whether the incarnation is live
    assert await world.archives.sweep(now=later) == []
    world.engine.down = False

    garbled = tombstone.as_json() | {"deleted_at": "2026-01-01T00:00:00"}  # no offset
    await world.bucket.put_json(key, garbled)
    assert await world.archives.sweep(now=later) == []

    # A record that names another tenant's folder under this key.
    await world.bucket.put_json(key, tombstone.as_json() | {"tenant": "globex"})
    assert await world.archives.sweep(now=later) == []

    # A destination outside the bucket (the setting changed since).
    await world.bucket.put_json(
        key, tombstone.as_json() | {"destination": "s3://elsewhere/acme/app-1"}
    )
    assert await world.archives.sweep(now=later) == []
    assert world.bucket.keys(f"acme/app-1/{server}/") == archive


async def test_a_record_naming_a_live_incarnation_is_dropped_not_its_archive(
    world: World,
) -> None:
    server = await world.addon("pro")
    world.archive(server)
    cluster = await world.engine.get("Cluster", "db-acme-app-1")
    assert cluster is not None
    # As if the delete failed after writing the record.
    tombstone = await record_deletion(
        world.engine, world.settings, cluster, version="16", actor="tenant:acme"
    )
    assert tombstone is not None
    (view,) = await world.archives.incarnations(ACME, "app-1", "db-acme-app-1")
    assert view.current and view.deleted_at is None
    archive = world.bucket.keys(f"acme/app-1/{server}/")
    assert await world.archives.sweep(now=tombstone.retained_until + timedelta(days=1)) == []
    assert world.bucket.keys(f"acme/app-1/{server}/") == archive
    assert world.bucket.keys(TOMBSTONE_ROOT) == []


async def test_the_sweeper_without_a_bucket_does_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.engine, "archive_bucket", lambda: None)
    assert await world.archives.sweep() == []
    await world.archives.sweep_forever(0.01)  # returns at once, with a warning


async def test_the_sweeper_survives_an_unreachable_bucket(world: World) -> None:
    _, tombstone = await _deleted(world)
    world.bucket.down = True
    with pytest.raises(ObjectStoreError):
        await world.archives.sweep(now=tombstone.retained_until + timedelta(days=1))
    world.bucket.down = False
    assert len(await world.archives.sweep(now=tombstone.retained_until + timedelta(days=1))) == 1
