"""Restorable ranges and restore points from CNPG objects and the archive history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import RenderConfig, build_addon_manifests
from paas_pitr.cnpg.history import (
    ArchivePeriod,
    archive_periods,
    history_annotation,
    incarnation_server_name_of,
    reset_if_unreadable,
    switch_archiving,
)
from paas_pitr.cnpg.projections import project_backups
from paas_pitr.cnpg.window import WindowState, recoverability_window
from tests.unit.cnpg.test_projections import COMPLETED_IN_TREE, T0, archiving, backup, cluster

MS = timedelta(milliseconds=250)
# A backup with a sub-second end serves targets from one second after it: barman reads its
# end time a moment before the end-of-backup record.
CONSISTENT = MS + timedelta(seconds=1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def done(name: str, start: datetime, end: datetime) -> dict[str, Any]:
    return backup(
        name,
        {
            **COMPLETED_IN_TREE,
            "backupId": name,
            "startedAt": iso(start),
            "stoppedAt": iso(end),
            "serverName": None,
        },
    )


def with_history(obj: dict[str, Any], periods: list[ArchivePeriod]) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {
        naming.ANNOTATION_ARCHIVE_HISTORY: history_annotation(periods)
    }
    return obj


# pro -> free at +10 h (newest restorable then: +9.5 h) -> pro at +20 h
GAP = [
    ArchivePeriod(on=None, off=at(10), latest=at(9.5)),
    ArchivePeriod(on=at(20)),
]


def test_a_gap_cuts_the_window_into_ranges() -> None:
    records = project_backups(
        [
            done("b1", at(1), at(1.25) + MS),
            done("straddles", at(9.9), at(10.2)),  # its end WAL was never archived
            done("during-free", at(15), at(15.1)),  # no archive configured then
            done("b2", at(20.5), at(20.75) + MS),
        ]
    )
    obj = with_history(cluster("in-tree", status={"conditions": [archiving(True)]}), GAP)
    window = recoverability_window(obj, records, last_archived_at=at(30))
    assert window.state is WindowState.OPEN
    assert [(r.earliest, r.latest, r.current) for r in window.ranges] == [
        (at(1.25) + CONSISTENT, at(9.5), False),
        (at(20.75) + CONSISTENT, at(30), True),
    ]
    assert window.earliest == at(20.75) + CONSISTENT and window.latest == at(30)
    first = window.ranges[0]
    assert first.latest_source == "recorded" and first.ended_at == at(10)
    assert first.ended_because is not None and "switched off" in first.ended_because
    assert window.contains(at(5)) and window.contains(at(25))
    for gap_instant in (at(9.5) + timedelta(microseconds=1), at(12), at(20.6)):
        assert not window.contains(gap_instant)


def test_after_switching_back_on_the_current_range_waits_for_a_backup() -> None:
    records = project_backups([done("b1", at(1), at(1.25) + MS)])
    obj = with_history(cluster("in-tree", status={"conditions": [archiving(True)]}), GAP)
    # The archive's newest instant still dates from before the gap.
    window = recoverability_window(obj, records, last_archived_at=at(9.5))
    assert window.state is WindowState.OPEN  # the earlier range is still restorable
    assert window.earliest is None
    assert window.message is not None and "switched back on" in window.message
    assert [(r.earliest, r.latest) for r in window.ranges] == [(at(1.25) + CONSISTENT, at(9.5))]


def test_a_window_is_opening_until_wal_past_the_first_backup_is_archived() -> None:
    end = at(1) + timedelta(milliseconds=250)
    records = project_backups([done("b1", at(1) - timedelta(minutes=1), end)])
    obj = cluster("in-tree", status={"conditions": [archiving(True)]})
    window = recoverability_window(
        obj, records, last_archived_at=at(0.5), archive_timeout=timedelta(seconds=60)
    )
    assert window.state is WindowState.OPENING
    assert window.opens_at == end + timedelta(seconds=61)
    assert window.ranges == [] and not window.contains(end)
    opened = recoverability_window(obj, records, last_archived_at=end + timedelta(seconds=5))
    ready = end + timedelta(seconds=1)
    assert opened.state is WindowState.OPEN
    assert [(r.earliest, r.latest) for r in opened.ranges] == [(ready, end + timedelta(seconds=5))]


def test_no_backup_yet() -> None:
    obj = cluster("in-tree", status={"conditions": [archiving(True)]})
    window = recoverability_window(obj, [], last_archived_at=at(1))
    assert window.state is WindowState.WAITING_FOR_BACKUP and window.ranges == []


def test_free_plan_has_no_window() -> None:
    window = recoverability_window(cluster("in-tree", plan="free"), [])
    assert window.state is WindowState.NONE and window.ranges == []


def test_standard_tier_offers_backup_ends_as_restore_points() -> None:
    records = project_backups(
        [
            done("b1", at(1), at(1.25) + MS),
            done("straddles", at(9.9), at(10.2)),
            done("b2", at(20.5), at(20.75) + MS),
            backup("failed", {"phase": "failed", "stoppedAt": iso(at(22))}),
        ]
    )
    obj = with_history(
        cluster("in-tree", plan="standard", status={"conditions": [archiving(True)]}), GAP
    )
    window = recoverability_window(obj, records, last_archived_at=at(30))
    assert window.state is WindowState.OPEN and window.ranges == []
    assert [(p.backup_id, p.at) for p in window.restore_points] == [
        ("b2", at(20.75) + CONSISTENT),
        ("b1", at(1.25) + CONSISTENT),
    ]
    assert (window.earliest, window.latest) == (at(1.25) + CONSISTENT, at(20.75) + CONSISTENT)


def test_switching_records_periods() -> None:
    periods = switch_archiving([], on=True, at=at(0))
    assert periods == [ArchivePeriod(on=None)]
    assert switch_archiving(periods, on=True, at=at(1)) == periods
    off = switch_archiving(periods, on=False, at=at(10), latest=at(9.5))
    assert off == [ArchivePeriod(on=None, off=at(10), latest=at(9.5))]
    assert switch_archiving(off, on=True, at=at(20)) == GAP
    assert switch_archiving([], on=False, at=at(0)) == []


GAP_HISTORY = history_annotation(GAP)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "{}",
        "[1, 2]",
        "[]",  # archiving is on, yet nothing says since when
        GAP_HISTORY[:40],  # truncated
        GAP_HISTORY.replace('"off":"', '"off":"garbage', 1),  # an unreadable time
        '[{"on":null,"off":null,"latest":null},{"on":"2026-05-01T23:00:00Z","off":null}]',
        '[{"on":"2026-05-02T00:00:00Z","off":"2026-05-01T00:00:00Z","latest":null},'
        '{"on":"2026-05-03T00:00:00Z","off":null}]',  # off before on
    ],
)
def test_a_garbled_history_never_makes_an_instant_restorable(raw: str) -> None:
    records = project_backups(
        [done("b1", at(1), at(1.25) + MS), done("b2", at(20.5), at(20.75) + MS)]
    )
    obj = cluster("in-tree", status={"conditions": [archiving(True)]})
    obj["metadata"]["annotations"] = {naming.ANNOTATION_ARCHIVE_HISTORY: raw}
    window = recoverability_window(obj, records, last_archived_at=at(30))
    assert window.ranges == [] and not window.contains(at(12)) and not window.contains(at(25))
    assert window.state is WindowState.NONE
    assert window.message is not None and "unreadable" in window.message
    # A plan change writes a new, bounded history: only backups after it count.
    periods = switch_archiving(
        reset_if_unreadable(archive_periods(obj, archiving_now=True)), on=True, at=at(40)
    )
    assert periods[-1] == ArchivePeriod(on=at(40))
    obj["metadata"]["annotations"][naming.ANNOTATION_ARCHIVE_HISTORY] = history_annotation(periods)
    later = project_backups([done("b3", at(41), at(41.5) + MS)])
    renewed = recoverability_window(obj, [*records, *later], last_archived_at=at(50))
    assert [(r.earliest, r.latest) for r in renewed.ranges] == [(at(41.5) + CONSISTENT, at(50))]


def test_an_addon_created_without_backups_records_an_empty_history() -> None:
    obj = cluster("in-tree", plan="free")
    obj["metadata"]["annotations"] = {naming.ANNOTATION_ARCHIVE_HISTORY: "[]"}
    assert archive_periods(obj, archiving_now=False) == []
    assert switch_archiving([], on=True, at=at(1)) == [ArchivePeriod(on=None)]


def test_history_round_trips_through_the_annotation() -> None:
    obj = with_history(cluster("in-tree"), GAP)
    assert archive_periods(obj, archiving_now=True) == GAP


def test_incarnation_server_names() -> None:
    name = naming.incarnation_server_name("db-acme-app-1", "0a1b2c3d")
    assert name == "db-acme-app-1-0a1b2c3d"
    assert naming.is_incarnation_of(name, "db-acme-app-1")
    assert not naming.is_incarnation_of("db-acme-app-1-r0a1b2c3d", "db-acme-app-1")
    assert not naming.is_incarnation_of("db-acme-app-1", "db-acme-app-1")
    fresh = {naming.incarnation_server_name("db-acme-app-1") for _ in range(50)}
    assert len(fresh) == 50
    with pytest.raises(ValueError, match="8 lower-case hex"):
        naming.incarnation_server_name("db-acme-app-1", "XYZ")


def test_the_server_name_annotation_wins_over_the_cluster_name() -> None:
    manifests = build_addon_manifests(
        version="16",
        plan="pro",
        tenant="acme",
        app="app-1",
        config=RenderConfig(mode="in-tree"),
        server_name="db-acme-app-1-0a1b2c3d",
        annotations={naming.ANNOTATION_SERVER_NAME: "db-acme-app-1-0a1b2c3d"},
    )
    obj = manifests.cluster
    assert obj["spec"]["backup"]["barmanObjectStore"]["serverName"] == "db-acme-app-1-0a1b2c3d"
    assert incarnation_server_name_of(obj) == "db-acme-app-1-0a1b2c3d"
    assert incarnation_server_name_of(cluster("in-tree")) == "db-acme-app-1"


def test_window_in_tree_from_cluster_status() -> None:
    obj = cluster(
        "in-tree",
        status={
            "firstRecoverabilityPoint": "2026-05-01T03:02:10Z",
            "lastSuccessfulBackup": "2026-05-03T03:02:00Z",
            "conditions": [archiving(True)],
        },
    )
    latest = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    window = recoverability_window(obj, [], last_archived_at=latest)
    # A whole-second backup end is truncated (one second) and comes before the end-of-backup
    # record (one more): the window starts two seconds after it.
    assert window.earliest == datetime(2026, 5, 1, 3, 2, 12, tzinfo=UTC)
    assert window.latest == latest and window.latest_source == "archive"
    assert window.contains(datetime(2026, 5, 2, tzinfo=UTC))
    assert not window.contains(datetime(2026, 5, 1, 3, 2, 10, 500000, tzinfo=UTC))
    assert not window.contains(latest + timedelta(microseconds=1))


def test_window_plugin_ignores_deprecated_cluster_fields() -> None:
    manifests = build_addon_manifests(
        version="16", plan="pro", tenant="acme", app="app-1", config=RenderConfig(mode="plugin")
    )
    obj = dict(manifests.cluster)
    # Plugin mode: the deprecated fields are never set, but lastFailedBackup is.
    obj["status"] = {"lastFailedBackup": "2026-05-02T00:00:00Z", "conditions": [archiving(True)]}
    store = dict(manifests.object_store or {})
    store["status"] = {
        "serverRecoveryWindow": {
            "db-acme-app-1": {
                "firstRecoverabilityPoint": "2026-05-01T03:01:00Z",
                "lastSuccessfulBackupTime": "2026-05-03T03:01:00Z",
            },
            "another-server": {"firstRecoverabilityPoint": "2020-01-01T00:00:00Z"},
        }
    }
    now = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    window = recoverability_window(
        obj, [], object_store=store, now=now, archive_timeout=timedelta(minutes=5)
    )
    assert window.earliest == datetime(2026, 5, 1, 3, 1, 2, tzinfo=UTC)
    assert window.latest == now - timedelta(minutes=5)
    assert window.latest_source == "estimate"


def test_window_falls_back_to_backup_objects() -> None:
    records = project_backups(
        [
            backup("a", {**COMPLETED_IN_TREE, "stoppedAt": "2026-05-02T03:00:00Z"}),
            backup("b", {**COMPLETED_IN_TREE, "stoppedAt": "2026-05-01T03:00:00Z"}),
            backup("c", {"phase": "failed", "stoppedAt": "2026-04-01T03:00:00Z"}),
        ]
    )
    window = recoverability_window(cluster("in-tree", status={}), records)
    assert window.earliest == datetime(2026, 5, 1, 3, 0, 2, tzinfo=UTC)
    assert window.latest is None and not window.is_open


def test_window_without_archiving_condition_has_no_estimate() -> None:
    obj = cluster("in-tree", status={"conditions": [archiving(False, "boom")]})
    window = recoverability_window(obj, [], now=T0, archive_timeout=timedelta(minutes=5))
    assert window.latest is None


def test_sub_second_backup_ends_get_the_end_record_margin_only() -> None:
    obj = cluster("in-tree", status={"firstRecoverabilityPoint": "2026-05-01T03:02:10.250000Z"})
    window = recoverability_window(obj, [])
    assert window.earliest == datetime(2026, 5, 1, 3, 2, 11, 250000, tzinfo=UTC)


def test_a_standard_backup_that_just_ended_is_not_yet_a_restore_point() -> None:
    end = at(1) + MS
    records = project_backups([done("b1", at(1) - timedelta(minutes=1), end)])
    obj = cluster("in-tree", plan="standard", status={"conditions": [archiving(True)]})
    early = recoverability_window(obj, records, now=end + timedelta(milliseconds=500))
    assert early.state is WindowState.OPENING and early.restore_points == []
    assert early.opens_at == end + timedelta(seconds=1)
    ready = recoverability_window(obj, records, now=end + timedelta(seconds=1))
    assert ready.state is WindowState.OPEN
    assert [p.at for p in ready.restore_points] == [end + timedelta(seconds=1)]
