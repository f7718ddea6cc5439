"""Deleted addons and their archives: the index of deleted incarnations, an addon's
incarnations as the bucket holds them, restore targets inside one, and retention.

Who applies retention to a deleted addon's archive: **this module**. CNPG and the Barman
Cloud plugin run retention for live clusters only, and barman's RECOVERY WINDOW policy always
keeps the newest backup, so without the control plane a deleted addon's archive would stay
in the bucket for ever. Deleting an addon therefore first records the deleted incarnation
(a "tombstone": when, which tier and retention, where its archive is) in the bucket, under
``_paas-pitr/deleted/<tenant>/<app>/<server>.json``: outside every tenant's prefix (tenants
are DNS labels, which never start with ``_``), never inside barman's folders, and cheap to
list. The retention sweeper, a background task of every API process, deletes a deleted
incarnation's whole server folder once ``deleted_at + retention`` has passed, then its
tombstone, and audits ``addon.archive_expired``. Until then the incarnation can be listed
and restored into a new cluster.

The bucket, not the Cluster, is the source of truth here: a deleted addon has no Cluster
left, and several control-plane replicas must agree. Tenancy is by prefix: a caller only
ever reads ``<tenant>/<app>/`` of its own tenant.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from paas_pitr.bucket import Bucket, destination_prefix
from paas_pitr.catalog import CatalogBackup
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import BackupEnd, PointInTime, RecoveryTarget
from paas_pitr.cnpg.history import (
    ArchivePeriod,
    archive_periods,
    history_annotation,
    incarnation_server_name_of,
)
from paas_pitr.cnpg.projections import (
    BackupRecord,
    BackupStatus,
    archive_server_name,
    cluster_version,
)
from paas_pitr.cnpg.window import completed_backups, period_spans, restore_points_in
from paas_pitr.context import Caller
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import (
    ArchiveBucketNotConfigured,
    InvalidName,
    NoBackupForTarget,
    NotFound,
    OutsideRecoverabilityWindow,
    PitrError,
    UnknownPlan,
)
from paas_pitr.names import validate_addon_id, validate_app, validate_label, validate_tenant
from paas_pitr.plans import TIER_POLICIES, Tier, policy_for, tier_for_plan
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time

if TYPE_CHECKING:
    from paas_pitr.addons import AddonService
    from paas_pitr.audit import AuditLog

log = logging.getLogger(__name__)

TOMBSTONE_ROOT = "_paas-pitr/deleted"
TombstoneKind = Literal["paas-pitr.io/deleted-incarnation/v1"]
TOMBSTONE_KIND: TombstoneKind = "paas-pitr.io/deleted-incarnation/v1"
SYSTEM_ACTOR = "system:paas-pitr"
_EVENT_NAMESPACE = uuid.UUID("6f1d3c52-8a0e-4b7e-9a55-2c4e7d1b9f30")
# A plan with no backups of its own can still leave an archive (pro, then free, then
# deleted): keep it as long as the longest retention any plan promises.
LONGEST_RETENTION_DAYS = max(p.retention_days or 0 for p in TIER_POLICIES.values())


def tombstone_key(tenant: str, app: str, server_name: str) -> str:
    return f"{TOMBSTONE_ROOT}/{tenant}/{app}/{server_name}.json"


def tombstone_prefix(tenant: str, app: str) -> str:
    return f"{TOMBSTONE_ROOT}/{tenant}/{app}/"


def is_incarnation(server_name: str, addon_id: str) -> bool:
    """``server_name`` is a folder of ``addon_id``: a fresh one per incarnation, or (clusters
    rendered before incarnations existed) the addon id itself."""
    return server_name == addon_id or naming.is_incarnation_of(server_name, addon_id)


def missing_bucket_settings(settings: Settings) -> list[str]:
    missing = []
    if not settings.s3_access_key_id:
        missing.append("PAAS_PITR_S3_ACCESS_KEY_ID")
    if not settings.s3_secret_access_key:
        missing.append("PAAS_PITR_S3_SECRET_ACCESS_KEY")
    return missing or ["PAAS_PITR_S3_ACCESS_KEY_ID", "PAAS_PITR_S3_SECRET_ACCESS_KEY"]


def require_bucket(engine: Engine, settings: Settings) -> Bucket:
    bucket = engine.archive_bucket()
    if bucket is None:
        missing = missing_bucket_settings(settings)
        raise ArchiveBucketNotConfigured(
            "the control plane has no access of its own to the backup bucket, which it needs "
            "to keep, list, restore and expire the archives of deleted addons: set "
            + " and ".join(missing),
            details={"missing_settings": missing, "bucket": settings.bucket},
        )
    return bucket


# --- tombstones --------------------------------------------------------------------------


class Tombstone(BaseModel):
    """The record of one deleted incarnation, kept in the bucket until its archive expires."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: TombstoneKind = TOMBSTONE_KIND
    tenant: str
    app: str
    addon: str
    server_name: str
    destination: str
    plan: str
    tier: str
    retention: str
    retention_days: int = Field(ge=1)
    deleted_at: AwareDatetime
    retained_until: AwareDatetime
    version: str | None = Field(default=None, description="PostgreSQL major of the cluster")
    archive_history: str | None = Field(
        default=None, description="The incarnation's archive history annotation, verbatim"
    )
    deleted_by: str | None = None

    @field_validator("deleted_at", "retained_until")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def load(cls, payload: dict[str, Any] | None, key: str) -> Tombstone | None:
        """The tombstone at ``key``, ``None`` when it is garbled or does not match its key
        (never act on a record that cannot be trusted, least of all by deleting)."""
        if payload is None:
            return None
        try:
            tombstone = cls.model_validate(payload)
            validate_tenant(tombstone.tenant)
            validate_app(tombstone.app)
            validate_addon_id(tombstone.addon)
            validate_label(tombstone.server_name, what="server name")
        except (ValidationError, InvalidName) as exc:
            log.warning("ignoring the unreadable tombstone %s: %s", key, exc)
            return None
        if key != tombstone_key(tombstone.tenant, tombstone.app, tombstone.server_name) or (
            not is_incarnation(tombstone.server_name, tombstone.addon)
        ):
            log.warning("ignoring the tombstone %s: it names another incarnation", key)
            return None
        return tombstone


async def record_deletion(
    engine: Engine,
    settings: Settings,
    cluster: Manifest,
    *,
    version: str | None,
    actor: str,
    now: datetime | None = None,
) -> Tombstone | None:
    """Record ``cluster``'s incarnation as deleted, before its Cluster goes.

    ``None`` (nothing written, no bucket needed) when the incarnation never archived. Raises
    ``ObjectStoreError`` / ``ArchiveBucketNotConfigured`` when the record cannot be written:
    the caller must then keep the Cluster, because an archive deleted without a record would
    never expire.
    """
    periods = archive_periods(cluster, archiving_now=archive_server_name(cluster) is not None)
    if not periods:
        return None
    labels = cluster["metadata"].get("labels", {})
    tenant, app = labels[naming.LABEL_TENANT], labels[naming.LABEL_APP]
    plan = labels.get(naming.LABEL_PLAN, "free")
    policy = policy_for(tier_for_plan(plan))
    days = policy.retention_days or LONGEST_RETENTION_DAYS
    deleted_at = (now or datetime.now(UTC)).astimezone(UTC)
    server = incarnation_server_name_of(cluster)
    tombstone = Tombstone(
        tenant=tenant,
        app=app,
        addon=cluster["metadata"]["name"],
        server_name=server,
        destination=naming.destination_path(tenant, app, settings.bucket),
        plan=plan,
        tier=policy.tier.value,
        retention=policy.retention or f"{days}d",
        retention_days=days,
        deleted_at=deleted_at,
        retained_until=deleted_at + timedelta(days=days),
        version=version,
        archive_history=history_annotation(periods),
        deleted_by=actor,
    )
    bucket = require_bucket(engine, settings)
    await bucket.put_json(tombstone_key(tenant, app, server), tombstone.as_json())
    return tombstone


# --- incarnations ------------------------------------------------------------------------


class IncarnationBackup(BaseModel):
    backup_id: str
    started_at: datetime | None
    stopped_at: datetime | None
    major_version: int | None = Field(description="PostgreSQL major the backup was taken from")


class IncarnationRange(BaseModel):
    earliest: datetime
    latest: datetime


class IncarnationView(BaseModel):
    """One incarnation of an addon id, as its archive in the bucket shows it.

    ``earliest`` is the end of the oldest completed base backup (rounded up to the next whole
    second when it has no sub-second part: barman truncates it, and PostgreSQL refuses a
    target before the consistency point). ``latest`` is the time the newest WAL object was
    written: an upper estimate of the newest restorable instant, as the Kubernetes engine's
    window is: on a database idle before the segment was written, a target after its last
    commit fails at the end of replay, and the restore is reported ``failed`` with
    PostgreSQL's reason. The standard tier restores base backup ends only: its ``earliest``
    and ``latest`` are the oldest and newest of them, and ``ranges`` is empty.
    """

    server_name: str
    current: bool = Field(description="Whether the live addon archives here now")
    destination: str
    deleted_at: datetime | None = None
    retained_until: datetime | None = Field(
        default=None, description="When paas-pitr deletes this archive (deleted incarnations)"
    )
    plan: str | None = None
    tier: str | None = None
    retention: str | None = None
    point_in_time: bool = False
    base_backups: list[IncarnationBackup] = Field(
        default_factory=list, description="Completed base backups, newest first"
    )
    newest_wal_at: datetime | None = None
    earliest: datetime | None = None
    latest: datetime | None = None
    ranges: list[IncarnationRange] = Field(default_factory=list)


def _end(backup: CatalogBackup) -> datetime:
    assert backup.end_time is not None
    return backup.end_time


def _record(backup: CatalogBackup) -> BackupRecord:
    """A catalog entry in the shape the window code reads (the same rules for both)."""
    return BackupRecord(
        id=backup.backup_id,
        name=backup.backup_id,
        status=BackupStatus.COMPLETED,
        backup_id=backup.backup_id,
        started_at=backup.begin_time,
        stopped_at=backup.end_time,
        major_version=backup.pg_major,
    )


@dataclass(frozen=True, slots=True)
class Span:
    earliest: datetime
    latest: datetime
    backups: list[CatalogBackup]


@dataclass
class Incarnation:
    server_name: str
    destination: str
    current: bool
    plan: str | None
    tombstone: Tombstone | None
    backups: list[CatalogBackup]
    newest_wal: datetime | None
    periods: list[ArchivePeriod]
    live_version: str | None = None
    spans: list[Span] = field(init=False)

    def __post_init__(self) -> None:
        self.spans = self._spans()

    @property
    def tier(self) -> Tier:
        try:
            return tier_for_plan(self.plan) if self.plan else Tier.NONE
        except UnknownPlan:
            return Tier.NONE

    def _spans(self) -> list[Span]:
        """One range per period of continuous archiving (a plan change to free and back
        leaves a gap in the WAL), from its oldest backup's end to the newest WAL."""
        by_id = {b.backup_id: b for b in self.backups}
        return [
            Span(span.earliest, span.latest, [by_id[str(r.backup_id)] for r in span.backups])
            for span in period_spans(
                self.periods,
                completed_backups(_record(b) for b in self.backups),
                current_latest=self.newest_wal,
                current_source="archive",
            )
            if span.restorable and span.earliest is not None and span.latest is not None
        ]

    def restore_points(self) -> list[CatalogBackup]:
        """The backups a standard-tier restore may return, newest first."""
        by_id = {b.backup_id: b for b in self.backups}
        records = completed_backups(_record(b) for b in self.backups)
        return [by_id[str(r.backup_id)] for r in restore_points_in(self.periods, records)]

    def span_for(self, moment: datetime) -> Span | None:
        return next((s for s in self.spans if s.earliest <= moment <= s.latest), None)

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        if self.tier is Tier.DAILY:
            points = self.restore_points()
            return (_end(points[-1]), _end(points[0])) if points else (None, None)
        if self.tier is Tier.PITR and self.spans:
            return self.spans[0].earliest, self.spans[-1].latest
        return None, None

    def details(self) -> dict[str, Any]:
        """The range as error details carry it (the window's shape, plus the folder)."""

        def when(moment: datetime | None) -> str | None:
            return format_api_time(moment) if moment else None

        earliest, latest = self.bounds()
        return {
            "incarnation": self.server_name,
            "window": {
                "state": "open" if earliest else "none",
                "earliest": when(earliest),
                "latest": when(latest),
                "ranges": [
                    {"earliest": when(s.earliest), "latest": when(s.latest)}
                    for s in (self.spans if self.tier is Tier.PITR else [])
                ],
            },
        }

    def view(self) -> IncarnationView:
        tier = self.tier
        policy = policy_for(tier)
        earliest, latest = self.bounds()
        return IncarnationView(
            server_name=self.server_name,
            current=self.current,
            destination=self.destination,
            deleted_at=self.tombstone.deleted_at if self.tombstone else None,
            retained_until=self.tombstone.retained_until if self.tombstone else None,
            plan=self.plan,
            tier=tier.value,
            retention=self.tombstone.retention if self.tombstone else policy.retention,
            point_in_time=policy.point_in_time,
            base_backups=[
                IncarnationBackup(
                    backup_id=b.backup_id,
                    started_at=b.begin_time,
                    stopped_at=b.end_time,
                    major_version=b.pg_major,
                )
                for b in reversed(self.backups)
            ],
            newest_wal_at=self.newest_wal,
            earliest=earliest,
            latest=latest,
            ranges=[IncarnationRange(earliest=s.earliest, latest=s.latest) for s in self.spans]
            if tier is Tier.PITR
            else [],
        )

    def version_for(self, base: CatalogBackup | None, default: str) -> str:
        """The PostgreSQL major the restored data needs: the base backup's own, else the one
        recorded at deletion, else the live cluster's, else the setting."""
        if base is not None and base.pg_major:
            return str(base.pg_major)
        majors = [b.pg_major for b in self.backups if b.pg_major]
        if majors:
            return str(majors[-1])
        if self.tombstone is not None and self.tombstone.version:
            return self.tombstone.version
        return self.live_version or default


def _why_outside(incarnation: Incarnation, moment: datetime) -> str:
    if not incarnation.backups:
        return "it has no completed base backup"
    if incarnation.newest_wal is None:
        return "it has no archived WAL"
    if not incarnation.spans:
        return "no WAL past the end of its first base backup was archived"
    if moment < incarnation.spans[0].earliest:
        return "it is before the end of its oldest base backup"
    if moment > incarnation.spans[-1].latest:
        return "it is after its newest archived WAL"
    return "it falls in a gap of its WAL archive (archiving was off for a while)"


def resolve_target(
    incarnation: Incarnation, moment: datetime
) -> tuple[RecoveryTarget, CatalogBackup | None]:
    """What a restore of ``incarnation`` to ``moment`` targets, and the base backup it starts
    from; the same refusals as a live addon's window, with the incarnation's range."""
    details = {"timestamp": format_api_time(moment), **incarnation.details()}
    if incarnation.tier is Tier.DAILY:
        chosen = next((b for b in incarnation.restore_points() if _end(b) <= moment), None)
        if chosen is None:
            raise NoBackupForTarget(
                f"no completed base backup of incarnation {incarnation.server_name} ends at or "
                f"before {format_api_time(moment)}",
                details=details,
            )
        return BackupEnd(chosen.backup_id, chosen.end_time), chosen
    span = incarnation.span_for(moment)
    if span is None:
        raise OutsideRecoverabilityWindow(
            f"timestamp {format_api_time(moment)} is outside the restorable range of "
            f"incarnation {incarnation.server_name}: {_why_outside(incarnation, moment)}",
            details=details,
        )
    base = max((b for b in span.backups if _end(b) <= moment), key=_end, default=None)
    return PointInTime(moment), base


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
                periods = archive_periods(
                    {
                        "metadata": {
                            "annotations": {
                                naming.ANNOTATION_ARCHIVE_HISTORY: tombstone.archive_history
                            }
                        }
                    },
                    archiving_now=True,
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
        if not is_incarnation(server_name, validate_addon_id(addon_id)) or not found:
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
        names = {n for n in [*folders, *recorded] if is_incarnation(n, addon_id)}
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
