"""The restore use-case (``restore_addon_pitr``): validate, resolve the target, create a NEW
cluster from the source's archive (``create_recovery_cluster``), audit.

Nothing is created unless every check passes: PostgreSQL silently restores the wrong data
for a target before the first backup, and never finishes for one after the last archived
WAL (LOCAL_PIPELINE.md gotchas 5 and 6), so the window is enforced here, up front.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from paas_pitr.addons import AddonService, cluster_version
from paas_pitr.audit import AuditLog
from paas_pitr.backups import BackupService
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import (
    BackupEnd,
    PointInTime,
    RecoveryManifests,
    RecoveryTarget,
    build_recovery_cluster,
)
from paas_pitr.cnpg.projections import (
    BackupStatus,
    RecoverabilityWindow,
    RestoreState,
    restore_state,
)
from paas_pitr.context import Caller
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import (
    Conflict,
    InvalidInput,
    NoBackupForTarget,
    NotFound,
    NotImplementedYet,
    OutsideRecoverabilityWindow,
    PitrError,
    PlanHasNoBackups,
    TimestampInFuture,
)
from paas_pitr.names import validate_label
from paas_pitr.plans import Tier, policy_for, tier_for_plan
from paas_pitr.timestamps import format_api_time, parse_k8s_time, parse_timestamp

RestoreTargetKind = Literal["new_cluster", "in_place"]
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6f5b7e-4d0c-4c1e-9a52-7d3f4f2d9a10")


class InPlaceNotAvailable(NotImplementedYet):
    code = "in_place_not_available"


class IdempotencyKeyReused(InvalidInput):
    code = "idempotency_key_reused"


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
    reason: str | None = None
    created_at: str | None = None
    connection: dict[str, Any] | None = None


def _window_details(window: RecoverabilityWindow) -> dict[str, Any]:
    return {
        "window": {
            "earliest": format_api_time(window.earliest) if window.earliest else None,
            "latest": format_api_time(window.latest) if window.latest else None,
        }
    }


async def create_recovery_cluster(engine: Engine, manifests: RecoveryManifests) -> Manifest:
    """Create the recovery objects; create-only, so an existing cluster is never overwritten."""
    created: list[Manifest] = []
    try:
        for obj in manifests.objects():
            created.append(await engine.create(obj))
    except PitrError:
        for obj in reversed(created):
            await engine.delete(obj["kind"], obj["metadata"]["name"])
        raise
    return created[-1]


class RestoreService:
    def __init__(self, addons: AddonService, backups: BackupService) -> None:
        self.addons = addons
        self.backups = backups
        self.engine = addons.engine

    async def restore_addon_pitr(
        self,
        caller: Caller,
        app_id: str,
        addon_id: str,
        *,
        timestamp: str,
        target: RestoreTargetKind = "new_cluster",
        idempotency_key: str | None = None,
    ) -> tuple[RestoreView, bool]:
        """Returns the restore and whether it was created by this call (``False``: replayed)."""
        moment = parse_timestamp(timestamp)
        now = datetime.now(UTC)
        if moment > now:
            raise TimestampInFuture(
                f"timestamp {format_api_time(moment)} is in the future",
                details={"timestamp": format_api_time(moment), "now": format_api_time(now)},
            )
        source = await self.addons.get_cluster(caller, app_id, addon_id)
        plan = source["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
        tier = tier_for_plan(plan)
        if not policy_for(tier).has_backups:
            raise PlanHasNoBackups(
                f"addon {addon_id!r} is on the {plan!r} plan, which has no backups to restore",
                details={"plan": plan},
            )

        request_fingerprint = hashlib.sha256(
            json.dumps(
                {"app": app_id, "addon": addon_id, "at": moment.isoformat(), "target": target},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        key_label = None
        if idempotency_key is not None:
            key_label = self._idempotency_label(caller, idempotency_key)
            replay = await self._replay(caller, key_label, request_fingerprint)
            if replay is not None:
                return replay, False

        state = await self.backups.archive_state(source)
        recovery_target = self._resolve_target(tier, moment, state)

        if target == "in_place":
            raise InPlaceNotAvailable(
                "in-place restore is not available yet; restore with target 'new_cluster' and "
                "switch the app over once the new cluster is verified",
                details={"supported_targets": ["new_cluster"]},
            )

        restore_id = (
            uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{caller.tenant}:{idempotency_key}").hex
            if idempotency_key is not None
            else uuid.uuid4().hex
        )
        request = {
            "timestamp": format_api_time(moment),
            "target": target,
            "app_id": app_id,
            "requested_by": caller.actor,
            "requested_at": format_api_time(now),
            "fingerprint": request_fingerprint,
        }
        if isinstance(recovery_target, BackupEnd):
            request["backup_id"] = recovery_target.backup_id
            if recovery_target.ends_at is not None:
                request["restores_to"] = format_api_time(recovery_target.ends_at)
        else:
            request["restores_to"] = format_api_time(moment)
            base = self._base_backup_for(moment, state)
            if base is not None:
                request["backup_id"] = base
        config = await self.addons.render_config()
        extra_labels = {naming.LABEL_IDEMPOTENCY: key_label} if key_label else {}
        manifests = build_recovery_cluster(
            source_cluster=addon_id,
            tenant=caller.tenant,
            app=app_id,
            restore_id=restore_id,
            target=recovery_target,
            plan=plan,
            version=cluster_version(source),
            config=config,
            extra_labels=extra_labels,
            annotations={naming.ANNOTATION_RESTORE_REQUEST: json.dumps(request, sort_keys=True)},
        )
        try:
            cluster = await create_recovery_cluster(self.engine, manifests)
        except Conflict:
            if key_label is None:
                raise
            # A concurrent request with the same key won the race: answer with its restore.
            replay = await self._replay(caller, key_label, request_fingerprint)
            if replay is None:
                raise
            return replay, False
        self.addons.audit_event(
            caller,
            "addon.restore_pitr",
            addon_id,
            app_id=app_id,
            timestamp=format_api_time(moment),
            restore_id=restore_id,
            target=target,
            cluster_name=cluster["metadata"]["name"],
            backup_id=request.get("backup_id"),
            restores_to=request.get("restores_to"),
            actor=caller.actor,
            request_id=caller.request_id,
        )
        view = await self._view(cluster)
        view.status = "restore_triggered"
        return view, True

    # --- target resolution ---------------------------------------------------------------

    def _resolve_target(self, tier: Tier, moment: datetime, state: Any) -> RecoveryTarget:
        window: RecoverabilityWindow = state.window
        if tier is Tier.DAILY:
            chosen = max(
                (
                    b
                    for b in state.backups
                    if b.status is BackupStatus.COMPLETED
                    and b.stopped_at is not None
                    and b.stopped_at <= moment
                    and b.backup_id
                ),
                key=lambda b: b.stopped_at,
                default=None,
            )
            if chosen is None:
                raise NoBackupForTarget(
                    f"no completed base backup ends at or before {format_api_time(moment)}",
                    details={"timestamp": format_api_time(moment), **_window_details(window)},
                )
            assert chosen.backup_id is not None
            return BackupEnd(chosen.backup_id, chosen.stopped_at)
        if not window.contains(moment):
            if window.earliest is None:
                reason = "there is no completed base backup yet"
            elif window.latest is None:
                reason = "no WAL has been archived yet, so no instant is restorable"
            elif moment < window.earliest:
                reason = "it is before the end of the oldest base backup"
            else:
                reason = "it is after the newest archived WAL"
            raise OutsideRecoverabilityWindow(
                f"timestamp {format_api_time(moment)} is outside the recoverability window: "
                f"{reason}",
                details={"timestamp": format_api_time(moment), **_window_details(window)},
            )
        return PointInTime(moment)

    @staticmethod
    def _base_backup_for(moment: datetime, state: Any) -> str | None:
        candidates = [
            b
            for b in state.backups
            if b.status is BackupStatus.COMPLETED and b.stopped_at and b.stopped_at <= moment
        ]
        best = max(candidates, key=lambda b: b.stopped_at, default=None)
        return best.backup_id if best else None

    # --- idempotency -------------------------------------------------------------------

    @staticmethod
    def _idempotency_label(caller: Caller, key: str) -> str:
        if not key or len(key) > 255 or not key.isprintable():
            raise InvalidInput(
                "Idempotency-Key must be 1-255 printable characters",
                details={"header": "Idempotency-Key"},
            )
        digest = hashlib.sha256(f"{caller.tenant}:{key}".encode()).hexdigest()[:40]
        return validate_label(digest, what="idempotency key")

    async def _replay(self, caller: Caller, key_label: str, fingerprint: str) -> RestoreView | None:
        found = await self.engine.list(
            "Cluster", {naming.LABEL_IDEMPOTENCY: key_label, naming.LABEL_TENANT: caller.tenant}
        )
        if not found:
            return None
        cluster = found[0]
        request = _request_of(cluster)
        if request.get("fingerprint") != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different restore request",
                details={"restore_id": cluster["metadata"]["labels"].get(naming.LABEL_RESTORE_ID)},
            )
        return await self._view(cluster)

    # --- reads -------------------------------------------------------------------------

    async def _view(self, cluster: Manifest) -> RestoreView:
        labels = cluster["metadata"].get("labels", {})
        request = _request_of(cluster)
        state, reason = restore_state(cluster)
        return RestoreView(
            restore_id=labels.get(naming.LABEL_RESTORE_ID, ""),
            app_id=labels.get(naming.LABEL_APP, ""),
            addon_id=labels.get(naming.LABEL_ADDON, ""),
            status=state.value,
            timestamp=request.get("timestamp", ""),
            target=request.get("target", "new_cluster"),
            cluster_name=cluster["metadata"]["name"],
            backup_id=request.get("backup_id"),
            restores_to=request.get("restores_to"),
            reason=reason,
            created_at=_api_time(cluster["metadata"].get("creationTimestamp")),
            connection=await self.engine.connection_info(cluster),
        )

    async def _restore_clusters(self, caller: Caller, app_id: str, addon_id: str) -> list[Manifest]:
        await self.addons.get_cluster(caller, app_id, addon_id)
        return await self.engine.list(
            "Cluster",
            {
                naming.LABEL_TENANT: caller.tenant,
                naming.LABEL_APP: app_id,
                naming.LABEL_ADDON: addon_id,
                naming.LABEL_ROLE: naming.ROLE_RESTORE,
            },
        )

    async def list_restores(self, caller: Caller, app_id: str, addon_id: str) -> list[RestoreView]:
        views = [
            await self._view(c) for c in await self._restore_clusters(caller, app_id, addon_id)
        ]
        return sorted(views, key=lambda v: v.created_at or "", reverse=True)

    async def get(self, caller: Caller, app_id: str, addon_id: str, restore_id: str) -> RestoreView:
        for cluster in await self._restore_clusters(caller, app_id, addon_id):
            if cluster["metadata"].get("labels", {}).get(naming.LABEL_RESTORE_ID) == restore_id:
                return await self._view(cluster)
        raise NotFound(f"restore {restore_id!r} not found")


class RestoreTracker:
    """Audits each restore's outcome once (``addon.restore_ready`` / ``addon.restore_failed``)
    as the engine reports recovery Clusters changing. Event ids derive from the restore and
    its outcome, so replicas watching the same cluster, and re-deliveries, write one row."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.reported: dict[str, RestoreState] = {}

    async def __call__(self, event_type: str, cluster: Manifest) -> None:
        labels = cluster.get("metadata", {}).get("labels") or {}
        restore_id = labels.get(naming.LABEL_RESTORE_ID)
        if labels.get(naming.LABEL_ROLE) != naming.ROLE_RESTORE or not restore_id:
            return
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
                **{k: v for k, v in _request_of(cluster).items() if k != "fingerprint"},
            },
            event_id=uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{restore_id}:{state.value}"),
        )


def _request_of(cluster: Manifest) -> dict[str, Any]:
    raw = cluster["metadata"].get("annotations", {}).get(naming.ANNOTATION_RESTORE_REQUEST)
    try:
        loaded = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _api_time(value: object) -> str | None:
    parsed = parse_k8s_time(value)
    return format_api_time(parsed) if parsed else None
