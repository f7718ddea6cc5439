"""Projections: CNPG objects and their ``status`` -> what users see.

Both engines write status in CNPG's shape, so these functions cannot tell them apart. What
an error text means to the user is :mod:`paas_pitr.cnpg.diagnosis`'s.
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
from paas_pitr.cnpg.diagnosis import diagnose
from paas_pitr.timestamps import parse_k8s_time

Manifest = Mapping[str, Any]


class BackupStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


# The phases CNPG writes into a Backup's status (api/v1/backup_types.go). "walArchivingFailing"
# and "invalid backup definition" are dead ends in practice, so users see them as failed.
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
        # CNPG sets the condition once PostgreSQL reports archiving (pg_stat_archiver), which
        # the operator samples: segments may already be in the bucket by then.
        state = WalArchiveStatus.UNKNOWN
        reason = (
            "Archiving not reported yet: PostgreSQL has not reported an archived WAL "
            "segment to the operator"
        )
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
# Phases after which CNPG stops reconciling: a human must act (CNPG's
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
