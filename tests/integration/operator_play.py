"""The test as the CNPG operator: statuses and Backups written for an addon created through
the API, on either engine harness (``InMemoryEngine`` or ``KubernetesHarness``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from paas_pitr.timestamps import format_api_time


class OperatorSide(Protocol):
    objects: Any
    archived_at: dict[str, datetime]

    def set_status(self, kind: Any, name: str, status: dict[str, Any]) -> None: ...

    def put(self, obj: dict[str, Any]) -> None: ...


def backup_obj(
    cluster: str, uid: str, name: str, end: datetime, phase: str = "completed"
) -> dict[str, Any]:
    """A Backup of ``cluster`` owned by it (as CNPG makes those of a ScheduledBackup)."""
    started = end - timedelta(minutes=2)
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": "paas-apps",
            "labels": {"cnpg.io/cluster": cluster},
            "creationTimestamp": format_api_time(started),
            "ownerReferences": [
                {
                    "apiVersion": "postgresql.cnpg.io/v1",
                    "kind": "Cluster",
                    "name": cluster,
                    "uid": uid,
                }
            ],
        },
        "spec": {"cluster": {"name": cluster}, "method": "barmanObjectStore"},
        "status": {
            "phase": phase,
            "backupId": end.strftime("%Y%m%dT%H%M%S"),
            "startedAt": format_api_time(started),
            "stoppedAt": format_api_time(end),
            "beginWal": "000000010000000000000002",
            "endWal": "000000010000000000000003",
            "beginLSN": "0/2000028",
            "endLSN": "0/3000100",
            **({"error": "can't upload: AccessDenied"} if phase == "failed" else {}),
        },
    }


def create_addon(
    client: httpx.Client,
    operator: OperatorSide,
    *,
    app: str,
    plan: str,
    backups_ending: list[datetime],
    archived_at: datetime | None,
    archiving_error: str | None = None,
    failed_backups: int = 0,
    addon_id: str | None = None,
    version: str = "16",
) -> str:
    """An addon created through the API whose operator reports it healthy (or its archiving
    failing with ``archiving_error``), with completed base backups ending at
    ``backups_ending`` and WAL archived up to ``archived_at``."""
    body = {"plan": plan, "version": version} | ({"addon_id": addon_id} if addon_id else {})
    created = client.post(f"/v1/apps/{app}/addons", json=body)
    assert created.status_code == 201, created.text
    addon = str(created.json()["data"]["addon_id"])
    archiving = (
        {"type": "ContinuousArchiving", "status": "True", "reason": "ContinuousArchivingSuccess"}
        if archiving_error is None
        else {
            "type": "ContinuousArchiving",
            "status": "False",
            "reason": "ContinuousArchivingFailing",
            "message": archiving_error,
        }
    )
    operator.set_status(
        "Cluster",
        addon,
        {
            "phase": "Cluster in healthy state",
            "readyInstances": 1,
            "firstRecoverabilityPoint": format_api_time(min(backups_ending)),
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ClusterIsReady"},
                archiving,
            ],
        },
    )
    uid = operator.objects[("Cluster", addon)]["metadata"]["uid"]
    for number, end in enumerate(backups_ending, 1):
        operator.put(backup_obj(addon, uid, f"{addon}-daily-{number}", end))
    for number in range(failed_backups):
        operator.put(
            backup_obj(addon, uid, f"{addon}-failed-{number}", max(backups_ending), "failed")
        )
    if archived_at is not None:
        operator.archived_at[addon] = archived_at
    return addon


def fail_restore(operator: OperatorSide, cluster_name: str, message: str) -> None:
    operator.set_status(
        "Cluster",
        cluster_name,
        {
            "phase": "Setting up primary",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RecoveryFailed", "message": message}
            ],
        },
    )


def finish_restore(operator: OperatorSide, cluster_name: str) -> None:
    operator.set_status(
        "Cluster",
        cluster_name,
        {
            "phase": "Cluster in healthy state",
            "readyInstances": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady"}],
        },
    )
