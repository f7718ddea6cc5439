"""The in-place restore use-case against the in-memory engine, with an engine double that
switches (stores both Clusters, applies a switch id once) and verification reports built
by the tests: verify, switch, resume after a kill, undo, expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from paas_pitr.addons import AddonService
from paas_pitr.audit import AuditLog
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import PointInTime, build_recovery_cluster
from paas_pitr.cnpg.history import archive_periods, incarnation_server_name_of
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.errors import Conflict, UndoNotAvailable
from paas_pitr.names import NameKey
from paas_pitr.restore_views import restore_view
from paas_pitr.settings import Settings
from paas_pitr.switchover.expired import expired_restores
from paas_pitr.switchover.record import (
    ANNOTATION_UNVERIFIED,
    InPlaceRecord,
    Phase,
    is_hibernated,
    record_of,
    with_record,
)
from paas_pitr.switchover.service import InPlaceService, refuse_while_switching
from paas_pitr.tombstones import tombstone_key
from paas_pitr.verification import CheckResult, VerificationReport

ACME = Caller("acme")
TARGET = datetime(2026, 5, 4, 11, 0, tzinfo=UTC)
RESTORE_ID = "0123abcd0123abcd0123abcd0123abcd"


class SwitchingMemoryEngine(InMemoryEngine):
    """Stores the switched Clusters as given; a switch id is applied once."""

    def __init__(self) -> None:
        super().__init__()
        self.switches: list[str] = []

    async def switch_clusters(self, switch_id: str, active: Manifest, kept: Manifest) -> float:
        if switch_id not in self.switches:
            await self.apply(active)
            await self.apply(kept)
            self.switches.append(switch_id)
        return 0.25

    async def admin_conninfo(self, cluster: Manifest) -> str | None:
        return f"host=/run/{cluster['metadata']['name']} user=postgres"


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def log_event(self, **event: Any) -> None:
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e["action"] for e in self.events]


class Verifications:
    def __init__(self, report: VerificationReport) -> None:
        self.report = report
        self.asked: list[tuple[str, datetime | None]] = []

    async def __call__(
        self,
        conninfo: str,
        *,
        target_time: datetime | None,
        max_distance_seconds: float,
        amcheck_budget_seconds: float,
    ) -> VerificationReport:
        self.asked.append((conninfo, target_time))
        return self.report


PASSED = VerificationReport(
    (
        CheckResult("promoted_and_writable", True),
        CheckResult("reached_target", True, {"distance_seconds": 0.4}),
    )
)
MISSED = VerificationReport(
    (
        CheckResult("promoted_and_writable", True),
        CheckResult("reached_target", False, {}, "WAL the target needs was not replayed"),
    )
)


class World:
    def __init__(self, tmp_path: Path, report: VerificationReport = PASSED) -> None:
        self.engine = SwitchingMemoryEngine()
        self.settings = Settings(state_dir=tmp_path, undo_hours=2)
        self.audit = Recorder()
        self.addons = AddonService(
            self.engine, self.settings, cast(AuditLog, self.audit), name_key=NameKey(b"n" * 32)
        )
        self.verify = Verifications(report)
        self.service = InPlaceService(self.addons, self.verify)

    async def addon_and_restore(self) -> tuple[str, str, str]:
        """A pro addon and the in-place restore's recovery Cluster, reported ready; the
        addon id, its folder and the restored folder."""
        view = await self.addons.create_addon_generic(ACME, "app-1", plan="pro", version="16")
        assert view.backups is not None
        old = view.backups.server_name
        new = naming.incarnation_server_name(view.addon_id)
        request = {"timestamp": "2026-05-04T11:00:00Z", "target": "in_place"}
        request["restores_to"] = request["timestamp"]
        restored = build_recovery_cluster(
            source_cluster=view.addon_id,
            tenant="acme",
            app="app-1",
            restore_id=RESTORE_ID,
            target=PointInTime(TARGET),
            source_server_name=old,
            server_name=new,
            annotations={
                naming.ANNOTATION_RESTORE_REQUEST: json.dumps(request),
                ANNOTATION_UNVERIFIED: "true",
            },
        ).cluster
        await self.engine.create(restored)
        self.engine.set_status(
            "Cluster",
            restored["metadata"]["name"],
            {"phase": "Cluster in healthy state", "readyInstances": 1},
        )
        self.engine.archived_at[view.addon_id] = TARGET + timedelta(minutes=5)
        self.audit.events.clear()  # the addon's creation
        return view.addon_id, old, new

    async def cluster(self, name: str) -> Manifest:
        found = await self.engine.get("Cluster", name)
        assert found is not None
        return found


RESTORED = f"db-acme-app-1-r{RESTORE_ID[:8]}"


async def test_a_verified_restore_is_switched_to_and_the_previous_one_kept(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    addon_id, old, new = await world.addon_and_restore()
    await world.service.pass_once()

    assert world.verify.asked == [(f"host=/run/{RESTORED} user=postgres", TARGET)]
    addon = await world.cluster(addon_id)
    assert incarnation_server_name_of(addon) == new
    kept = await world.cluster(RESTORED)
    assert incarnation_server_name_of(kept) == old and is_hibernated(kept)
    assert ANNOTATION_UNVERIFIED not in kept["metadata"]["annotations"]
    record = record_of(kept)
    assert record is not None and record.phase is Phase.SWITCHED
    assert (record.from_server, record.to_server) == (old, new)
    assert record.unavailable_seconds == 0.25
    assert record.switched_at is not None
    assert record.undo_until == record.switched_at + timedelta(hours=2)
    # The previous incarnation is recorded like a deleted one, from the switch on.
    tombstone = await world.engine.bucket.get_json(tombstone_key("acme", "app-1", old))
    assert tombstone is not None and tombstone["addon"] == addon_id
    # The restored incarnation's first base backup is asked for.
    backups = await world.engine.list("Backup")
    assert [b["spec"]["cluster"]["name"] for b in backups] == [addon_id]
    assert world.audit.actions() == ["addon.switchover"]
    assert world.audit.events[0]["details"]["unavailable_seconds"] == 0.25

    view = await restore_view(world.engine, kept)
    assert view.status == "switched"
    assert view.switch is not None and view.switch["kept"]["incarnation"] == old

    # Nothing more happens until the undo time has passed.
    await world.service.pass_once()
    assert world.engine.switches == [record.switch_id]


async def test_a_failed_verification_switches_nothing(tmp_path: Path) -> None:
    world = World(tmp_path, MISSED)
    addon_id, old, new = await world.addon_and_restore()
    await world.service.pass_once()
    assert incarnation_server_name_of(await world.cluster(addon_id)) == old
    kept = await world.cluster(RESTORED)
    record = record_of(kept)
    assert record is not None and record.phase is Phase.FAILED
    assert record.reason == (
        "verification failed (reached_target): WAL the target needs was not replayed"
    )
    # The failed cluster's server is stopped (hibernated), its data kept until deleted.
    assert is_hibernated(kept)
    assert world.engine.switches == []
    assert await world.engine.bucket.get_json(tombstone_key("acme", "app-1", old)) is None
    # The failed restore's folder is recorded like a deleted incarnation's (it expires).
    recorded = await world.engine.bucket.get_json(tombstone_key("acme", "app-1", new))
    assert recorded is not None
    assert (recorded["addon"], recorded["deleted_by"]) == (addon_id, "system:paas-pitr")
    assert world.audit.actions() == ["addon.restore_failed"]
    view = await restore_view(world.engine, kept)
    assert (view.status, view.reason) == ("failed", record.reason)
    assert view.hint == (
        "the recovered data does not end at the recovery target (WAL it needs was missing, "
        "or commits past it were replayed); pick another target in the window, or restore "
        "into a new cluster to inspect it. The addon was not switched and is unchanged; the "
        "restored cluster is hibernated (its data kept until DELETE "
        f"/v1/apps/app-1/addons/{addon_id}/restores/{RESTORE_ID})"
    )
    with pytest.raises(UndoNotAvailable):
        await world.service.undo(ACME, "app-1", addon_id, RESTORE_ID)


async def test_an_intent_written_before_a_kill_is_finished_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon_id, old, new = await world.addon_and_restore()
    restored = await world.cluster(RESTORED)
    intent = InPlaceRecord(
        phase=Phase.SWITCHING, switch_id="feedbeef", from_server=old, to_server=new
    )
    restored.pop("status")
    await world.engine.apply(with_record(restored, intent))
    await world.service.pass_once()
    await world.service.pass_once()
    assert world.engine.switches == ["feedbeef"]
    assert world.verify.asked == []  # an intent is finished, not verified again
    assert incarnation_server_name_of(await world.cluster(addon_id)) == new
    record = record_of(await world.cluster(RESTORED))
    assert record is not None and record.phase is Phase.SWITCHED


async def test_undo_then_expiry(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon_id, old, new = await world.addon_and_restore()
    await world.service.pass_once()
    await world.service.undo(ACME, "app-1", addon_id, RESTORE_ID)

    assert incarnation_server_name_of(await world.cluster(addon_id)) == old
    kept = await world.cluster(RESTORED)
    assert incarnation_server_name_of(kept) == new and is_hibernated(kept)
    record = record_of(kept)
    assert record is not None and record.phase is Phase.UNDONE
    assert record.undone_at is not None and record.undo_until is not None
    bucket = world.engine.bucket
    assert await bucket.get_json(tombstone_key("acme", "app-1", old)) is None
    assert await bucket.get_json(tombstone_key("acme", "app-1", new)) is not None
    assert world.audit.actions() == ["addon.switchover", "addon.undo"]
    assert world.audit.events[1]["actor"] == "tenant:acme"
    with pytest.raises(UndoNotAvailable):
        await world.service.undo(ACME, "app-1", addon_id, RESTORE_ID)

    await world.service.pass_once(now=record.undo_until - timedelta(seconds=1))
    assert await world.engine.get("Cluster", RESTORED) is not None
    await world.service.pass_once(now=record.undo_until)
    assert await world.engine.get("Cluster", RESTORED) is None
    assert world.audit.actions()[-1] == "addon.undo_expired"
    # The restore stays listed (expired), read from the addon's Cluster.
    (expired,) = expired_restores(await world.cluster(addon_id))
    assert (expired.restore_id, expired.status) == (RESTORE_ID, "expired")
    assert expired.switch is not None and expired.switch["kept"]["state"] == "deleted"
    # The archive of the incarnation the deleted cluster held stays recorded.
    assert await bucket.get_json(tombstone_key("acme", "app-1", new)) is not None


async def test_an_expired_undo_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon_id, _, _ = await world.addon_and_restore()
    await world.service.pass_once()
    kept = await world.cluster(RESTORED)
    record = record_of(kept)
    assert record is not None and record.undo_until is not None
    kept.pop("status")
    past = record.evolve(undo_until=datetime.now(UTC) - timedelta(seconds=1))
    await world.engine.apply(with_record(kept, past))
    with pytest.raises(UndoNotAvailable) as raised:
        await world.service.undo(ACME, "app-1", addon_id, RESTORE_ID)
    assert raised.value.details["undo_until"] is not None


async def test_a_restore_being_switched_cannot_be_deleted(tmp_path: Path) -> None:
    world = World(tmp_path)
    _, old, new = await world.addon_and_restore()
    restored = await world.cluster(RESTORED)
    intent = InPlaceRecord(
        phase=Phase.SWITCHING, switch_id="feedbeef", from_server=old, to_server=new
    )
    with pytest.raises(Conflict) as raised:
        refuse_while_switching(with_record(restored, intent))
    assert raised.value.details == {"status": "switching"}
    refuse_while_switching(with_record(restored, intent.evolve(phase=Phase.SWITCHED)))


async def test_only_the_restore_that_made_the_current_switch_can_be_undone(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    addon_id, old, first = await world.addon_and_restore()
    await world.service.pass_once()
    # A second in-place restore, of the incarnation the first one switched the addon to.
    second_id = "4567cdef4567cdef4567cdef4567cdef"
    second = naming.incarnation_server_name(addon_id, "5e5e5e5e")
    request = {"timestamp": "2026-05-04T11:00:00Z", "target": "in_place"}
    request["restores_to"] = request["timestamp"]
    restored = build_recovery_cluster(
        source_cluster=addon_id,
        tenant="acme",
        app="app-1",
        restore_id=second_id,
        target=PointInTime(TARGET),
        source_server_name=first,
        server_name=second,
        annotations={
            naming.ANNOTATION_RESTORE_REQUEST: json.dumps(request),
            ANNOTATION_UNVERIFIED: "true",
        },
    ).cluster
    await world.engine.create(restored)
    second_cluster = restored["metadata"]["name"]
    world.engine.set_status(
        "Cluster", second_cluster, {"phase": "Cluster in healthy state", "readyInstances": 1}
    )
    await world.service.pass_once()
    assert incarnation_server_name_of(await world.cluster(addon_id)) == second

    with pytest.raises(UndoNotAvailable) as raised:
        await world.service.undo(ACME, "app-1", addon_id, RESTORE_ID)
    assert raised.value.details == {
        "status": "switched",
        "current_incarnation": second,
        "to_incarnation": first,
    }
    # Nothing moved: the addon still runs the newest switch, the older restore is untouched.
    assert incarnation_server_name_of(await world.cluster(addon_id)) == second
    older = record_of(await world.cluster(RESTORED))
    assert older is not None and older.phase is Phase.SWITCHED
    # Once the newest one is undone, the addon runs the older restore's incarnation again:
    # that switch is the current one once more, and undoing it is consistent.
    await world.service.undo(ACME, "app-1", addon_id, second_id)
    assert incarnation_server_name_of(await world.cluster(addon_id)) == first
    await world.service.undo(ACME, "app-1", addon_id, RESTORE_ID)
    assert incarnation_server_name_of(await world.cluster(addon_id)) == old


async def test_the_addon_cannot_be_deleted_while_a_restore_switches_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    addon_id, old, new = await world.addon_and_restore()
    restored = await world.cluster(RESTORED)
    restored.pop("status")
    intent = InPlaceRecord(
        phase=Phase.SWITCHING, switch_id="feedbeef", from_server=old, to_server=new
    )
    for moving in (intent, intent.evolve(phase=Phase.UNDOING)):
        await world.engine.apply(with_record(restored, moving))
        with pytest.raises(Conflict) as raised:
            await world.addons.delete(ACME, "app-1", addon_id)
        assert raised.value.details == {"restore_id": RESTORE_ID, "status": moving.phase.value}
        # Nothing was deleted or recorded.
        assert await world.engine.get("Cluster", addon_id) is not None
        assert await world.engine.bucket.get_json(tombstone_key("acme", "app-1", old)) is None
    await world.engine.apply(with_record(restored, intent))
    await world.service.pass_once()
    await world.addons.delete(ACME, "app-1", addon_id)
    assert await world.engine.get("Cluster", addon_id) is None


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("latest", "latest"),
        ("lsn", "0/3000060"),
        ("xid", "742"),
        ("restore_point", "before-migration"),
        ("before_event", "evt_0123"),
    ],
)
async def test_a_target_other_than_an_instant_is_verified_without_a_time_bound(
    tmp_path: Path, kind: str, value: str
) -> None:
    world = World(tmp_path)
    addon_id, _, new = await world.addon_and_restore()
    restored = await world.cluster(RESTORED)
    request = json.loads(restored["metadata"]["annotations"][naming.ANNOTATION_RESTORE_REQUEST])
    # What the request records for such a target: restores_to is the window's end (or the
    # commit's time) when it was asked, not a bound on what replay reaches.
    request["recovery_target"] = {"kind": kind, "value": value}
    restored["metadata"]["annotations"][naming.ANNOTATION_RESTORE_REQUEST] = json.dumps(request)
    restored.pop("status")
    await world.engine.apply(restored)
    world.engine.set_status(
        "Cluster", RESTORED, {"phase": "Cluster in healthy state", "readyInstances": 1}
    )
    await world.service.pass_once()
    assert world.verify.asked == [(f"host=/run/{RESTORED} user=postgres", None)]
    assert incarnation_server_name_of(await world.cluster(addon_id)) == new


def recorded_end(tombstone: dict[str, Any]) -> datetime | None:
    periods = archive_periods(
        {
            "metadata": {
                "annotations": {naming.ANNOTATION_ARCHIVE_HISTORY: tombstone["archive_history"]}
            }
        },
        archiving_now=False,
    )
    return periods[-1].latest


async def test_the_switched_away_incarnation_ends_with_what_its_stopped_server_archived(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    addon_id, old, _ = await world.addon_and_restore()
    before_stop = world.engine.archived_at[addon_id]
    # What the engine reads for the stopped data once the switch has stopped its server:
    # the last segments archived while it stopped (the data is then behind the kept one).
    final = before_stop + timedelta(seconds=12)
    world.engine.archived_at[RESTORED] = final
    await world.service.pass_once()
    key = tombstone_key("acme", "app-1", old)
    tombstone = await world.engine.bucket.get_json(key)
    assert tombstone is not None and recorded_end(tombstone) == final

    # Segments archived after the switch returned (pods removed later) are followed too,
    # for a while after the switch; an earlier figure never moves the end back.
    record = record_of(await world.cluster(RESTORED))
    assert record is not None and record.switched_at is not None
    world.engine.archived_at[RESTORED] = final + timedelta(seconds=3)
    await world.service.pass_once(now=record.switched_at + timedelta(minutes=1))
    tombstone = await world.engine.bucket.get_json(key)
    assert tombstone is not None and recorded_end(tombstone) == final + timedelta(seconds=3)
    world.engine.archived_at[RESTORED] = final
    await world.service.pass_once(now=record.switched_at + timedelta(minutes=2))
    world.engine.archived_at[RESTORED] = final + timedelta(seconds=9)
    await world.service.pass_once(now=record.switched_at + timedelta(minutes=11))
    tombstone = await world.engine.bucket.get_json(key)
    assert tombstone is not None and recorded_end(tombstone) == final + timedelta(seconds=3)
