"""Addon use-cases: create (``create_addon_generic``), read, change plan, delete.

The Cluster object IS the addon: its labels name tenant, app, addon and plan. The control
plane keeps no state of its own, so several replicas can serve the same engine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from paas_pitr.audit import AuditLog
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import (
    AddonManifests,
    RenderConfig,
    build_addon_manifests,
    build_scheduled_backup,
)
from paas_pitr.cnpg.history import (
    incarnation_annotations,
    incarnation_server_name_of,
    switch_archiving,
)
from paas_pitr.cnpg.projections import (
    cluster_version,
    condition,
)
from paas_pitr.context import Caller
from paas_pitr.drills.records import LastDrill
from paas_pitr.engines.base import Engine, Kind, Manifest, is_terminating
from paas_pitr.errors import AddonExists, InvalidInput, NotFound, PitrError
from paas_pitr.names import (
    NameKey,
    default_addon_id,
    validate_addon_id,
    validate_app,
    validate_own_addon_id,
)
from paas_pitr.plans import policy_for, tier_for_plan
from paas_pitr.quotas import check_addon_limit
from paas_pitr.settings import Settings
from paas_pitr.switchover.expired import ANNOTATION_EXPIRED_RESTORES
from paas_pitr.switchover.guards import refuse_while_addon_switching
from paas_pitr.switchover.record import ANNOTATION_SWITCHED_FROM
from paas_pitr.timestamps import format_api_time, parse_k8s_time
from paas_pitr.tombstones import record_deletion, switched_history

log = logging.getLogger(__name__)
# Kept on the addon's Cluster across plan changes (they are history, not plan).
CARRIED_ANNOTATIONS = (ANNOTATION_SWITCHED_FROM, ANNOTATION_EXPIRED_RESTORES)
_VERSION = re.compile(r"^[1-9][0-9]?(\.[0-9]+)?$")


class BackupSettingsView(BaseModel):
    retention: str
    schedule: str | None = None
    destination: str
    server_name: str
    point_in_time: bool


class AddonView(BaseModel):
    addon_id: str
    app_id: str
    tenant: str
    plan: str
    tier: str
    version: str | None
    cluster_name: str
    namespace: str | None
    phase: str | None
    ready: bool
    created_at: datetime | None
    backups: BackupSettingsView | None
    connection: dict[str, Any] | None = None
    last_drill: LastDrill | None = None


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidInput(
            f"version {version!r} is not a PostgreSQL major version such as '16'",
            details={"version": version},
        )
    return version


class AddonService:
    def __init__(
        self, engine: Engine, settings: Settings, audit: AuditLog, *, name_key: NameKey
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.audit = audit
        # Derives the names requests create that nobody else may compute (restores).
        self.name_key = name_key
        # The addon's newest finished restore drill (set by paas_pitr.drills).
        self.last_drill_of: Callable[[Manifest], Awaitable[LastDrill | None]] | None = None

    async def render_config(self) -> RenderConfig:
        return RenderConfig.from_settings(
            self.settings,
            mode=await self.engine.cnpg_mode(),
            endpoint_url=self.engine.endpoint_url(),
        )

    def audit_event(self, caller: Caller, action: str, addon_id: str, **details: Any) -> None:
        """Every use-case audits the same way: the caller as actor, the addon as target."""
        self.audit.log_event(
            actor=caller.actor,
            action=action,
            target_type="addon",
            target_id=addon_id,
            details={"addon_id": addon_id, **details},
            request_id=caller.request_id,
        )

    # --- lookups -----------------------------------------------------------------------

    async def get_cluster(self, caller: Caller, app_id: str, addon_id: str) -> Manifest:
        """The addon's Cluster, or ``NotFound``: another tenant's addon looks exactly like
        one that does not exist."""
        validate_app(app_id)
        cluster = await self.engine.get("Cluster", validate_addon_id(addon_id))
        labels = (cluster or {}).get("metadata", {}).get("labels", {})
        if (
            cluster is None
            or is_terminating(cluster)
            or labels.get(naming.LABEL_TENANT) != caller.tenant
            or labels.get(naming.LABEL_APP) != app_id
            or labels.get(naming.LABEL_ROLE) != naming.ROLE_ADDON
        ):
            raise NotFound(f"addon {addon_id!r} not found in app {app_id!r}")
        return cluster

    async def find_cluster(self, caller: Caller, addon_id: str) -> Manifest:
        """Legacy flat paths: the addon looked up within the caller's tenant only."""
        cluster = await self.engine.get("Cluster", validate_addon_id(addon_id))
        labels = (cluster or {}).get("metadata", {}).get("labels", {})
        if (
            cluster is None
            or is_terminating(cluster)
            or labels.get(naming.LABEL_TENANT) != caller.tenant
            or labels.get(naming.LABEL_ROLE) != naming.ROLE_ADDON
        ):
            raise NotFound(f"addon {addon_id!r} not found")
        return cluster

    async def view(self, cluster: Manifest) -> AddonView:
        metadata = cluster["metadata"]
        labels = metadata.get("labels", {})
        plan = labels.get(naming.LABEL_PLAN, "free")
        tier = tier_for_plan(plan)
        policy = policy_for(tier)
        status = cluster.get("status") or {}
        ready = condition(cluster, "Ready")
        backups = None
        if policy.has_backups and policy.retention:
            scheduled = await self.engine.get(
                "ScheduledBackup", naming.scheduled_backup_name(metadata["name"])
            )
            backups = BackupSettingsView(
                retention=policy.retention,
                schedule=(scheduled or {}).get("spec", {}).get("schedule"),
                destination=naming.destination_path(
                    labels[naming.LABEL_TENANT], labels[naming.LABEL_APP], self.settings.bucket
                ),
                server_name=incarnation_server_name_of(cluster),
                point_in_time=policy.point_in_time,
            )
        return AddonView(
            addon_id=metadata["name"],
            app_id=labels.get(naming.LABEL_APP, ""),
            tenant=labels.get(naming.LABEL_TENANT, ""),
            plan=plan,
            tier=tier.value,
            version=cluster_version(cluster),
            cluster_name=metadata["name"],
            namespace=metadata.get("namespace"),
            phase=status.get("phase"),
            ready=bool(ready and ready.get("status") == "True"),
            created_at=parse_k8s_time(metadata.get("creationTimestamp")),
            backups=backups,
            connection=await self.engine.connection_info(cluster),
            last_drill=await self.last_drill_of(cluster) if self.last_drill_of else None,
        )

    async def list_addons(self, caller: Caller, app_id: str) -> list[AddonView]:
        validate_app(app_id)
        clusters = await self.engine.list(
            "Cluster",
            {
                naming.LABEL_TENANT: caller.tenant,
                naming.LABEL_APP: app_id,
                naming.LABEL_ROLE: naming.ROLE_ADDON,
            },
        )
        return [await self.view(c) for c in clusters]

    # --- changes -----------------------------------------------------------------------

    async def _apply_all(self, manifests: AddonManifests, config: RenderConfig) -> Manifest:
        """ObjectStore, Cluster, then the ScheduledBackup owned by the stored Cluster."""
        if manifests.object_store is not None:
            await self.engine.apply(manifests.object_store)
        stored = await self.engine.apply(manifests.cluster)
        scheduled = build_scheduled_backup(stored, config)
        if scheduled is not None:
            await self.engine.apply(scheduled)
        return stored

    async def create_addon_generic(
        self,
        caller: Caller,
        app_id: str,
        *,
        plan: str,
        version: str | None = None,
        addon_id: str | None = None,
    ) -> AddonView:
        validate_app(app_id)
        version = validate_version(
            version or self.engine.default_version() or self.settings.default_pg_version
        )
        tier_for_plan(plan)
        # Names are the tenant's own (paas_pitr.names): an id another tenant could take, or
        # one of another tenant's, is refused before anything is looked up, so the answer
        # never says whether that tenant has it.
        name = (
            validate_own_addon_id(caller.tenant, addon_id)
            if addon_id
            else default_addon_id(caller.tenant, app_id)
        )
        await check_addon_limit(self.engine, self.settings, caller)
        existing = await self.engine.get("Cluster", name)
        if existing is not None and is_terminating(existing):
            # Applying now would update the dying object, deleted with the new addon in it.
            raise AddonExists(
                f"the addon named {name!r} is still being deleted; retry once it is gone",
                details={"addon_id": name, "deleting": True},
            )
        if existing is not None:
            # In the caller's own space: its own addon (or an object older than the rule).
            raise AddonExists(f"an addon named {name!r} already exists", details={"addon_id": name})
        config = await self.render_config()
        # A fresh archive folder for every incarnation: a re-created addon must never write
        # over (or be restored from) the archive its deleted namesake left behind.
        server_name = naming.incarnation_server_name(name)
        periods = switch_archiving(
            [], on=policy_for(tier_for_plan(plan)).has_backups, at=datetime.now(UTC)
        )
        manifests = build_addon_manifests(
            version=version,
            plan=plan,
            tenant=caller.tenant,
            app=app_id,
            addon_id=name,
            config=config,
            server_name=server_name,
            annotations=incarnation_annotations(server_name, periods),
        )
        created: list[tuple[Kind, str]] = []
        # Applied, not POSTed: on Kubernetes the fields a POST writes stay owned by an
        # "Update" entry, and a later apply that omits them (the backup stanza, on a move to
        # free) would not remove them. The existence check above guards the name.
        try:
            if manifests.object_store is not None:
                await self.engine.apply(manifests.object_store)
                created.append(("ObjectStore", manifests.object_store["metadata"]["name"]))
            stored = await self.engine.apply(manifests.cluster)
            created.append(("Cluster", name))
            scheduled = build_scheduled_backup(stored, config)
            if scheduled is not None:
                await self.engine.apply(scheduled)
                created.append(("ScheduledBackup", scheduled["metadata"]["name"]))
        except PitrError:
            await self._undo(created)
            raise
        self.audit_event(caller, "addon.create", name, app_id=app_id, plan=plan, version=version)
        return await self.view(stored)

    async def _undo(self, created: list[tuple[Kind, str]]) -> None:
        """Nothing half-done: remove what this request created before it failed."""
        for kind, name in reversed(created):
            try:
                await self.engine.delete(kind, name)
            except PitrError:
                log.exception("could not roll back %s %s; delete it by hand", kind, name)

    async def change_plan(self, caller: Caller, app_id: str, addon_id: str, plan: str) -> AddonView:
        cluster = await self.get_cluster(caller, app_id, addon_id)
        tier = tier_for_plan(plan)
        old_plan = cluster["metadata"]["labels"].get(naming.LABEL_PLAN)
        config = await self.render_config()
        server_name = incarnation_server_name_of(cluster)
        periods = await switched_history(
            self.engine, cluster, on=policy_for(tier).has_backups, at=datetime.now(UTC)
        )
        manifests = build_addon_manifests(
            version=cluster_version(cluster) or self.settings.default_pg_version,
            plan=plan,
            tenant=caller.tenant,
            app=app_id,
            addon_id=addon_id,
            config=config,
            server_name=server_name,
            annotations={
                **incarnation_annotations(server_name, periods),
                # The addon's history across in-place switches outlives plan changes.
                **{
                    key: value
                    for key, value in (cluster["metadata"].get("annotations") or {}).items()
                    if key in CARRIED_ANNOTATIONS
                },
            },
        )
        stored = await self._apply_all(manifests, config)
        if not policy_for(tier).has_backups:
            # Backup configuration goes; the archives in the bucket are never deleted.
            await self.engine.delete("ScheduledBackup", naming.scheduled_backup_name(addon_id))
            await self.engine.delete("ObjectStore", naming.object_store_name(addon_id))
        self.audit_event(
            caller, "addon.plan_change", addon_id, app_id=app_id, **{"from": old_plan, "to": plan}
        )
        return await self.view(stored)

    async def delete(self, caller: Caller, app_id: str, addon_id: str) -> None:
        """Delete the addon's objects; its archive stays, restorable, until its retention
        has passed (then the retention sweeper of paas_pitr.archives deletes it).

        The deleted incarnation is recorded in the bucket BEFORE anything is deleted: nothing
        else would ever expire its archive (CNPG applies retention to live clusters only).
        If the record cannot be written (bucket unreachable: 503 ``object_store_unavailable``;
        no credentials for it: 503 ``archive_bucket_not_configured``) the addon is not
        deleted, so the request can simply be retried: deleting anyway would keep the data
        for ever, silently.
        """
        cluster = await self.get_cluster(caller, app_id, addon_id)
        await refuse_while_addon_switching(self.engine, caller.tenant, app_id, addon_id)
        tombstone = await record_deletion(
            self.engine,
            self.settings,
            cluster,
            version=cluster_version(cluster),
            actor=caller.actor,
        )
        await self.engine.delete("ScheduledBackup", naming.scheduled_backup_name(addon_id))
        await self.engine.delete("Cluster", addon_id)
        await self.engine.delete("ObjectStore", naming.object_store_name(addon_id))
        details: dict[str, Any] = {"archives_kept": tombstone is not None}
        if tombstone is not None:
            details |= {
                "server_name": tombstone.server_name,
                "retention": tombstone.retention,
                "retained_until": format_api_time(tombstone.retained_until),
            }
        self.audit_event(caller, "addon.delete", addon_id, app_id=app_id, **details)
