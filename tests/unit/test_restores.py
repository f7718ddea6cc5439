"""A failed restore's hint, on the restore view and in its audit event, from the reason in
the recovery Cluster's status (whichever engine wrote it)."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any, cast

from paas_pitr.audit import AuditLog
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.diagnosis import diagnose_recovery
from paas_pitr.cnpg.projections import RECOVERY_FAILED_REASON
from paas_pitr.engines.base import Engine
from paas_pitr.restore_views import RESTORE_NAMESPACE, RestoreTracker, restore_view

REASON = "requested recovery stop point is before consistent recovery point"


def recovery_cluster(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": naming.API_VERSION,
        "kind": "Cluster",
        "metadata": {
            "name": "db-acme-app-1-r0123abcd",
            "creationTimestamp": "2026-05-01T03:00:00Z",
            "labels": {
                naming.LABEL_ROLE: naming.ROLE_RESTORE,
                naming.LABEL_RESTORE_ID: "0123abcd",
                naming.LABEL_APP: "app-1",
                naming.LABEL_ADDON: "db-acme-app-1",
            },
            "annotations": {
                naming.ANNOTATION_RESTORE_REQUEST: json.dumps(
                    {"timestamp": "2026-05-01T02:00:00Z", "target": "new_cluster"}
                )
            },
        },
        "status": status,
    }


FAILED = recovery_cluster(
    {
        "phase": "Setting up primary",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": RECOVERY_FAILED_REASON,
                "message": REASON,
            }
        ],
    }
)
RECOVERING = recovery_cluster(
    {"phase": "Setting up primary", "phaseReason": "the database system is starting up"}
)


class NoConnections:
    async def connection_info(self, cluster: Any) -> None:
        return None


ENGINE = cast(Engine, NoConnections())


async def test_a_failed_restore_carries_a_hint() -> None:
    view = await restore_view(ENGINE, FAILED)
    assert view.status == "failed"
    assert view.reason == REASON
    assert view.hint == diagnose_recovery(REASON)
    assert view.hint is not None and "pick a later instant" in view.hint


async def test_no_hint_while_recovering() -> None:
    view = await restore_view(ENGINE, RECOVERING)
    assert view.status == "recovering"
    assert view.hint is None


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def log_event(self, **event: Any) -> None:
        self.events.append(event)


async def test_the_restore_failed_event_has_the_hint() -> None:
    recorder = Recorder()
    tracker = RestoreTracker(cast(AuditLog, recorder))
    await tracker("MODIFIED", FAILED)
    await tracker("MODIFIED", FAILED)  # audited once
    (event,) = recorder.events
    assert event["action"] == "addon.restore_failed"
    assert event["details"]["reason"] == REASON
    assert event["details"]["hint"] == diagnose_recovery(REASON)


async def test_a_request_a_kill_left_unaudited_is_audited_from_its_cluster() -> None:
    """The service died between storing the recovery Cluster and auditing the request: the
    first run that sees the Cluster writes the event, with the id the request handler
    would have used (one row, whoever writes it)."""
    request = {
        "timestamp": "2026-05-01T02:00:00Z",
        "target": "new_cluster",
        "requested_by": "tenant:acme",
        "request_id": "req-1",
        "restores_to": "2026-05-01T02:00:00Z",
        "incarnation": "db-acme-app-1-s1",
        "fingerprint": "f",
    }
    cluster = copy.deepcopy(RECOVERING)
    cluster["metadata"]["annotations"][naming.ANNOTATION_RESTORE_REQUEST] = json.dumps(request)
    recorder = Recorder()
    tracker = RestoreTracker(cast(AuditLog, recorder))
    await tracker("SYNC", cluster)
    await tracker("MODIFIED", cluster)
    (event,) = recorder.events
    assert event["action"] == "addon.restore_pitr"
    assert event["actor"] == "tenant:acme"
    assert event["request_id"] == "req-1"
    assert event["event_id"] == uuid.uuid5(RESTORE_NAMESPACE, "0123abcd:requested")
    assert event["details"] == {
        "addon_id": "db-acme-app-1",
        "app_id": "app-1",
        "timestamp": "2026-05-01T02:00:00Z",
        "restore_id": "0123abcd",
        "target": "new_cluster",
        "cluster_name": "db-acme-app-1-r0123abcd",
        "backup_id": None,
        "restores_to": "2026-05-01T02:00:00Z",
        "message": None,
        "incarnation": "db-acme-app-1-s1",
        "recovery_target": None,
        "actor": "tenant:acme",
        "request_id": "req-1",
    }
