"""Deleted addons and their archives: an addon id's incarnations as the bucket holds them,
and the retention sweeper.

Who applies retention to a deleted addon's archive: **this module**. CNPG and the Barman
Cloud plugin run retention for live clusters only, and barman's RECOVERY WINDOW policy always
keeps the newest backup, so without the control plane a deleted addon's archive would stay
in the bucket for ever. Deleting an addon therefore first records the deleted incarnation
(a "tombstone", :mod:`paas_pitr.tombstones`) in the bucket. The retention sweeper, a
background task of every API process, deletes a deleted incarnation's whole server folder
once ``deleted_at + retention`` has passed, then its tombstone, and audits
``addon.archive_expired``. Until then the incarnation can be listed and restored into a new
cluster (:mod:`paas_pitr.incarnations`).

The bucket, not the Cluster, is the source of truth here: a deleted addon has no Cluster
left, and several control-plane replicas must agree. Tenancy is by prefix: a caller only
ever reads ``<tenant>/<app>/`` of its own tenant.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from paas_pitr.addons import AddonService
from paas_pitr.audit import AuditLog
from paas_pitr.bucket import Bucket, destination_prefix
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import ArchivePeriod, archive_periods, incarnation_server_name_of
from paas_pitr.cnpg.projections import archive_server_name, cluster_version
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import NotFound, PitrError
from paas_pitr.incarnations import Incarnation, IncarnationView
from paas_pitr.names import validate_addon_id, validate_app, validate_label
from paas_pitr.timestamps import format_api_time
from paas_pitr.tombstones import (
    TOMBSTONE_ROOT,
    Tombstone,
    missing_bucket_settings,
    require_bucket,
    tombstone_prefix,
)

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:paas-pitr"
_EVENT_NAMESPACE = uuid.UUID("6f1d3c52-8a0e-4b7e-9a55-2c4e7d1b9f30")


class ArchiveService:
    """An addon id's incarnations as the bucket holds them, and the retention sweeper."""

    def __init__(self, addons: AddonService, audit: AuditLog) -> None:
        self.addons = addons
        self.engine = addons.engine
        self.settings = addons.settings
        self.audit = audit

    def bucket(self) -> Bucket:
        return require_bucket(self.engine, self.settings)

    async def live(self, caller: Caller, app_id: str, addon_id: str) -> Manifest | None:
        try:
            return await self.addons.get_cluster(caller, app_id, addon_id)
        except NotFound:
            return None

    async def load(
        self, caller: Caller, app_id: str, addon_id: str, *, only: str | None = None
    ) -> tuple[Manifest | None, list[Incarnation]]:
        """The live addon (if any) and the incarnations of ``addon_id`` under the caller's
        prefix, newest first; ``NotFound`` when there is neither, exactly like a missing
        addon."""
        validate_app(app_id)
        validate_addon_id(addon_id)
        live = await self.live(caller, app_id, addon_id)
        bucket = self.bucket()
        destination = naming.destination_path(caller.tenant, app_id, bucket.name)
        prefix = destination_prefix(destination, bucket.name)
        names, recorded = await self._archived(bucket, caller, app_id, addon_id)
        current = incarnation_server_name_of(live) if live is not None else None
        if current:
            names.add(current)
        if only is not None:
            names &= {only}
        if live is None and not names and only is None:
            raise NotFound(f"addon {addon_id!r} not found in app {app_id!r}")

        async def one(server: str) -> Incarnation:
            key = recorded.get(server)
            payload, backups, newest = await asyncio.gather(
                bucket.get_json(key) if key else _none(),
                bucket.base_backups(prefix, server),
                bucket.newest_wal(prefix, server),
            )
            is_current = server == current and live is not None
            tombstone = None if is_current or key is None else Tombstone.load(payload, key)
            if is_current:
                assert live is not None
                plan: str | None = live["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
                periods = archive_periods(live, archiving_now=archive_server_name(live) is not None)
            elif tombstone is not None:
                plan = tombstone.plan
                # Archiving stopped at the deletion: the history's last period is closed.
                periods = archive_periods(
                    {
                        "metadata": {
                            "annotations": {
                                naming.ANNOTATION_ARCHIVE_HISTORY: tombstone.archive_history
                            }
                        }
                    },
                    archiving_now=False,
                )
            else:
                # No record (deleted by hand, or before deletions were recorded): the live
                # addon's plan, else the standard tier, which offers only backup ends, the
                # one thing the catalog alone proves restorable.
                plan = (
                    live["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
                    if live is not None
                    else "standard"
                )
                periods = [ArchivePeriod(on=None)]
            return Incarnation(
                server_name=server,
                destination=destination,
                current=is_current,
                plan=plan,
                tombstone=tombstone,
                backups=backups,
                newest_wal=newest,
                periods=periods,
                live_version=cluster_version(live) if live is not None else None,
            )

        found = list(await asyncio.gather(*(one(n) for n in sorted(names))))
        far_past = datetime.min.replace(tzinfo=UTC)
        found.sort(
            key=lambda i: (
                i.current,
                i.tombstone.deleted_at if i.tombstone else far_past,
                i.server_name,
            ),
            reverse=True,
        )
        return live, found

    async def incarnations(
        self, caller: Caller, app_id: str, addon_id: str
    ) -> list[IncarnationView]:
        _, found = await self.load(caller, app_id, addon_id)
        return [i.view() for i in found]

    async def incarnation(
        self, caller: Caller, app_id: str, addon_id: str, server_name: str
    ) -> tuple[Manifest | None, Incarnation]:
        """One incarnation, for a restore: ``NotFound`` unless ``server_name`` is a folder of
        ``addon_id`` under the caller's prefix."""
        validate_label(server_name, what="incarnation")
        live, found = await self.load(caller, app_id, addon_id, only=server_name)
        if not naming.is_incarnation_of(server_name, validate_addon_id(addon_id)) or not found:
            if live is None and not await self.has_incarnations(caller, app_id, addon_id):
                raise NotFound(f"addon {addon_id!r} not found in app {app_id!r}")
            raise NotFound(
                f"addon {addon_id!r} has no incarnation {server_name!r}",
                details={"incarnation": server_name},
            )
        return live, found[0]

    async def _archived(
        self, bucket: Bucket, caller: Caller, app_id: str, addon_id: str
    ) -> tuple[set[str], dict[str, str]]:
        """The server folders of ``addon_id`` in the bucket, and the tombstone key of those
        recorded as deleted (two listings: the app's folders and its index)."""
        prefix = destination_prefix(
            naming.destination_path(caller.tenant, app_id, bucket.name), bucket.name
        )
        index = tombstone_prefix(caller.tenant, app_id)
        folders, index_keys = await asyncio.gather(
            bucket.server_folders(prefix), bucket.list_keys(index)
        )
        recorded = {
            key[len(index) : -len(".json")]: key for key in index_keys if key.endswith(".json")
        }
        names = {n for n in [*folders, *recorded] if naming.is_incarnation_of(n, addon_id)}
        return names, recorded

    async def has_incarnations(self, caller: Caller, app_id: str, addon_id: str) -> bool:
        """Whether the caller's prefix holds an archived incarnation of ``addon_id``."""
        validate_app(app_id)
        validate_addon_id(addon_id)
        names, _ = await self._archived(self.bucket(), caller, app_id, addon_id)
        return bool(names)

    # --- retention ---------------------------------------------------------------------

    async def sweep(self, now: datetime | None = None) -> list[Tombstone]:
        """Delete the archive, then the tombstone, of every deleted incarnation whose
        retention has passed; the tombstones of what was deleted.

        Safe to run from several replicas at once (deleting is idempotent, the audit event
        id derives from the incarnation), and never deletes on doubt: an unreadable
        tombstone, a destination outside the bucket, or an engine that cannot say whether
        the incarnation is still live leave everything in place until the next round.
        """
        now = (now or datetime.now(UTC)).astimezone(UTC)
        bucket = self.engine.archive_bucket()
        if bucket is None:
            return []
        expired: list[Tombstone] = []
        for key in await bucket.list_keys(f"{TOMBSTONE_ROOT}/"):
            if not key.endswith(".json"):
                continue
            try:
                tombstone = Tombstone.load(await bucket.get_json(key), key)
                # Restorable "until" retained_until, that instant included.
                if tombstone is None or now <= tombstone.retained_until:
                    continue
                deleted = await self._expire(bucket, key, tombstone)
            except PitrError as exc:
                log.warning("retention of %s postponed: %s", key, exc.message)
                continue
            if deleted is not None:
                self._audit_expired(tombstone, deleted, now)
                expired.append(tombstone)
        return expired

    async def _expire(self, bucket: Bucket, key: str, tombstone: Tombstone) -> int | None:
        prefix = destination_prefix(tombstone.destination, bucket.name)
        if prefix != f"{tombstone.tenant}/{tombstone.app}":
            log.warning("tombstone %s points outside its tenant's prefix; left alone", key)
            return None
        cluster = await self.engine.get("Cluster", tombstone.addon)
        if cluster is not None and incarnation_server_name_of(cluster) == tombstone.server_name:
            # The delete that wrote this record failed after writing it: the incarnation
            # is live, and its retention is barman's again.
            log.warning("tombstone %s names a live cluster; removing the record only", key)
            await bucket.delete(key)
            return None
        deleted = await bucket.delete_prefix(f"{prefix}/{tombstone.server_name}/")
        await bucket.delete(key)
        log.info(
            "retention passed: deleted %d object(s) of %s/%s",
            deleted,
            tombstone.destination,
            tombstone.server_name,
        )
        return deleted

    def _audit_expired(self, tombstone: Tombstone, deleted: int, now: datetime) -> None:
        self.audit.log_event(
            actor=SYSTEM_ACTOR,
            action="addon.archive_expired",
            target_type="addon",
            target_id=tombstone.addon,
            details={
                "tenant": tombstone.tenant,
                "app_id": tombstone.app,
                "addon_id": tombstone.addon,
                "server_name": tombstone.server_name,
                "destination": tombstone.destination,
                "plan": tombstone.plan,
                "retention": tombstone.retention,
                "deleted_at": format_api_time(tombstone.deleted_at),
                "retained_until": format_api_time(tombstone.retained_until),
                "expired_at": format_api_time(now),
                "objects_deleted": deleted,
            },
            event_id=uuid.uuid5(
                _EVENT_NAMESPACE,
                f"archive_expired:{tombstone.tenant}/{tombstone.app}/{tombstone.server_name}",
            ),
        )

    async def sweep_forever(self, interval: float) -> None:
        """The background task of the API process: a sweep at start (a service restarted
        more often than ``interval`` must still expire archives), then every ``interval``."""
        if self.engine.archive_bucket() is None:
            log.warning(
                "the archives of deleted addons are not expired: the control plane has no "
                "access to the backup bucket (set %s)",
                " and ".join(missing_bucket_settings(self.settings)),
            )
            return
        while True:
            try:
                expired = await self.sweep()
                if expired:
                    log.info("expired the archives of %d deleted incarnation(s)", len(expired))
            except asyncio.CancelledError:
                raise
            except PitrError as exc:
                log.warning("retention sweep failed (next in %ss): %s", interval, exc.message)
            except Exception:
                log.exception("retention sweep failed (next in %ss)", interval)
            await asyncio.sleep(interval)


async def _none() -> None:
    return None
