"""The restore drill use-case: restore an addon into a throwaway cluster, wait for it, check
it, record the outcome and delete the cluster, whatever happens.

A drill takes the restore's own path: the target is resolved as a restore's
(:mod:`paas_pitr.restore_targets`), the recovery objects are a restore's
(:func:`paas_pitr.cnpg.builders.build_recovery_cluster`, shaped by
:mod:`paas_pitr.drills.manifests`) and are created by
:func:`paas_pitr.restores.create_recovery_cluster`. It is not a user's restore: its cluster is
labelled ``role=drill``, so it is neither listed nor counted against the restore limits.

Drills run in this process as tasks, at most ``drill_max_concurrent`` at once per engine
(the others wait, ``queued``), one at a time per addon (``409 drill_in_progress``). A drill
cut short by a shutdown deletes its cluster on the way out; one cut short by a kill is found
at the next start (:meth:`DrillService.recover`), recorded as failed, and its cluster deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from paas_pitr.addons import AddonService
from paas_pitr.backups import ArchiveState, BackupService
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import BackupEnd, PointInTime, RecoveryTarget
from paas_pitr.cnpg.diagnosis import diagnose_recovery
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.cnpg.projections import RestoreState, cluster_version, restore_state
from paas_pitr.context import Caller
from paas_pitr.drills.access import ClusterAccess
from paas_pitr.drills.manifests import build_drill_cluster
from paas_pitr.drills.metrics import DrillMetrics
from paas_pitr.drills.records import DrillCheck, DrillRecord, LastDrill, last_drill_of
from paas_pitr.drills.store import DrillStore
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import (
    DrillInProgress,
    NotFound,
    OutsideRecoverabilityWindow,
    PitrError,
    PlanHasNoBackups,
    TimestampInFuture,
)
from paas_pitr.plans import Tier, policy_for, tier_for_plan
from paas_pitr.restore_targets import base_backup_for, resolve_live_target
from paas_pitr.restores import create_recovery_cluster
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time, parse_timestamp
from paas_pitr.verification import verify_recovered_cluster

log = logging.getLogger(__name__)

# Audit event ids derive from the drill and its outcome: one row whoever writes it.
DRILL_NAMESPACE = uuid.UUID("5d0b3a4e-8f0e-4a57-9f43-2b6f2f8c1d77")
SYSTEM_ACTOR = "system:paas-pitr"
INTERRUPTED = "interrupted: the control plane stopped during the drill; its cluster was deleted"


def _lsn(text: str | None) -> int | None:
    if not text or "/" not in text:
        return None
    high, low = text.split("/", 1)
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        return None


class DrillService:
    def __init__(
        self,
        addons: AddonService,
        backups: BackupService,
        store: DrillStore,
        access: ClusterAccess,
        metrics: DrillMetrics,
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        self.addons = addons
        self.backups = backups
        self.engine = addons.engine
        self.settings: Settings = addons.settings
        self.store = store
        self.access = access
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._slots = asyncio.Semaphore(self.settings.drill_max_concurrent)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._starting: set[str] = set()

    # --- requests ----------------------------------------------------------------------

    async def start(
        self,
        caller: Caller,
        app_id: str,
        addon_id: str,
        *,
        timestamp: str | None = None,
        trigger: str = "api",
        drill_id: str | None = None,
        actor: str | None = None,
    ) -> DrillRecord:
        """Start a drill (it runs in the background); the record as ``queued``.

        ``timestamp`` (pro only) drills a given instant instead of the newest restorable;
        ``"latest"`` is that default.
        Errors: ``NotFound``, ``PlanHasNoBackups`` (409), ``DrillInProgress`` (409), and
        the restore's own window errors (422) when nothing can be restored yet.
        """
        source = await self.addons.get_cluster(caller, app_id, addon_id)
        plan = source["metadata"]["labels"].get(naming.LABEL_PLAN, "free")
        tier = tier_for_plan(plan)
        if not policy_for(tier).has_backups:
            raise PlanHasNoBackups(
                f"addon {addon_id!r} is on the {plan!r} plan, which has no backups to drill",
                details={"plan": plan},
            )
        if addon_id in self._starting or any(
            not r.finished for r in await self.store.for_addon(addon_id)
        ):
            raise DrillInProgress(
                f"a drill of addon {addon_id!r} is already queued or running",
                details={"addon_id": addon_id},
            )
        self._starting.add(addon_id)
        try:
            now = datetime.now(UTC)
            state = await self.backups.archive_state(source)
            target, base_begin = self._target(tier, timestamp, now, state)
            drill_id = drill_id or uuid.uuid4().hex
            record = DrillRecord(
                drill_id=drill_id,
                tenant=caller.tenant,
                app_id=app_id,
                addon_id=addon_id,
                plan=plan,
                status="queued",
                trigger="schedule" if trigger == "schedule" else "api",
                requested_by=actor or caller.actor,
                requested_at=now,
                target="backup_end" if isinstance(target, BackupEnd) else "point_in_time",
                target_time=target.ends_at if isinstance(target, BackupEnd) else target.at,
                backup_id=target.backup_id
                if isinstance(target, BackupEnd)
                else base_backup_for(target.at, state),
                incarnation=incarnation_server_name_of(source),
                cluster_name=naming.drill_cluster_name(addon_id, drill_id),
                progress="waiting for a drill slot on this engine",
            )
            await self.store.save(record)
        finally:
            self._starting.discard(addon_id)
        self.tasks[drill_id] = asyncio.create_task(
            self._run(record, source, target, base_begin, caller.request_id),
            name=f"drill-{drill_id}",
        )
        self.tasks[drill_id].add_done_callback(lambda _: self.tasks.pop(drill_id, None))
        return record

    @staticmethod
    def _target(
        tier: Tier, timestamp: str | None, now: datetime, state: ArchiveState
    ) -> tuple[BackupEnd | PointInTime, int | None]:
        """The recovery target and the WAL position replay starts from (the base backup's
        start, to measure the WAL replayed)."""
        if timestamp is not None and timestamp != "latest":
            moment = parse_timestamp(timestamp)
            if moment > now:
                raise TimestampInFuture(
                    f"timestamp {format_api_time(moment)} is in the future",
                    details={"timestamp": format_api_time(moment), "now": format_api_time(now)},
                )
        elif tier is Tier.PITR:
            if not state.window.ranges:
                raise OutsideRecoverabilityWindow(
                    "nothing is restorable yet: there is no restorable range to drill",
                    details=state.window.details(),
                )
            moment = state.window.ranges[-1].latest
        else:
            moment = now
        target = resolve_live_target(tier, moment, state)
        backup_id = (
            target.backup_id if isinstance(target, BackupEnd) else base_backup_for(moment, state)
        )
        begin = next((_lsn(b.begin_lsn) for b in state.backups if b.backup_id == backup_id), None)
        return target, begin

    async def list(self, caller: Caller, app_id: str, addon_id: str) -> list[DrillRecord]:
        """The addon's drills, newest first; ``NotFound`` as for the addon."""
        await self.addons.get_cluster(caller, app_id, addon_id)
        return [
            r
            for r in await self.store.for_addon(addon_id)
            if r.tenant == caller.tenant and r.app_id == app_id
        ]

    async def get(self, caller: Caller, app_id: str, addon_id: str, drill_id: str) -> DrillRecord:
        for record in await self.list(caller, app_id, addon_id):
            if record.drill_id == drill_id:
                return record
        raise NotFound(f"drill {drill_id!r} not found")

    async def last_drill(self, cluster: Manifest) -> LastDrill | None:
        """For the addon view: the addon's newest finished drill."""
        return last_drill_of(await self.store.for_addon(cluster["metadata"]["name"]))

    # --- the drill -----------------------------------------------------------------------

    async def _run(
        self,
        record: DrillRecord,
        source: Manifest,
        target: RecoveryTarget,
        base_begin: int | None,
        request_id: str | None,
    ) -> None:
        name = record.cluster_name or ""
        try:
            async with self._slots:
                await self._drill(record, source, target, base_begin)
        except asyncio.CancelledError:
            # A shutdown: the cluster goes, the drill is recorded as interrupted.
            await asyncio.shield(self._interrupted(record, name))
            raise
        except Exception as exc:  # a bug or a dependency fault: recorded, never lost
            log.exception("drill %s failed unexpectedly", record.drill_id)
            message = exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"
            self._fail(record, "recovery", message)
        with contextlib.suppress(Exception):
            await self._delete_cluster(name)
        await self._finish(record, request_id)

    async def _drill(
        self,
        record: DrillRecord,
        source: Manifest,
        target: RecoveryTarget,
        base_begin: int | None,
    ) -> None:
        record.status = "running"
        record.started_at = datetime.now(UTC)
        record.progress = "creating the recovery cluster"
        await self.store.save(record)
        config = await self.addons.render_config()
        manifests = build_drill_cluster(
            source=source,
            drill_id=record.drill_id,
            tenant=record.tenant,
            app=record.app_id,
            target=target,
            plan=record.plan,
            version=cluster_version(source),
            config=config,
            source_server=record.incarnation or incarnation_server_name_of(source),
            requested={
                "drill_id": record.drill_id,
                "requested_at": format_api_time(record.requested_at),
                "target_time": format_api_time(record.target_time) if record.target_time else None,
                "backup_id": record.backup_id,
            },
        )
        started = time.monotonic()
        try:
            await create_recovery_cluster(self.engine, manifests)
        except PitrError as exc:
            self._fail(record, "recovery", exc.message)
            return
        cluster = await self._wait_ready(record, started)
        if cluster is None:
            return
        record.ready_at = datetime.now(UTC)
        record.rto_seconds = round(time.monotonic() - started, 3)
        record.checks.append(
            DrillCheck(name="recovery", passed=True, figures={"rto_seconds": record.rto_seconds})
        )
        record.progress = "checking the recovered cluster"
        await self.store.save(record)
        conninfo = await self._conninfo(cluster)
        if conninfo is None:
            self._fail(record, "promoted_and_writable", "the engine gives no way to connect")
            return
        budget = self.settings.drill_amcheck_budget_seconds
        margin = 0.0 if record.target == "point_in_time" else 2.0
        report = await verify_recovered_cluster(
            conninfo,
            target_time=record.target_time,
            max_distance_seconds=self.access.max_distance_seconds() + margin,
            amcheck_budget_seconds=budget,
        )
        record.checks += [DrillCheck(**check.to_dict()) for check in report.checks]
        if report.checks[0].passed:
            await self._measure(record, conninfo, report.checks[0].figures, base_begin)
        if report.failing is not None:
            self._fail(record, report.failing.name, report.failing.reason or "failed")
            return
        record.status = "passed"

    async def _wait_ready(self, record: DrillRecord, started: float) -> Manifest | None:
        """The cluster once ready; ``None`` (and the drill failed) if it failed or is not
        ready within ``drill_timeout_seconds``."""
        timeout = self.settings.drill_timeout_seconds
        name = record.cluster_name or ""
        last_progress = ""
        while True:
            cluster = await self.engine.get("Cluster", name)
            if cluster is None:
                self._fail(record, "recovery", f"the drill cluster {name} disappeared")
                return None
            state, reason = restore_state(cluster)
            if state is RestoreState.READY:
                return cluster
            if state is RestoreState.FAILED:
                self._fail(record, "recovery", reason or "recovery failed")
                record.hint = diagnose_recovery(reason)
                return None
            if time.monotonic() - started > timeout:
                self._fail(
                    record,
                    "recovery",
                    f"the drill cluster was not ready within {timeout:.0f}s "
                    "(PAAS_PITR_DRILL_TIMEOUT_SECONDS)",
                )
                return None
            progress = f"restoring ({reason or state.value})"
            if progress != last_progress:
                record.progress = last_progress = progress
                await self.store.save(record)
            await asyncio.sleep(self.poll_seconds)

    async def _conninfo(self, cluster: Manifest) -> str | None:
        # The engine may publish how to connect a moment after it reports ready.
        for _ in range(30):
            conninfo = await self.access.superuser_conninfo(cluster)
            if conninfo is not None:
                return conninfo
            await asyncio.sleep(self.poll_seconds)
        return None

    async def _measure(
        self,
        record: DrillRecord,
        conninfo: str,
        promoted: dict[str, Any],
        base_begin: int | None,
    ) -> None:
        """The restore rate's figures: databases' size, WAL replayed since the base backup's
        start (to where recovery ended, else the current WAL position)."""
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=10
            ) as conn:
                row = await (
                    await conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database")
                ).fetchone()
            record.data_bytes = int(row[0]) if row and row[0] is not None else None
        except psycopg.Error as exc:
            log.warning("drill %s: database sizes unreadable: %s", record.drill_id, exc)
        end = _lsn(promoted.get("recovery_end_lsn")) or _lsn(promoted.get("wal_lsn"))
        if end is not None and base_begin is not None:
            record.wal_bytes_replayed = max(0, end - base_begin)
        if record.rto_seconds:
            moved = (record.data_bytes or 0) + (record.wal_bytes_replayed or 0)
            record.restore_rate_bytes_per_second = round(moved / record.rto_seconds, 1)

    @staticmethod
    def _fail(record: DrillRecord, check: str, reason: str) -> None:
        record.status = "failed"
        record.failing_check = check
        record.reason = reason
        if check == "recovery" and not any(c.name == "recovery" for c in record.checks):
            record.checks.append(DrillCheck(name="recovery", passed=False, reason=reason))

    async def _finish(self, record: DrillRecord, request_id: str | None) -> None:
        record.finished_at = datetime.now(UTC)
        record.progress = None
        try:
            await self.store.save(record)
        except PitrError:
            log.exception("drill %s: its record could not be written", record.drill_id)
        self.metrics.observe(record)
        self._audit(record, request_id)

    def _audit(self, record: DrillRecord, request_id: str | None) -> None:
        self.addons.audit.log_event(
            actor=record.requested_by,
            action="addon.drill",
            target_type="addon",
            target_id=record.addon_id,
            details={
                "addon_id": record.addon_id,
                "app_id": record.app_id,
                "drill_id": record.drill_id,
                "outcome": record.status,
                "trigger": record.trigger,
                "failing_check": record.failing_check,
                "reason": record.reason,
                "rto_seconds": record.rto_seconds,
                "target": record.target,
                "target_time": format_api_time(record.target_time) if record.target_time else None,
                "backup_id": record.backup_id,
                "cluster_name": record.cluster_name,
            },
            request_id=request_id,
            event_id=uuid.uuid5(DRILL_NAMESPACE, f"{record.drill_id}:{record.status}"),
        )

    # --- clean-up ------------------------------------------------------------------------

    async def _delete_cluster(self, name: str) -> None:
        if not name:
            return
        await self.engine.delete("Cluster", name)
        await self.engine.delete("ObjectStore", naming.object_store_name(name))

    async def _interrupted(self, record: DrillRecord, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._delete_cluster(name)
        self._fail(record, "interrupted", INTERRUPTED)
        with contextlib.suppress(Exception):
            await self._finish(record, None)

    async def recover(self) -> int:
        """At start: every drill cluster left behind is deleted, and every drill a kill cut
        short is recorded as failed. The number of clusters deleted."""
        deleted = 0
        for cluster in await self.engine.list("Cluster", {naming.LABEL_ROLE: naming.ROLE_DRILL}):
            if cluster["metadata"].get("labels", {}).get(naming.LABEL_DRILL_ID) in self.tasks:
                continue
            await self._delete_cluster(cluster["metadata"]["name"])
            deleted += 1
        for store in await self.engine.list("ObjectStore", {naming.LABEL_ROLE: naming.ROLE_DRILL}):
            if store["metadata"].get("labels", {}).get(naming.LABEL_DRILL_ID) not in self.tasks:
                await self.engine.delete("ObjectStore", store["metadata"]["name"])
        for record in await self.store.unfinished():
            if record.drill_id in self.tasks:
                continue
            self._fail(record, "interrupted", INTERRUPTED)
            await self._finish(record, None)
        return deleted

    async def close(self) -> None:
        """Cancel the running drills (each deletes its cluster on the way out)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
