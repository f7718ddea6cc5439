"""Named restore points: ``pg_create_restore_point()`` on an addon's primary, recorded with
their LSN and time so a restore to one is validated before anything is created.

The record lives in the backup bucket, next to the WAL it points into:
``<tenant>/<app>/<server>/paas-pitr/restore-points.json``. It is as durable as the archive
(written by both engines, kept while the incarnation's archive is, expired with it), and a
restore point outlives neither its WAL nor its incarnation.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel, Field, ValidationError

from paas_pitr.addons import AddonService
from paas_pitr.bucket import Bucket, destination_prefix
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import InvalidRecoveryTarget, PlanHasNoBackups, RestorePointExists
from paas_pitr.plans import Tier, tier_for_plan
from paas_pitr.tombstones import require_bucket

# PostgreSQL keeps restore point names in a 64-byte buffer, terminator included.
MAX_NAME_BYTES = 63


class RestorePointRecord(BaseModel):
    name: str
    lsn: str = Field(description="Where pg_create_restore_point() wrote the point")
    created_at: datetime = Field(description="The primary's clock when it was written")
    created_by: str | None = None


class _Document(BaseModel):
    points: list[RestorePointRecord] = Field(default_factory=list)


def validate_point_name(name: str) -> str:
    """1-63 bytes, no control characters (CNPG's webhook rule, PostgreSQL's limit)."""
    encoded = name.encode() if isinstance(name, str) else b""
    if not encoded or len(encoded) > MAX_NAME_BYTES or not name.isprintable():
        raise InvalidRecoveryTarget(
            f"invalid restore point name {name!r}: 1-{MAX_NAME_BYTES} bytes, printable",
            details={"restore_point": name},
        )
    return name


def points_key(bucket: Bucket, tenant: str, app: str, cluster: Manifest) -> str:
    prefix = destination_prefix(naming.destination_path(tenant, app, bucket.name), bucket.name)
    return f"{prefix}/{incarnation_server_name_of(cluster)}/paas-pitr/restore-points.json"


class RestorePointService:
    def __init__(self, addons: AddonService) -> None:
        self.addons = addons
        self.engine = addons.engine
        # One writer per addon in this process: names are unique per addon.
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def _load(self, bucket: Bucket, key: str) -> _Document:
        try:
            return _Document.model_validate(await bucket.get_json(key) or {})
        except ValidationError:
            return _Document()

    async def recorded(
        self, caller: Caller, app_id: str, cluster: Manifest
    ) -> list[RestorePointRecord]:
        """The restore points of ``cluster``'s incarnation, oldest first."""
        bucket = require_bucket(self.engine, self.addons.settings)
        document = await self._load(bucket, points_key(bucket, caller.tenant, app_id, cluster))
        return sorted(document.points, key=lambda p: p.created_at)

    async def list_points(
        self, caller: Caller, app_id: str, addon_id: str
    ) -> list[RestorePointRecord]:
        cluster = await self.addons.get_cluster(caller, app_id, addon_id)
        return await self.recorded(caller, app_id, cluster)

    async def create(
        self, caller: Caller, app_id: str, addon_id: str, name: str
    ) -> RestorePointRecord:
        """Create a restore point (audited as ``addon.restore_point``); 409
        ``restore_point_exists`` when the addon's incarnation already has that name."""
        validate_point_name(name)
        cluster = await self.addons.get_cluster(caller, app_id, addon_id)
        plan = cluster["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
        tier = tier_for_plan(plan)
        if tier is Tier.NONE:
            raise PlanHasNoBackups(
                f"addon {addon_id!r} is on the {plan!r} plan, which has no WAL archive: a "
                "restore point needs archived WAL to replay (the pro plan)",
                details={"plan": plan},
            )
        if tier is not Tier.PITR:
            raise InvalidRecoveryTarget(
                f"addon {addon_id!r} is on the {plan!r} plan, which restores base backups "
                "only: a restore point needs WAL replay (the pro plan)",
                details={"plan": plan},
            )
        bucket = require_bucket(self.engine, self.addons.settings)
        key = points_key(bucket, caller.tenant, app_id, cluster)
        lock = self._locks.setdefault((caller.tenant, app_id, addon_id), asyncio.Lock())
        async with lock:
            document = await self._load(bucket, key)
            if any(p.name == name for p in document.points):
                raise RestorePointExists(
                    f"addon {addon_id!r} already has a restore point named {name!r}",
                    details={"restore_point": name},
                )
            created = await self.engine.primary().create_restore_point(cluster, name)
            record = RestorePointRecord(
                name=name, lsn=created.lsn, created_at=created.at, created_by=caller.actor
            )
            document.points.append(record)
            await bucket.put_json(key, document.model_dump(mode="json"))
        self.addons.audit_event(
            caller,
            "addon.restore_point",
            addon_id,
            app_id=app_id,
            name=name,
            lsn=record.lsn,
            created_at=record.created_at.isoformat(),
        )
        return record
