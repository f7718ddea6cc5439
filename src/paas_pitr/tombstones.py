"""Tombstones: the record, kept in the bucket, of each deleted incarnation of an addon.

Deleting an addon first records its incarnation (when, which tier and retention, where its
archive is, its PostgreSQL major and archive history) under
``_paas-pitr/deleted/<tenant>/<app>/<server>.json``: outside every tenant's prefix (tenants
are DNS labels, which never start with ``_``), never inside barman's folders, and cheap to
list. The retention sweeper (:mod:`paas_pitr.archives`) deletes the incarnation's folder
once ``retained_until`` has passed, then the record. If the record cannot be written the
addon is not deleted: an archive without a record would never expire.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from paas_pitr.bucket import Bucket
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import (
    ArchivePeriod,
    archive_periods,
    history_annotation,
    incarnation_server_name_of,
    reset_if_unreadable,
    switch_archiving,
)
from paas_pitr.cnpg.projections import archive_server_name, archive_timeout_of
from paas_pitr.cnpg.window import newest_restorable
from paas_pitr.engines.base import Engine, Manifest
from paas_pitr.errors import ArchiveBucketNotConfigured, InvalidName
from paas_pitr.names import validate_addon_id, validate_app, validate_label, validate_tenant
from paas_pitr.plans import TIER_POLICIES, policy_for, tier_for_plan
from paas_pitr.settings import Settings

log = logging.getLogger(__name__)

TOMBSTONE_ROOT = "_paas-pitr/deleted"
TombstoneKind = Literal["paas-pitr.io/deleted-incarnation/v1"]
TOMBSTONE_KIND: TombstoneKind = "paas-pitr.io/deleted-incarnation/v1"
# A plan with no backups of its own can still leave an archive (pro, then free, then
# deleted): keep it as long as the longest retention any plan promises.
LONGEST_RETENTION_DAYS = max(p.retention_days or 0 for p in TIER_POLICIES.values())


def tombstone_key(tenant: str, app: str, server_name: str) -> str:
    return f"{TOMBSTONE_ROOT}/{tenant}/{app}/{server_name}.json"


def tombstone_prefix(tenant: str, app: str) -> str:
    return f"{TOMBSTONE_ROOT}/{tenant}/{app}/"


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
            not naming.is_incarnation_of(tombstone.server_name, tombstone.addon)
        ):
            log.warning("ignoring the tombstone %s: it names another incarnation", key)
            return None
        return tombstone


async def newest_restorable_now(engine: Engine, cluster: Manifest) -> datetime | None:
    """The newest instant of ``cluster``'s archive a restore can reach now (``None``: not
    known): recorded when archiving stops, as nothing later will ever be archived."""
    latest, _ = newest_restorable(
        cluster,
        last_archived_at=await engine.last_archived_at(cluster),
        now=datetime.now(UTC),
        archive_timeout=archive_timeout_of(cluster),
    )
    return latest


async def switched_history(
    engine: Engine, cluster: Manifest, *, on: bool, at: datetime
) -> list[ArchivePeriod]:
    """``cluster``'s archive history once archiving is switched ``on`` (or off) at ``at``.

    A switch off records what stays restorable of the period it ends: what is archived now
    (WAL written from here on is never archived, the segment being written included)."""
    periods = reset_if_unreadable(
        archive_periods(cluster, archiving_now=archive_server_name(cluster) is not None)
    )
    latest = None
    if not on and periods and periods[-1].off is None:
        latest = await newest_restorable_now(engine, cluster)
    return switch_archiving(periods, on=on, at=at, latest=latest)


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
    deleted_at = (now or datetime.now(UTC)).astimezone(UTC)
    # Archiving ends with the Cluster.
    periods = await switched_history(engine, cluster, on=False, at=deleted_at)
    if not periods:
        return None
    labels = cluster["metadata"].get("labels", {})
    tenant, app = labels[naming.LABEL_TENANT], labels[naming.LABEL_APP]
    plan = labels.get(naming.LABEL_PLAN, "free")
    policy = policy_for(tier_for_plan(plan))
    days = policy.retention_days or LONGEST_RETENTION_DAYS
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
