"""Projections: CNPG objects and their ``status`` -> what users see.

Both engines write status in CNPG's shape, so these functions cannot tell them apart.
Status is written by other programs (the operator, the plugin, our local engine) and
changes across CNPG versions: every field is optional and an unexpected value degrades
to "unknown", never to an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from paas_pitr.cnpg import naming
from paas_pitr.timestamps import parse_k8s_time

Manifest = Mapping[str, Any]


class BackupStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


# CNPG phases (REFERENCE §4.2). "walArchivingFailing" and "invalid backup definition" are
# dead ends in practice, so users see them as failed.
_PHASES: dict[str, BackupStatus] = {
    "": BackupStatus.PENDING,
    "pending": BackupStatus.PENDING,
    "started": BackupStatus.RUNNING,
    "running": BackupStatus.RUNNING,
    "finalizing": BackupStatus.RUNNING,
    "completed": BackupStatus.COMPLETED,
    "failed": BackupStatus.FAILED,
    "walarchivingfailing": BackupStatus.FAILED,
    "invalid backup definition": BackupStatus.FAILED,
}


class BackupRecord(BaseModel):
    id: str
    name: str
    kind: Literal["base"] = "base"
    status: BackupStatus
    phase: str | None = Field(default=None, description="The raw CNPG phase")
    method: str | None = None
    backup_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    begin_wal: str | None = None
    end_wal: str | None = None
    begin_lsn: str | None = None
    end_lsn: str | None = None
    major_version: int | None = None
    error: str | None = None
    hint: str | None = Field(default=None, description="What to do about the error")


class WalArchiveStatus(StrEnum):
    HEALTHY = "healthy"
    FAILING = "failing"
    UNKNOWN = "unknown"
    DISABLED = "disabled"


class WalArchiveRecord(BaseModel):
    id: Literal["wal-archive"] = "wal-archive"
    name: str
    kind: Literal["wal"] = "wal"
    status: WalArchiveStatus
    server_name: str | None = None
    destination_path: str | None = None
    last_archived_at: datetime | None = None
    reason: str | None = None
    hint: str | None = None


# --- helpers -----------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def condition(obj: Manifest, condition_type: str) -> Mapping[str, Any] | None:
    conditions = _mapping(obj.get("status")).get("conditions")
    if not isinstance(conditions, list):
        return None
    for item in conditions:
        if isinstance(item, Mapping) and item.get("type") == condition_type:
            return item
    return None


# --- failure diagnosis -------------------------------------------------------------------

_CREDENTIAL_MARKERS = (
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "nocredentialserror",
    "unable to locate credentials",
    "403",
    "forbidden",
)
_ENDPOINT_MARKERS = (
    "could not connect to the endpoint",
    "endpointconnectionerror",
    "cannot reach endpoint",
    "connection refused",
    "connect timeout",
    "timed out",
    "name or service not known",
    "temporary failure in name resolution",
)


def diagnose(error: str | None, *, secret_name: str = "ovh-s3-creds") -> str | None:
    """Turn a backup/archiving error into what the operator should do (seed "Failure modes")."""
    if not error:
        return None
    text = error.lower()
    if (
        "secret" in text
        and secret_name.lower() in text
        and ("not found" in text or "missing" in text or "key" in text)
    ):
        return (
            f"The Secret {secret_name!r} is missing or lacks AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY. Re-run the operator runbook: kubectl create secret generic "
            f"{secret_name} --namespace <namespace> --from-literal=AWS_ACCESS_KEY_ID=... "
            "--from-literal=AWS_SECRET_ACCESS_KEY=..."
        )
    if "nosuchbucket" in text or "bucket does not exist" in text:
        return (
            "The backup bucket does not exist; barman-cloud does not create it. Create the "
            "bucket (operator runbook step 1), then the next backup and WAL archive succeed."
        )
    if any(marker in text for marker in _CREDENTIAL_MARKERS):
        return (
            f"The object store refused the credentials in the Secret {secret_name!r}. Check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (operator runbook step 2-3); archiving "
            "resumes by itself once they are fixed."
        )
    if any(marker in text for marker in _ENDPOINT_MARKERS):
        return (
            "The S3 endpoint cannot be reached. Check the endpoint URL and that a "
            "NetworkPolicy allows egress from the database pods to the S3 endpoint (an "
            "allow-https-egress exception for its CIDR)."
        )
    return None


# What PostgreSQL tells clients while it starts or stops. Such a state passes by itself: it is
# never why a recovery failed, and never a reason to report.
TRANSIENT_SERVER_STATES = (
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "consistent recovery state has not been yet reached",
    "the database system is not accepting connections",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "terminating connection due to administrator command",
)

_PICK_ANOTHER_BACKUP = (
    "pick an instant another base backup serves (after the end of a newer one, or before "
    "the start of this one when an older one exists), and take a new base backup"
)
# (markers, hint), most specific first. A local-engine reason may carry PostgreSQL's message
# and, after it, the restore_command's error. Checked before the object-store diagnosis:
# our own timeouts, which say "timed out" like an unreachable endpoint.
_RECOVERY_HINTS_FIRST: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("recovery did not finish within", "barman-cloud-restore timed out"),
        "The restore took longer than the restore timeout: restore to an instant closer to "
        "a base backup's end, or raise PAAS_PITR_RESTORE_TIMEOUT_SECONDS.",
    ),
)
# Checked after it: a store refusing our keys also fails barman-cloud-restore and the
# restore_command, and is fixed in the store, not by another target.
_RECOVERY_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("requested recovery stop point is before consistent recovery point",),
        "The target is before the base backup it was restored from is consistent: pick a "
        "later instant inside a restorable range (GET .../backups of the addon, or "
        "GET .../incarnations for a deleted one).",
    ),
    (
        # Before the gap: WAL missing before the backup's end is the backup's own.
        (
            "could not locate required checkpoint record",
            "could not locate a valid checkpoint record",
            "invalid checkpoint record",
            "wal ends before end of online backup",
            "wal ends before consistent recovery point",
            "barman-cloud-restore failed",
        ),
        "The base backup is damaged or incomplete (its files, or the WAL written while it was "
        f"taken, cannot be read from the archive): {_PICK_ANOTHER_BACKUP}.",
    ),
    (
        ("has a gap",),
        "A WAL segment the target needs is missing from the archive, which holds later "
        "segments: instants after the gap cannot be reached from this base backup. Pick an "
        "instant before the gap, or one after the end of a base backup taken after it.",
    ),
    (
        ("recovery ended before configured recovery target was reached",),
        "The target is after the newest WAL the archive holds (on an idle database, after "
        "its last archived commit): pick an instant inside a restorable range (GET "
        ".../backups of the addon, or GET .../incarnations for a deleted one); on a live "
        "addon the range grows as WAL is archived.",
    ),
    (
        ("expected empty archive",),
        "The new cluster's own archive folder already holds files, so it would mix two "
        "histories: delete that folder or request the restore again (a new restore gets a "
        "new cluster name).",
    ),
    (
        ("no target backup found",),
        "No completed base backup ends before the target: pick an instant after the end of "
        "the oldest completed backup (the window's earliest).",
    ),
)


def _first_hint(text: str, table: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    for markers, hint in table:
        if any(marker in text for marker in markers):
            return hint
    return None


def diagnose_recovery(reason: str | None) -> str | None:
    """What to do about a failed restore, from its reason (PostgreSQL's, barman-cloud's or
    the engine's text, as ``restore_state`` returns it for either engine).

    ``None`` for no reason, an unknown one, or a transient server state (which is never
    the cause of a failure). Matching is case-insensitive on known message fragments.
    """
    if not reason:
        return None
    text = reason.lower()
    if any(text.strip().rstrip(".") == state for state in TRANSIENT_SERVER_STATES):
        return None
    return (
        _first_hint(text, _RECOVERY_HINTS_FIRST)
        or diagnose(reason)
        or _first_hint(text, _RECOVERY_HINTS)
    )


# --- Backup -> record --------------------------------------------------------------------


def project_backup(backup: Manifest, *, secret_name: str = "ovh-s3-creds") -> BackupRecord:
    metadata = _mapping(backup.get("metadata"))
    spec = _mapping(backup.get("spec"))
    status = _mapping(backup.get("status"))
    name = _str(metadata.get("name")) or "<unnamed>"
    phase = _str(status.get("phase"))
    state = _PHASES.get((phase or "").lower())
    if state is None:
        # An unknown phase from a newer operator: not final, so "running" is the honest guess.
        state = BackupStatus.RUNNING
    error = _str(status.get("error")) or _str(status.get("commandError"))
    if state is BackupStatus.FAILED and error is None and phase:
        error = phase
    return BackupRecord(
        id=_str(status.get("backupId")) or name,
        name=name,
        status=state,
        phase=phase,
        method=_str(status.get("method")) or _str(spec.get("method")),
        backup_id=_str(status.get("backupId")),
        created_at=parse_k8s_time(metadata.get("creationTimestamp")),
        started_at=parse_k8s_time(status.get("startedAt")),
        stopped_at=parse_k8s_time(status.get("stoppedAt")),
        begin_wal=_str(status.get("beginWal")),
        end_wal=_str(status.get("endWal")),
        begin_lsn=_str(status.get("beginLSN")),
        end_lsn=_str(status.get("endLSN")),
        major_version=_int(status.get("majorVersion")),
        error=error,
        hint=diagnose(error, secret_name=secret_name) if error else None,
    )


def _sort_key(record: BackupRecord) -> datetime:
    moment = record.stopped_at or record.started_at or record.created_at
    return moment or datetime.min.replace(tzinfo=UTC)


def project_backups(
    backups: Iterable[Manifest], *, secret_name: str = "ovh-s3-creds"
) -> list[BackupRecord]:
    """Records newest first."""
    records = [project_backup(b, secret_name=secret_name) for b in backups]
    return sorted(records, key=_sort_key, reverse=True)


def belongs_to(backup: Manifest, cluster: Manifest, server_name: str) -> bool:
    """Whether a Backup is of this incarnation of ``cluster``: not a leftover of a deleted
    cluster of the same name (its owner's uid differs; Kubernetes collects those in the
    background) nor of another archive folder."""
    uid = _mapping(cluster.get("metadata")).get("uid")
    owners = _mapping(backup.get("metadata")).get("ownerReferences")
    if uid and isinstance(owners, list):
        for owner in owners:
            if (
                isinstance(owner, Mapping)
                and owner.get("kind") == "Cluster"
                and owner.get("uid") != uid
            ):
                return False
    recorded = _str(_mapping(backup.get("status")).get("serverName"))
    return recorded is None or recorded == server_name


# --- the WAL archive ---------------------------------------------------------------------


def cluster_version(cluster: Manifest) -> str | None:
    """The PostgreSQL version of a Cluster: its image tag (``...postgresql:16`` -> ``16``)."""
    image = str(_mapping(cluster.get("spec")).get("imageName", ""))
    return image.rsplit(":", 1)[1] if ":" in image else None


def uses_plugin(cluster: Manifest) -> bool:
    plugins = _mapping(cluster.get("spec")).get("plugins")
    if not isinstance(plugins, list):
        return False
    return any(
        isinstance(p, Mapping)
        and p.get("name") == naming.BARMAN_PLUGIN_NAME
        and p.get("enabled", True) is not False
        for p in plugins
    )


def archive_server_name(cluster: Manifest) -> str | None:
    """The folder a cluster archives to (``<destinationPath>/<serverName>``)."""
    spec = _mapping(cluster.get("spec"))
    name = _str(_mapping(cluster.get("metadata")).get("name"))
    if uses_plugin(cluster):
        for plugin in spec.get("plugins") or []:
            if isinstance(plugin, Mapping) and plugin.get("name") == naming.BARMAN_PLUGIN_NAME:
                return _str(_mapping(plugin.get("parameters")).get("serverName")) or name
    store = _mapping(_mapping(spec.get("backup")).get("barmanObjectStore"))
    if store:
        return _str(store.get("serverName")) or name
    return None


def archive_destination(cluster: Manifest, object_store: Manifest | None) -> str | None:
    spec = _mapping(cluster.get("spec"))
    if uses_plugin(cluster):
        configuration = _mapping(_mapping((object_store or {}).get("spec")).get("configuration"))
        return _str(configuration.get("destinationPath"))
    return _str(
        _mapping(_mapping(spec.get("backup")).get("barmanObjectStore")).get("destinationPath")
    )


def project_wal_archive(
    cluster: Manifest,
    object_store: Manifest | None = None,
    *,
    last_archived_at: datetime | None = None,
    secret_name: str = "ovh-s3-creds",
) -> WalArchiveRecord:
    server_name = archive_server_name(cluster)
    destination = archive_destination(cluster, object_store)
    name = f"{server_name or _mapping(cluster.get('metadata')).get('name')}-wal"
    if server_name is None:
        return WalArchiveRecord(
            name=name,
            status=WalArchiveStatus.DISABLED,
            reason="No backup configuration: the plan has no backups",
        )
    archiving = condition(cluster, "ContinuousArchiving")
    if archiving is None:
        state, reason = WalArchiveStatus.UNKNOWN, "No WAL segment archived yet"
    elif archiving.get("status") == "True":
        state, reason = WalArchiveStatus.HEALTHY, None
    elif archiving.get("status") == "False":
        state = WalArchiveStatus.FAILING
        reason = _str(archiving.get("message")) or _str(archiving.get("reason")) or "failing"
    else:
        state, reason = WalArchiveStatus.UNKNOWN, _str(archiving.get("message"))
    return WalArchiveRecord(
        name=name,
        status=state,
        server_name=server_name,
        destination_path=destination,
        last_archived_at=last_archived_at,
        reason=reason,
        hint=diagnose(reason, secret_name=secret_name)
        if state is WalArchiveStatus.FAILING
        else None,
    )


# --- archive_timeout -----------------------------------------------------------------------

# CNPG's default when a cluster does not set archive_timeout.
DEFAULT_ARCHIVE_TIMEOUT = timedelta(minutes=5)
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400, None: 1}


def archive_timeout_of(cluster: Manifest) -> timedelta:
    """The cluster's ``archive_timeout``: at most how stale its newest archived WAL is."""
    parameters = _mapping(
        _mapping(_mapping(cluster.get("spec")).get("postgresql")).get("parameters")
    )
    match = _DURATION.match(str(parameters.get("archive_timeout", "")))
    if not match:
        return DEFAULT_ARCHIVE_TIMEOUT
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


# --- restores (recovery clusters) --------------------------------------------------------


class RestoreState(StrEnum):
    TRIGGERED = "restore_triggered"
    RECOVERING = "recovering"
    READY = "ready"
    FAILED = "failed"


PHASE_HEALTHY = "Cluster in healthy state"
PHASE_SETTING_UP_PRIMARY = "Setting up primary"
# Phases after which CNPG stops reconciling: a human must act (REFERENCE §6 and CNPG's
# api/v1/cluster_types.go). Matched on equality: they are sentences, and substrings of
# one another.
TERMINAL_PHASES = frozenset(
    {
        "Cluster is unrecoverable and needs manual intervention",
        "Cluster is in an unrecoverable state, needs manual intervention",
        "Cluster cannot proceed to reconciliation due to an unknown plugin being required",
        "Cluster cannot proceed to reconciliation due to an error while interacting with plugins",
        "Unable to create required cluster objects",
        "Cluster has incomplete or invalid image catalog",
    }
)
# Our own reason on a Ready=False condition when we know recovery failed for good (the
# operator has no phase for a failed full-recovery job; the engines detect it).
RECOVERY_FAILED_REASON = "RecoveryFailed"


def restore_state(cluster: Manifest) -> tuple[RestoreState, str | None]:
    status = _mapping(cluster.get("status"))
    phase = _str(status.get("phase"))
    ready = condition(cluster, "Ready")
    if ready is not None and ready.get("reason") == RECOVERY_FAILED_REASON:
        return RestoreState.FAILED, _str(ready.get("message")) or "recovery failed"
    if phase in TERMINAL_PHASES:
        return RestoreState.FAILED, _str(status.get("phaseReason")) or phase
    if ready is not None and ready.get("status") == "True":
        return RestoreState.READY, None
    if phase == PHASE_HEALTHY and (_int(status.get("readyInstances")) or 0) > 0:
        return RestoreState.READY, None
    if phase is None and ready is None:
        return RestoreState.TRIGGERED, None
    return RestoreState.RECOVERING, _str(status.get("phaseReason")) or phase
