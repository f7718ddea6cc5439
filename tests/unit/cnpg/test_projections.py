"""Projections from realistic status samples (the shapes CNPG writes into Backup and
Cluster statuses), and the diagnosis of the errors they carry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from paas_pitr.cnpg.builders import RenderConfig, build_addon_manifests
from paas_pitr.cnpg.diagnosis import diagnose, diagnose_recovery
from paas_pitr.cnpg.projections import (
    BackupStatus,
    RestoreState,
    WalArchiveStatus,
    project_backup,
    project_backups,
    project_wal_archive,
    restore_state,
)

T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def backup(
    name: str, status: dict[str, Any] | None, method: str = "barmanObjectStore"
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": "paas-apps",
            "creationTimestamp": "2026-05-01T03:00:00Z",
            "labels": {"cnpg.io/cluster": "db-acme-app-1"},
        },
        "spec": {"cluster": {"name": "db-acme-app-1"}, "method": method},
    }
    if status is not None:
        obj["status"] = status
    return obj


COMPLETED_IN_TREE = {
    "phase": "completed",
    "method": "barmanObjectStore",
    "online": True,
    "backupId": "20260501T030000",
    "backupName": "backup-20260501030000",
    "startedAt": "2026-05-01T03:00:01Z",
    "stoppedAt": "2026-05-01T03:02:10Z",
    "beginWal": "000000010000000000000004",
    "endWal": "000000010000000000000005",
    "beginLSN": "0/4000028",
    "endLSN": "0/5000100",
    "majorVersion": 16,
    "destinationPath": "s3://paas-pg-backups/acme/app-1",
    "serverName": "db-acme-app-1",
    "s3Credentials": {"accessKeyId": {"name": "ovh-s3-creds", "key": "AWS_ACCESS_KEY_ID"}},
}


def test_completed_backup_projection_hides_credentials() -> None:
    record = project_backup(backup("db-acme-app-1-daily-20260501030000", COMPLETED_IN_TREE))
    assert record.status is BackupStatus.COMPLETED
    assert record.id == "20260501T030000"
    assert record.kind == "base"
    assert record.started_at == datetime(2026, 5, 1, 3, 0, 1, tzinfo=UTC)
    assert record.stopped_at == datetime(2026, 5, 1, 3, 2, 10, tzinfo=UTC)
    assert (record.begin_wal, record.end_wal) == (
        "000000010000000000000004",
        "000000010000000000000005",
    )
    assert (record.begin_lsn, record.end_lsn) == ("0/4000028", "0/5000100")
    assert record.major_version == 16
    assert record.error is None
    assert "s3Credentials" not in record.model_dump_json()
    assert "ovh-s3-creds" not in record.model_dump_json()


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (None, BackupStatus.PENDING),
        ("", BackupStatus.PENDING),
        ("pending", BackupStatus.PENDING),
        ("started", BackupStatus.RUNNING),
        ("running", BackupStatus.RUNNING),
        ("finalizing", BackupStatus.RUNNING),
        ("completed", BackupStatus.COMPLETED),
        ("failed", BackupStatus.FAILED),
        ("walArchivingFailing", BackupStatus.FAILED),
        ("invalid backup definition", BackupStatus.FAILED),
        ("somethingNewInCNPG2", BackupStatus.RUNNING),
    ],
)
def test_phase_mapping(phase: str | None, expected: BackupStatus) -> None:
    status = {} if phase is None else {"phase": phase}
    assert project_backup(backup("b", status)).status is expected


@pytest.mark.parametrize(
    "status",
    [
        None,
        {},
        {"phase": 42, "startedAt": "garbage", "stoppedAt": 17, "majorVersion": "16"},
        {"phase": ["x"], "backupId": {"a": 1}, "error": None},
    ],
)
def test_garbled_status_never_crashes(status: dict[str, Any] | None) -> None:
    record = project_backup(backup("b", status))
    assert record.name == "b" and record.started_at is None and record.major_version is None


def test_plugin_backup_projection() -> None:
    status = {
        "phase": "completed",
        "method": "plugin",
        "backupId": "20260502T030000",
        "startedAt": "2026-05-02T03:00:00Z",
        "stoppedAt": "2026-05-02T03:01:00Z",
        "pluginMetadata": {"pluginName": "barman-cloud.cloudnative-pg.io"},
    }
    record = project_backup(backup("x", status, method="plugin"))
    assert record.method == "plugin" and record.status is BackupStatus.COMPLETED


def test_missing_secret_gets_an_actionable_message() -> None:
    status = {
        "phase": "failed",
        "error": 'while getting secret "ovh-s3-creds": secrets "ovh-s3-creds" not found',
    }
    record = project_backup(backup("b", status))
    assert record.status is BackupStatus.FAILED
    assert record.hint is not None and "kubectl create secret generic ovh-s3-creds" in record.hint


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (
            "botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL",
            "NetworkPolicy",
        ),
        ("BackupFailed: cannot reach endpoint", "allow-https-egress"),
        (
            "An error occurred (InvalidAccessKeyId) when calling the PutObject operation",
            "credentials",
        ),
        ("An error occurred (NoSuchBucket) when calling the ListObjectsV2 operation", "bucket"),
    ],
)
def test_diagnoses(error: str, needle: str) -> None:
    hint = diagnose(error)
    assert hint is not None and needle in hint


def test_unrelated_errors_get_no_made_up_hint() -> None:
    assert diagnose("disk quota exceeded on pg_wal") is None


def test_failed_phase_without_error_still_explains() -> None:
    record = project_backup(backup("b", {"phase": "walArchivingFailing"}))
    assert record.error == "walArchivingFailing"


def test_backups_are_listed_newest_first() -> None:
    objs = [
        backup("old", {**COMPLETED_IN_TREE, "stoppedAt": "2026-04-01T03:00:00Z"}),
        backup("pending", {}),
        backup("new", {**COMPLETED_IN_TREE, "stoppedAt": "2026-05-03T03:00:00Z"}),
    ]
    objs[1]["metadata"]["creationTimestamp"] = "2026-05-04T03:00:00Z"
    assert [r.name for r in project_backups(objs)] == ["pending", "new", "old"]


# --- clusters ---------------------------------------------------------------------------


def cluster(mode: str, plan: str = "pro", status: dict[str, Any] | None = None) -> dict[str, Any]:
    manifests = build_addon_manifests(
        version="16",
        plan=plan,
        tenant="acme",
        app="app-1",
        config=RenderConfig(mode=mode),  # type: ignore[arg-type]
    )
    obj = dict(manifests.cluster)
    if status is not None:
        obj["status"] = status
    return obj


def archiving(ok: bool, message: str = "") -> dict[str, Any]:
    return {
        "type": "ContinuousArchiving",
        "status": "True" if ok else "False",
        "reason": "ContinuousArchivingSuccess" if ok else "ContinuousArchivingFailing",
        "message": message,
        "lastTransitionTime": "2026-05-01T03:00:00Z",
    }


def test_wal_archive_healthy() -> None:
    record = project_wal_archive(cluster("in-tree", status={"conditions": [archiving(True)]}))
    assert record.status is WalArchiveStatus.HEALTHY
    assert record.kind == "wal"
    assert record.server_name == "db-acme-app-1"
    assert record.destination_path == "s3://paas-pg-backups/acme/app-1"


def test_wal_archive_failing_with_reason_and_hint() -> None:
    msg = (
        "unexpected failure invoking barman-cloud-wal-archive: exit status 4 "
        "(SignatureDoesNotMatch)"
    )
    record = project_wal_archive(cluster("in-tree", status={"conditions": [archiving(False, msg)]}))
    assert record.status is WalArchiveStatus.FAILING
    assert record.reason == msg
    assert record.hint is not None and "credentials" in record.hint


def test_wal_archive_plugin_mode_reads_destination_from_object_store() -> None:
    manifests = build_addon_manifests(
        version="16", plan="pro", tenant="acme", app="app-1", config=RenderConfig(mode="plugin")
    )
    record = project_wal_archive(manifests.cluster, manifests.object_store)
    assert record.status is WalArchiveStatus.UNKNOWN
    assert record.reason == (
        "Archiving not reported yet: PostgreSQL has not reported an archived WAL segment "
        "to the operator"
    )
    assert record.destination_path == "s3://paas-pg-backups/acme/app-1"


def test_wal_archive_free_plan_is_disabled() -> None:
    assert project_wal_archive(cluster("in-tree", plan="free")).status is WalArchiveStatus.DISABLED


# --- restores ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, RestoreState.TRIGGERED),
        ({"phase": "Setting up primary"}, RestoreState.RECOVERING),
        (
            {
                "phase": "Cluster in healthy state",
                "readyInstances": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady"}],
            },
            RestoreState.READY,
        ),
        ({"phase": "Cluster is unrecoverable and needs manual intervention"}, RestoreState.FAILED),
        (
            {
                "phase": "Setting up primary",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "RecoveryFailed",
                        "message": "recovery ended before configured recovery target was reached",
                    }
                ],
            },
            RestoreState.FAILED,
        ),
    ],
)
def test_restore_state(status: dict[str, Any] | None, expected: RestoreState) -> None:
    obj = cluster("in-tree", status=status)
    state, reason = restore_state(obj)
    assert state is expected
    if expected is RestoreState.FAILED:
        assert reason


# --- what to do about a failed restore ----------------------------------------------------

GAP_REASON = (
    "recovery ended before configured recovery target was reached: WAL segment "
    "000000010000000000000003 is missing from the archive, which holds later segments: the "
    "archive has a gap (restore_command: ERROR: Failure downloading WAL "
    "acme/app-1/db/wals/0000000100000000/000000010000000000000003.gz: Internal Error)"
)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        # PostgreSQL's own reasons, alone (the Kubernetes engine) or with the local engine's
        # account of the restore_command.
        (
            "recovery ended before configured recovery target was reached",
            "inside a restorable range",
        ),
        (GAP_REASON, "before the gap"),
        (
            "could not locate required checkpoint record: WAL segment 000000010000000000000002 "
            "is missing from the archive, which holds later segments: the archive has a gap "
            "(restore_command: ERROR: ...)",
            "base backup is damaged",
        ),
        ("could not locate a valid checkpoint record", "base backup is damaged"),
        ("WAL ends before end of online backup", "base backup is damaged"),
        (
            "barman-cloud-restore failed: ERROR: Barman cloud restore exception: "
            "data.tar.snappy not found",
            "base backup is damaged",
        ),
        (
            "requested recovery stop point is before consistent recovery point",
            "pick a later instant",
        ),
        ("recovery did not finish within 21600s", "PAAS_PITR_RESTORE_TIMEOUT_SECONDS"),
        (
            "WAL archive check failed for server db-acme-app-1-r1: Expected empty archive",
            "own archive folder already holds files",
        ),
        (
            "no target backup found in s3://paas-pg-backups/acme/app-1/db-acme-app-1",
            "after the end of the oldest completed backup",
        ),
        # An object store that refuses the keys fails the restore_command too: fix the keys.
        (
            "recovery ended before configured recovery target was reached: WAL segment "
            "000000010000000000000003 could not be fetched from the archive (restore_command: "
            "ERROR: An error occurred (InvalidAccessKeyId) when calling the GetObject operation)",
            "refused the credentials",
        ),
        ("barman-cloud-restore timed out after 21600s", "PAAS_PITR_RESTORE_TIMEOUT_SECONDS"),
        # The local engine's own restore of the base backup.
        (
            "base backup restore failed: acme/app-1/db/base/20260501T030000/data_0002.tar.snappy "
            "is missing (the backup holds part 0003 after it)",
            "base backup is damaged",
        ),
        (
            "base backup restore failed: cannot read acme/app-1/db/base/20260501T030000/"
            "data.tar.snappy: ValueError: the snappy stream ends before its end marker",
            "base backup is damaged",
        ),
        ("base backup restore timed out after 21600s", "PAAS_PITR_RESTORE_TIMEOUT_SECONDS"),
        (
            "base backup restore failed: cannot read 'acme/app-1/db/base/20260501T030000/"
            "backup.info': An error occurred (AccessDenied) when calling the GetObject operation",
            "refused the credentials",
        ),
    ],
)
def test_diagnose_recovery(reason: str, expected: str) -> None:
    hint = diagnose_recovery(reason)
    assert hint is not None and expected in hint, hint


def test_the_gap_hint_in_full() -> None:
    assert diagnose_recovery(GAP_REASON) == (
        "A WAL segment the target needs is missing from the archive, which holds later "
        "segments: instants after the gap cannot be reached from this base backup. Pick an "
        "instant before the gap, or one after the end of a base backup taken after it."
    )


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        "the database system is starting up",
        "the database system is not yet accepting connections",
        "the database system is shutting down",
        "something nobody has seen before",
    ],
)
def test_no_hint_for_transient_states_or_unknown_reasons(reason: str | None) -> None:
    assert diagnose_recovery(reason) is None
