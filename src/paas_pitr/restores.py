"""The restore use-case (``restore_addon_pitr``): validate, resolve the target, create a NEW
cluster from the source's archive (``create_recovery_cluster``), audit.

Nothing is created unless every check passes: PostgreSQL silently restores the wrong data
for a target before the first backup, and never finishes for one after the last archived
WAL, so the window is enforced up front (:mod:`paas_pitr.restore_targets`). Restores are
read back from their recovery Clusters (:mod:`paas_pitr.restore_views`).

Over 400 lines on purpose: a restore of the live addon, of a deleted incarnation, a retried
(idempotent) one and the creation they end in are one request flow, best read in one place.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from paas_pitr.addons import AddonService
from paas_pitr.archives import ArchiveService
from paas_pitr.backups import BackupService
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import (
    BackupEnd,
    PointInTime,
    RecoveryManifests,
    RecoveryTarget,
    build_recovery_cluster,
)
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.cnpg.projections import cluster_version
from paas_pitr.context import Caller
from paas_pitr.crashpoints import crash_point
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import (
    ArchiveBucketNotConfigured,
    Conflict,
    IdempotencyKeyReused,
    InPlaceNotAvailable,
    InvalidInput,
    InvalidRecoveryTarget,
    NotFound,
    PitrError,
    PlanHasNoBackups,
    TimestampInFuture,
)
from paas_pitr.events.service import EventService
from paas_pitr.incarnations import resolve_target
from paas_pitr.names import validate_label
from paas_pitr.plans import policy_for, tier_for_plan
from paas_pitr.quotas import check_restore_limits
from paas_pitr.recovery_targets import TargetAsk, TargetResolver, parse_target_ask
from paas_pitr.restore_points import RestorePointService
from paas_pitr.restore_targets import base_backup_for, resolve_live_target, what_you_get
from paas_pitr.restore_views import RestoreView, log_request, request_of, restore_view
from paas_pitr.switchover.expired import expired_restores
from paas_pitr.switchover.record import ANNOTATION_UNVERIFIED
from paas_pitr.switchover.service import refuse_while_switching, supports_in_place
from paas_pitr.timestamps import format_api_time, parse_timestamp

RestoreTargetKind = Literal["new_cluster", "in_place"]


def _fingerprint(
    app_id: str,
    addon_id: str,
    moment: datetime,
    target: RestoreTargetKind,
    incarnation: str | None = None,
    spec: TargetAsk | None = None,
) -> str:
    """What makes two requests with one Idempotency-Key the same request."""
    body: dict[str, str] = {
        "app": app_id,
        "addon": addon_id,
        "at": moment.isoformat(),
        "target": target,
    }
    if incarnation is not None:
        body["incarnation"] = incarnation
    if spec is not None:
        # Any target but an instant: "at" is the time of the request, not part of it.
        body["at"] = ""
        body["recovery_target"] = spec.fingerprint()
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _refuse_in_place(engine: Engine, target: RestoreTargetKind) -> None:
    # Checked after the target is validated: an in-place request gets the same window errors.
    if target == "in_place" and not supports_in_place(engine):
        raise InPlaceNotAvailable(
            f"in-place restore is not available on the {engine.name} engine; restore with "
            "target 'new_cluster' and switch the app over once the new cluster is verified",
            details={"supported_targets": ["new_cluster"]},
        )


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


@dataclass(frozen=True, slots=True)
class _Ask:
    """A restore request once parsed, as every step after the first checks reads it."""

    caller: Caller
    app_id: str
    addon_id: str
    moment: datetime
    now: datetime
    target: RestoreTargetKind
    idempotency_key: str | None
    key_label: str | None
    fingerprint: str
    spec: TargetAsk | None = None
    """A target other than an instant (latest, lsn, xid, restore point, before an event)."""


class RestoreService:
    def __init__(
        self,
        addons: AddonService,
        backups: BackupService,
        archives: ArchiveService | None = None,
        targets: TargetResolver | None = None,
    ) -> None:
        self.addons = addons
        self.backups = backups
        self.engine = addons.engine
        # The incarnations in the bucket: restores of a deleted or an earlier incarnation.
        self.archives = archives or ArchiveService(addons, addons.audit)
        self.targets = targets or TargetResolver(EventService(addons), RestorePointService(addons))

    async def restore_addon_pitr(
        self,
        caller: Caller,
        app_id: str,
        addon_id: str,
        *,
        timestamp: str | None = None,
        target: RestoreTargetKind = "new_cluster",
        idempotency_key: str | None = None,
        incarnation: str | None = None,
        lsn: str | None = None,
        xid: str | int | None = None,
        restore_point: str | None = None,
        before_event: str | None = None,
        inclusive: bool | None = None,
    ) -> tuple[RestoreView, bool]:
        """Returns the restore and whether it was created by this call (``False``: replayed).

        ``incarnation`` (a server folder of the addon id) restores from that incarnation's
        archive: also once the addon is deleted, or re-created under a new folder. Exactly
        one target: ``timestamp`` (an instant, or ``"latest"``), ``lsn``, ``xid``,
        ``restore_point`` or ``before_event`` (see :mod:`paas_pitr.recovery_targets`).
        """
        asked = parse_target_ask(
            timestamp=timestamp,
            lsn=lsn,
            xid=xid,
            restore_point=restore_point,
            before_event=before_event,
            inclusive=inclusive,
        )
        now = datetime.now(UTC)
        spec = None if asked.kind == "timestamp" else asked
        moment = parse_timestamp(asked.value) if spec is None else now
        if moment > now:
            raise TimestampInFuture(
                f"timestamp {format_api_time(moment)} is in the future",
                details={"timestamp": format_api_time(moment), "now": format_api_time(now)},
            )
        # A retry is answered with what the first request made, whatever happened to the
        # addon since (deleted, re-created): the fingerprint is of the request as sent.
        request_fingerprint = _fingerprint(app_id, addon_id, moment, target, incarnation, spec)
        key_label, replay = await self._seen(caller, idempotency_key, request_fingerprint)
        if replay is not None:
            return replay, False
        ask = _Ask(
            caller,
            app_id,
            addon_id,
            moment,
            now,
            target,
            idempotency_key,
            key_label,
            request_fingerprint,
            spec,
        )
        if incarnation is not None:
            live = await self.archives.live(caller, app_id, addon_id)
            if live is None or incarnation_server_name_of(live) != incarnation:
                if spec is not None:
                    raise InvalidRecoveryTarget(
                        "a restore from an earlier or deleted incarnation targets a timestamp",
                        details={"kind": spec.kind, "incarnation": incarnation},
                    )
                return await self._restore_incarnation(ask, incarnation)
        source = await self.addons.get_cluster(caller, app_id, addon_id)
        plan = source["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
        tier = tier_for_plan(plan)
        state = await self.backups.archive_state(source)
        # On a plan without backups, what was archived before (while on another plan) stays
        # restorable: the window lists it, and a restore to it is served.
        if not policy_for(tier).has_backups and not state.window.ranges:
            raise PlanHasNoBackups(
                f"addon {addon_id!r} is on the {plan!r} plan, which has no backups to restore; "
                "move it to a plan with backups (standard or pro) to start archiving",
                details={"plan": plan},
            )
        if spec is not None:
            resolved = await self.targets.resolve(caller, app_id, source, tier, state, spec)
            _refuse_in_place(self.engine, target)
            return await self._launch(
                ask,
                recovery_target=resolved.target,
                base_backup=resolved.backup_id,
                plan=plan,
                version=cluster_version(source),
                source_server=incarnation_server_name_of(source),
                restores_to=resolved.restores_to,
            )
        recovery_target = resolve_live_target(tier, moment, state)
        if asked.inclusive is False and isinstance(recovery_target, PointInTime):
            recovery_target = PointInTime(moment, inclusive=False)
        _refuse_in_place(self.engine, target)
        chosen = state.window.range_for(moment)
        if chosen is not None and chosen.server_name != incarnation_server_name_of(source):
            # A range of an incarnation the addon was switched away from: its own folder.
            return await self._restore_incarnation(ask, chosen.server_name)

        base = None if isinstance(recovery_target, BackupEnd) else base_backup_for(moment, state)
        return await self._launch(
            ask,
            recovery_target=recovery_target,
            base_backup=base,
            plan=plan,
            version=cluster_version(source),
            source_server=incarnation_server_name_of(source),
        )

    async def _restore_incarnation(self, ask: _Ask, incarnation: str) -> tuple[RestoreView, bool]:
        """A restore from an incarnation that is not the live one. No Cluster is left to
        say what it was: its range comes from its folder in the bucket, its plan from the
        record of its deletion, its PostgreSQL major from its base backups."""
        addon_id = ask.addon_id
        _, chosen = await self.archives.incarnation(ask.caller, ask.app_id, addon_id, incarnation)
        plan = chosen.plan or "free"
        if not policy_for(chosen.tier).has_backups:
            raise PlanHasNoBackups(
                f"incarnation {incarnation!r} of addon {addon_id!r} was on the {plan!r} plan, "
                "which has no backups to restore",
                details={"plan": plan, "incarnation": incarnation},
            )
        recovery_target, base = resolve_target(chosen, ask.moment)
        _refuse_in_place(self.engine, ask.target)
        if (
            ask.target == "in_place"
            and await self.archives.live(ask.caller, ask.app_id, addon_id) is None
        ):
            raise InPlaceNotAvailable(
                f"addon {addon_id!r} is deleted: there is no addon to switch to the restored "
                "cluster; restore with target 'new_cluster'",
                details={"supported_targets": ["new_cluster"]},
            )
        return await self._launch(
            ask,
            recovery_target=recovery_target,
            base_backup=base.backup_id if base is not None else None,
            plan=plan,
            version=chosen.version_for(
                base, self.engine.default_version() or self.addons.settings.default_pg_version
            ),
            source_server=chosen.server_name,
        )

    async def _launch(
        self,
        ask: _Ask,
        *,
        recovery_target: RecoveryTarget,
        base_backup: str | None,
        plan: str,
        version: str | None,
        source_server: str,
        restores_to: datetime | None = None,
    ) -> tuple[RestoreView, bool]:
        """Every check has passed: create the recovery cluster from ``source_server``'s
        folder, audit, answer."""
        caller, app_id, addon_id, moment = ask.caller, ask.app_id, ask.addon_id, ask.moment
        target, key_label, fingerprint = ask.target, ask.key_label, ask.fingerprint
        # The id names the recovery cluster: random, or for a keyed request derived with the
        # server's key, so a retry finds it and nobody else can compute (and take) its name.
        restore_id = (
            self.addons.name_key.restore_id(caller.tenant, ask.idempotency_key)
            if ask.idempotency_key is not None
            else uuid.uuid4().hex
        )
        request: dict[str, Any] = {
            "timestamp": format_api_time(moment),
            "target": target,
            "app_id": app_id,
            "requested_by": caller.actor,
            "requested_at": format_api_time(ask.now),
            "fingerprint": fingerprint,
            "incarnation": source_server,
            "request_id": caller.request_id,
        }
        if isinstance(recovery_target, BackupEnd):
            request["backup_id"] = recovery_target.backup_id
            if recovery_target.ends_at is not None:
                request["restores_to"] = format_api_time(recovery_target.ends_at)
            request["message"] = what_you_get(
                moment, recovery_target.backup_id, recovery_target.ends_at
            )
        else:
            request["restores_to"] = format_api_time(moment)
            if base_backup is not None:
                request["backup_id"] = base_backup
                if isinstance(recovery_target, PointInTime):
                    # The operator restores the base backup chosen here, without listing
                    # the catalog again.
                    recovery_target = replace(recovery_target, backup_id=base_backup)
        if ask.spec is not None:
            request["recovery_target"] = ask.spec.describe()
            request["timestamp"] = format_api_time(restores_to) if restores_to else ""
            request.pop("restores_to", None)
            if restores_to is not None:
                request["restores_to"] = format_api_time(restores_to)
        await check_restore_limits(self.engine, self.addons.settings, caller, app_id, addon_id)
        config = await self.addons.render_config()
        extra_labels = {naming.LABEL_IDEMPOTENCY: key_label} if key_label else {}
        manifests = build_recovery_cluster(
            source_cluster=addon_id,
            source_server_name=source_server,
            # An in-place restore's incarnation becomes the addon's own: a folder of the
            # addon id, so it is listed, recorded and expired like the addon's others.
            server_name=naming.incarnation_server_name(
                addon_id
                if target == "in_place"
                else naming.recovery_cluster_name(addon_id, restore_id)
            ),
            tenant=caller.tenant,
            app=app_id,
            restore_id=restore_id,
            target=recovery_target,
            plan=plan,
            version=version,
            config=config,
            extra_labels=extra_labels,
            annotations={
                naming.ANNOTATION_RESTORE_REQUEST: json.dumps(request, sort_keys=True),
                **({ANNOTATION_UNVERIFIED: "true"} if target == "in_place" else {}),
            },
        )
        try:
            cluster = await create_recovery_cluster(self.engine, manifests)
        except Conflict:
            if key_label is None:
                raise
            # A concurrent request with the same key won the race: answer with its restore.
            replay = await self._replay(caller, key_label, fingerprint)
            if replay is None:
                raise
            return replay, False
        crash_point("restore.cluster_written")
        log_request(self.addons.audit, cluster)
        view = await restore_view(self.engine, cluster)
        view.status = "restore_triggered"
        return view, True

    # --- idempotency -------------------------------------------------------------------

    async def _seen(
        self, caller: Caller, idempotency_key: str | None, fingerprint: str
    ) -> tuple[str | None, RestoreView | None]:
        """The key's label, and the restore it already made (``None``: a new request)."""
        if idempotency_key is None:
            return None, None
        key_label = self._idempotency_label(caller, idempotency_key)
        return key_label, await self._replay(caller, key_label, fingerprint)

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
        request = request_of(cluster)
        if request.get("fingerprint") != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different restore request",
                details={"restore_id": cluster["metadata"]["labels"].get(naming.LABEL_RESTORE_ID)},
            )
        return await restore_view(self.engine, cluster)

    # --- reads -------------------------------------------------------------------------

    async def _restore_clusters(self, caller: Caller, app_id: str, addon_id: str) -> list[Manifest]:
        try:
            await self.addons.get_cluster(caller, app_id, addon_id)
            live = True
        except NotFound:
            live = False
        found = await self.engine.list(
            "Cluster",
            {
                naming.LABEL_TENANT: caller.tenant,
                naming.LABEL_APP: app_id,
                naming.LABEL_ADDON: addon_id,
                naming.LABEL_ROLE: naming.ROLE_RESTORE,
            },
        )
        if not live and not found:
            # A deleted addon's restores stay listable (they carry the caller's tenant
            # label); with none, the addon id exists for the caller while its archive does.
            try:
                archived = await self.archives.has_incarnations(caller, app_id, addon_id)
            except ArchiveBucketNotConfigured:
                archived = False
            if not archived:
                raise NotFound(f"addon {addon_id!r} not found in app {app_id!r}")
        return found

    async def delete(self, caller: Caller, app_id: str, addon_id: str, restore_id: str) -> None:
        """Delete a restore's cluster (its own archive folder is kept, as for any cluster);
        audited as ``addon.restore_delete``. ``NotFound`` like a missing restore otherwise."""
        for cluster in await self._restore_clusters(caller, app_id, addon_id):
            if cluster["metadata"].get("labels", {}).get(naming.LABEL_RESTORE_ID) != restore_id:
                continue
            refuse_while_switching(cluster)
            name = cluster["metadata"]["name"]
            await self.engine.delete("Cluster", name)
            await self.engine.delete("ObjectStore", naming.object_store_name(name))
            self.addons.audit_event(
                caller,
                "addon.restore_delete",
                addon_id,
                app_id=app_id,
                restore_id=restore_id,
                cluster_name=name,
            )
            return
        raise NotFound(f"restore {restore_id!r} not found")

    async def list_restores(self, caller: Caller, app_id: str, addon_id: str) -> list[RestoreView]:
        views = [
            await restore_view(self.engine, c)
            for c in await self._restore_clusters(caller, app_id, addon_id)
        ]
        views += await self._expired(caller, app_id, addon_id, {v.restore_id for v in views})
        return sorted(views, key=lambda v: v.created_at or "", reverse=True)

    async def _expired(
        self, caller: Caller, app_id: str, addon_id: str, listed: set[str]
    ) -> list[RestoreView]:
        """In-place restores whose kept cluster was deleted (``expired``)."""
        try:
            addon = await self.addons.get_cluster(caller, app_id, addon_id)
        except NotFound:
            return []
        return [v for v in expired_restores(addon) if v.restore_id not in listed]

    async def get(self, caller: Caller, app_id: str, addon_id: str, restore_id: str) -> RestoreView:
        for cluster in await self._restore_clusters(caller, app_id, addon_id):
            if cluster["metadata"].get("labels", {}).get(naming.LABEL_RESTORE_ID) == restore_id:
                return await restore_view(self.engine, cluster)
        for view in await self._expired(caller, app_id, addon_id, set()):
            if view.restore_id == restore_id:
                return view
        raise NotFound(f"restore {restore_id!r} not found")
