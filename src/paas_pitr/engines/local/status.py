"""The status the local engine writes, in CNPG's shape, so that the projections above
cannot tell it from the operator's: Cluster conditions, phase and readiness, Backup phases
and times, ScheduledBackup bookkeeping, and the recovery window in the Cluster (in-tree)
or ObjectStore (Barman Cloud plugin) status.

Every write is a merge into the object's status subresource; writing to an object that is
gone is a no-op, as a late status update of a deleted object is in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.projections import PHASE_HEALTHY
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.barman import barman_time
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.timestamps import format_k8s_time

PHASE_UNRECOVERABLE = "Cluster is unrecoverable and needs manual intervention"
PHASE_STOPPED = "Cluster is stopped"
# CNPG's phase while instances that existed before come back (PhaseWaitingForInstancesToBeActive).
PHASE_WAITING_FOR_INSTANCES = "Waiting for the instances to become active"


class BackupStatusFields(TypedDict, total=False):
    """The fields of a Backup's status the local engine writes (CNPG's names)."""

    phase: str
    method: str
    online: bool
    error: str | None
    backupId: str | None
    backupName: str
    startedAt: str | None
    stoppedAt: str | None
    beginWal: str | None
    endWal: str | None
    beginLSN: str | None
    endLSN: str | None
    majorVersion: int | None
    serverName: str | None
    destinationPath: str | None


def _now() -> str | None:
    return format_k8s_time(datetime.now(UTC))


def completed_backup(
    entry: Mapping[str, Any], name: str, method: str, config: ArchiveConfig, major: int | None
) -> BackupStatusFields:
    """A completed Backup's status in CNPG's shape, from barman's catalog entry."""
    plugin = method == "plugin"
    return {
        "phase": "completed",
        "method": method,
        "online": True,
        "backupId": entry.get("backup_id"),
        "backupName": name,
        "startedAt": format_k8s_time(barman_time(entry, "begin")),
        "stoppedAt": format_k8s_time(barman_time(entry, "end")),
        "beginWal": entry.get("begin_wal"),
        "endWal": entry.get("end_wal"),
        "beginLSN": entry.get("begin_xlog"),
        "endLSN": entry.get("end_xlog"),
        "majorVersion": major,
        "error": None,
        # Copies of the store configuration: CNPG writes them for in-tree backups only (a
        # plugin backup's configuration lives in its ObjectStore).
        "serverName": None if plugin else config.server_name,
        "destinationPath": None if plugin else config.destination,
    }


class StatusWriter:
    """Writes the status subresource of the objects in an :class:`ObjectDatabase`."""

    def __init__(self, objects: ObjectDatabase) -> None:
        self.objects = objects

    # --- Cluster ---------------------------------------------------------------------

    def set_condition(
        self, cluster_name: str, ctype: str, ok: bool, reason: str, message: str = ""
    ) -> None:
        """Set one condition; its ``lastTransitionTime`` moves only when its status does."""
        current = self.objects.get("Cluster", cluster_name)
        if current is None:
            return
        conditions = list((current.get("status") or {}).get("conditions") or [])
        status = "True" if ok else "False"
        for index, existing in enumerate(conditions):
            if existing.get("type") == ctype:
                changed = existing.get("status") != status
                conditions[index] = {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": _now() if changed else existing.get("lastTransitionTime"),
                }
                break
        else:
            conditions.append(
                {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": _now(),
                }
            )
        self.objects.update_status("Cluster", cluster_name, {"conditions": conditions})

    def set_phase(self, cluster_name: str, phase: str, reason: str | None = None) -> None:
        self.objects.update_status(
            "Cluster",
            cluster_name,
            {"phase": phase, "phaseReason": reason or "", "instances": 1},
        )

    def update_cluster(self, cluster_name: str, fields: Mapping[str, Any]) -> None:
        self.objects.update_status("Cluster", cluster_name, fields)

    def cluster_ready(self, cluster_name: str) -> None:
        """The instance answers: healthy, one ready instance, the primary, Ready."""
        self.set_phase(cluster_name, PHASE_HEALTHY)
        self.update_cluster(cluster_name, {"readyInstances": 1, "currentPrimary": cluster_name})
        self.set_condition(cluster_name, "Ready", True, "ClusterIsReady", "Cluster is Ready")

    def mark_instances_down(self, phase: str, reason: str, message: str) -> None:
        """Statuses written by an earlier run must not claim servers that are not up.

        The object database outlives the process (as etcd outlives the operator); without
        this a restarted service would report an addon Ready while its server is still
        starting. Clusters still bootstrapping keep their phase: the bootstrap resumes and
        owns it.
        """
        for cluster in self.objects.list("Cluster"):
            name = cluster["metadata"]["name"]
            status = cluster.get("status") or {}
            if status.get("phase") != PHASE_HEALTHY:
                continue
            self.set_phase(name, phase, message)
            self.update_cluster(name, {"readyInstances": 0})
            self.set_condition(name, "Ready", False, reason, message)

    # --- Backup and ScheduledBackup ----------------------------------------------------

    def update_backup(self, name: str, fields: BackupStatusFields) -> None:
        self.objects.update_status("Backup", name, fields)

    def backup_failed(self, cluster_name: str, name: str, message: str, method: str) -> None:
        """A Backup failed: its own status, and the cluster's last-backup condition."""
        self.update_backup(
            name, {"phase": "failed", "error": message, "stoppedAt": _now(), "method": method}
        )
        self.set_condition(cluster_name, "LastBackupSucceeded", False, "LastBackupFailed", message)
        self.update_cluster(cluster_name, {"lastFailedBackup": _now()})

    def update_scheduled_backup(self, name: str, fields: Mapping[str, Any]) -> None:
        self.objects.update_status("ScheduledBackup", name, fields)

    # --- the recovery window -----------------------------------------------------------

    def recovery_window(
        self, cluster: Manifest, server_name: str, catalog: Sequence[Mapping[str, Any]]
    ) -> None:
        """The first recoverability point and last successful backup of ``catalog`` (the
        completed backups in the archive), where CNPG writes them: the Cluster's status
        (in-tree), or the ObjectStore's ``serverRecoveryWindow`` entry for the server
        (plugin)."""
        ends = [e for b in catalog if (e := barman_time(b, "end")) is not None]
        first = format_k8s_time(min(ends)) if ends else None
        last = format_k8s_time(max(ends)) if ends else None
        store_name = next(
            (
                p["parameters"]["barmanObjectName"]
                for p in cluster.get("spec", {}).get("plugins") or []
                if p.get("name") == naming.BARMAN_PLUGIN_NAME
            ),
            None,
        )
        if store_name is None:
            self.update_cluster(
                cluster["metadata"]["name"],
                {"firstRecoverabilityPoint": first, "lastSuccessfulBackup": last},
            )
            return
        current = self.objects.get("ObjectStore", store_name) or {}
        windows = dict((current.get("status") or {}).get("serverRecoveryWindow") or {})
        windows[server_name] = {"firstRecoverabilityPoint": first, "lastSuccessfulBackupTime": last}
        self.objects.update_status("ObjectStore", store_name, {"serverRecoveryWindow": windows})
