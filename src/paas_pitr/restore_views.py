"""Restores as users see them: a recovery Cluster (its labels, the request recorded in its
annotation, its status) -> :class:`RestoreView`, and :class:`RestoreTracker`, which audits
each restore's outcome once as the engine reports recovery Clusters changing.

Both read only the Cluster, so every replica of the control plane and either engine agree.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, Field

from paas_pitr.audit import AuditLog
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.diagnosis import diagnose_recovery
from paas_pitr.cnpg.projections import RestoreState, restore_state
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.switchover.record import Phase
from paas_pitr.switchover.views import MOVED, in_place_hint, in_place_view
from paas_pitr.timestamps import format_api_time, parse_k8s_time

# The statuses a restore ends in: ``ready`` (into a new cluster), ``switched`` or ``undone``
# (in place: an undone restore is not switched again), ``failed``. Any other status is still
# under way; the CLI's waits and the dashboard's polling stop at these.
FINISHED_STATUSES = frozenset(
    {RestoreState.READY.value, RestoreState.FAILED.value, Phase.SWITCHED.value, Phase.UNDONE.value}
)

# Restore ids (from an Idempotency-Key) and the ids of their audit events derive from it.
RESTORE_NAMESPACE = uuid.UUID("0b6f5b7e-4d0c-4c1e-9a52-7d3f4f2d9a10")


class RestoreView(BaseModel):
    restore_id: str
    app_id: str
    addon_id: str
    status: str
    timestamp: str
    target: str
    cluster_name: str
    backup_id: str | None = None
    restores_to: str | None = None
    message: str | None = None
    reason: str | None = None
    hint: str | None = Field(
        default=None, description="What to do about a failed restore (null otherwise)"
    )
    created_at: str | None = None
    connection: dict[str, Any] | None = None
    incarnation: str | None = Field(
        default=None, description="The server folder (incarnation) the restore reads from"
    )
    switch: dict[str, Any] | None = Field(
        default=None,
        description="In-place restores: the switch (checks, times, the addon's unavailability "
        "in seconds) and the cluster kept for an undo (`kept`: where it is and how to reach "
        "it); null for a restore into a new cluster",
    )
    recovery_target: dict[str, Any] | None = Field(
        default=None,
        description="What was asked besides a timestamp: {kind: latest|lsn|xid|restore_point|"
        "before_event, value, inclusive}",
    )


async def restore_view(engine: Engine, cluster: Manifest) -> RestoreView:
    """The restore a recovery Cluster is, with its connection once the engine has one."""
    labels = cluster["metadata"].get("labels", {})
    request = request_of(cluster)
    state, reason = restore_state(cluster)
    status, switch = state.value, None
    connection = await engine.connection_info(cluster)
    hint = hint_for(state, reason)
    if request.get("target") == "in_place":
        status, reason, switch = in_place_view(cluster, status, reason)
        hint = hint or in_place_hint(cluster)
        if status in MOVED:
            connection = None  # the restored data is behind the addon's own connection
        elif hint is not None and in_place_hint(cluster) is not None:
            connection = None  # hibernated once its verification failed: no server
    return RestoreView(
        restore_id=labels.get(naming.LABEL_RESTORE_ID, ""),
        app_id=labels.get(naming.LABEL_APP, ""),
        addon_id=labels.get(naming.LABEL_ADDON, ""),
        status=status,
        timestamp=request.get("timestamp", ""),
        target=request.get("target", "new_cluster"),
        cluster_name=cluster["metadata"]["name"],
        backup_id=request.get("backup_id"),
        restores_to=request.get("restores_to"),
        message=request.get("message"),
        reason=reason,
        hint=hint,
        created_at=_api_time(cluster["metadata"].get("creationTimestamp")),
        connection=connection,
        incarnation=request.get("incarnation"),
        switch=switch,
        recovery_target=request.get("recovery_target"),
    )


def log_request(audit: AuditLog, cluster: Manifest) -> None:
    """Audit a restore's request (``addon.restore_pitr``) from its recovery Cluster: the
    requester and the request as its annotation records them.

    The event id derives from the restore, so the request handler (right after creating the
    Cluster) and :class:`RestoreTracker` (whenever a run first sees the Cluster: a service
    killed in between never wrote it) write one row."""
    labels = cluster["metadata"].get("labels") or {}
    request = request_of(cluster)
    restore_id = labels.get(naming.LABEL_RESTORE_ID, "")
    addon_id = labels.get(naming.LABEL_ADDON, "")
    actor = str(request.get("requested_by") or "")
    audit.log_event(
        actor=actor,
        action="addon.restore_pitr",
        target_type="addon",
        target_id=addon_id,
        details={
            "addon_id": addon_id,
            "app_id": labels.get(naming.LABEL_APP),
            "timestamp": request.get("timestamp"),
            "restore_id": restore_id,
            "target": request.get("target", "new_cluster"),
            "cluster_name": cluster["metadata"]["name"],
            "backup_id": request.get("backup_id"),
            "restores_to": request.get("restores_to"),
            "message": request.get("message"),
            "incarnation": request.get("incarnation"),
            "recovery_target": request.get("recovery_target"),
            "actor": actor,
            "request_id": request.get("request_id"),
        },
        request_id=request.get("request_id"),
        event_id=uuid.uuid5(RESTORE_NAMESPACE, f"{restore_id}:requested"),
    )


class RestoreTracker:
    """Audits each restore's outcome once (``addon.restore_ready`` / ``addon.restore_failed``)
    as the engine reports recovery Clusters changing, and its request if no run did (see
    :func:`log_request`). Event ids derive from the restore and its outcome, so replicas
    watching the same cluster, and re-deliveries, write one row."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.reported: dict[str, RestoreState] = {}
        self.requests_seen: set[str] = set()

    async def __call__(self, event_type: str, cluster: Manifest) -> None:
        labels = cluster.get("metadata", {}).get("labels") or {}
        restore_id = labels.get(naming.LABEL_RESTORE_ID)
        if labels.get(naming.LABEL_ROLE) != naming.ROLE_RESTORE or not restore_id:
            return
        if restore_id not in self.requests_seen and request_of(cluster).get("requested_by"):
            self.requests_seen.add(restore_id)
            log_request(self.audit, cluster)
        state, reason = restore_state(cluster)
        if state not in (RestoreState.READY, RestoreState.FAILED):
            return
        if self.reported.get(restore_id) is state:
            return
        self.reported[restore_id] = state
        self.audit.log_event(
            actor="system:paas-pitr",
            action=f"addon.restore_{state.value}",
            target_type="addon",
            target_id=labels.get(naming.LABEL_ADDON, ""),
            details={
                "app_id": labels.get(naming.LABEL_APP),
                "addon_id": labels.get(naming.LABEL_ADDON),
                "restore_id": restore_id,
                "cluster_name": cluster["metadata"]["name"],
                "reason": reason,
                "hint": hint_for(state, reason),
                **{
                    k: v
                    for k, v in request_of(cluster).items()
                    if k not in ("fingerprint", "request_id")
                },
            },
            event_id=uuid.uuid5(RESTORE_NAMESPACE, f"{restore_id}:{state.value}"),
        )


def hint_for(state: RestoreState, reason: str | None) -> str | None:
    """What to do about a failed restore; ``None`` for any other state."""
    return diagnose_recovery(reason) if state is RestoreState.FAILED else None


def request_of(cluster: Manifest) -> dict[str, Any]:
    raw = cluster["metadata"].get("annotations", {}).get(naming.ANNOTATION_RESTORE_REQUEST)
    try:
        loaded = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _api_time(value: object) -> str | None:
    parsed = parse_k8s_time(value)
    return format_api_time(parsed) if parsed else None
