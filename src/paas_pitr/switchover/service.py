"""The in-place restore use-case after its recovery cluster is created: verify it, switch
the addon to it, keep the previous cluster for an undo, delete it when the undo expires.

A background loop (:meth:`InPlaceService.run_forever`) moves every in-place restore on:

    (recovery Cluster ready) -> verifying -> switching -> switched [-> undoing -> undone]
                                       \\-> failed (nothing switched)

Every intent (``switching``, ``undoing``) is written on the recovery Cluster before anything
is switched, and the engine applies a switch id once: a service killed at any point ends,
once restarted, with the addon switched or not switched, never half.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from paas_pitr.addons import AddonService
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import build_backup
from paas_pitr.cnpg.history import ArchivePeriod, archive_periods, incarnation_server_name_of
from paas_pitr.cnpg.projections import RestoreState, cluster_version, restore_state
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import Conflict, InPlaceNotAvailable, NotFound, PitrError, UndoNotAvailable
from paas_pitr.restore_views import RESTORE_NAMESPACE, request_of, restore_view
from paas_pitr.switchover.engine import SwitchingEngine
from paas_pitr.switchover.expired import with_expired
from paas_pitr.switchover.final_end import record_final_end
from paas_pitr.switchover.manifests import switched_pair, undone_pair
from paas_pitr.switchover.record import (
    ANNOTATION_HIBERNATION,
    InPlaceRecord,
    Phase,
    record_of,
    with_record,
)
from paas_pitr.timestamps import format_api_time, parse_timestamp
from paas_pitr.tombstones import record_deletion, require_bucket, tombstone_key

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system:paas-pitr"
# How long after a switch (or undo) the stopped incarnation's archive end is followed.
FINAL_END_WATCH = timedelta(minutes=10)


class CheckOutcome(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def figures(self) -> dict[str, Any]: ...


class VerificationOutcome(Protocol):
    @property
    def passed(self) -> bool: ...
    @property
    def failing(self) -> CheckOutcome | None: ...
    @property
    def checks(self) -> Sequence[CheckOutcome]: ...


class Verifier(Protocol):
    """:func:`paas_pitr.verification.verify_recovered_cluster`'s signature."""

    async def __call__(
        self,
        conninfo: str,
        *,
        target_time: datetime | None,
        max_distance_seconds: float,
        amcheck_budget_seconds: float,
    ) -> VerificationOutcome: ...


class VerifiableEngine(SwitchingEngine, Protocol):
    async def admin_conninfo(self, cluster: Manifest) -> str | None:
        """A superuser's conninfo of ``cluster``'s primary (``None``: not reachable yet)."""
        ...


def refuse_while_switching(cluster: Manifest) -> None:
    """``Conflict`` for a recovery Cluster an in-place switch (or undo) is moving: deleting
    it then would leave the addon half switched."""
    record = record_of(cluster)
    if record is not None and record.phase in (Phase.SWITCHING, Phase.UNDOING):
        raise Conflict(
            f"restore {cluster['metadata']['labels'].get(naming.LABEL_RESTORE_ID)!r} is "
            f"{record.phase.value}; delete it once that has ended",
            details={"status": record.phase.value},
        )


def verification_target_time(request: dict[str, Any]) -> datetime | None:
    """The instant verification bounds the newest commit by: the restore's instant for a
    timestamp target only. Any other target (``latest``, an LSN, a transaction id, a restore
    point, before an event) is reached by WAL position, and its ``restores_to`` is what the
    window or a commit's time said when it was asked: commits replayed up to the target may
    be newer (``latest`` replays what was archived after the request), so a bound there
    fails a correct restore."""
    restores_to = request.get("restores_to")
    if request.get("recovery_target") is not None or not restores_to:
        return None
    return parse_timestamp(restores_to)


_CHECK_HINTS = {
    "promoted_and_writable": "the restored server did not finish its recovery or refuses "
    "writes; its log says why",
    "reached_target": "the recovered data does not end at the recovery target (WAL it "
    "needs was missing, or commits past it were replayed); pick another target in the "
    "window, or restore into a new cluster to inspect it",
}


def failed_check_hint(check: str | None, restore_url: str) -> str:
    """What to do once verification failed ``check``: nothing was switched, and the
    restored cluster is hibernated, kept until its restore is deleted."""
    first = _CHECK_HINTS.get(check or "", "inspect the failing check's reason")
    return (
        f"{first}. The addon was not switched and is unchanged; the restored cluster is "
        f"hibernated (its data kept until DELETE {restore_url})"
    )


def restore_url(cluster: Manifest) -> str:
    labels = cluster["metadata"].get("labels", {})
    return (
        f"/v1/apps/{labels.get(naming.LABEL_APP)}/addons/{labels.get(naming.LABEL_ADDON)}"
        f"/restores/{labels.get(naming.LABEL_RESTORE_ID)}"
    )


def supports_in_place(engine: object) -> bool:
    return isinstance(engine, SwitchingEngine) and hasattr(engine, "admin_conninfo")


class InPlaceService:
    def __init__(self, addons: AddonService, verify: Verifier) -> None:
        self.addons = addons
        self.engine = addons.engine
        self.settings = addons.settings
        self.verify = verify
        # One restore moves at a time in this process: the loop and an undo request must
        # not interleave their steps on the same pair of clusters.
        self._lock = asyncio.Lock()

    def _switching_engine(self) -> VerifiableEngine:
        engine = self.engine
        if not supports_in_place(engine):
            raise InPlaceNotAvailable(f"the {engine.name} engine cannot switch an addon in place")
        return engine  # type: ignore[return-value]

    # --- the loop ----------------------------------------------------------------------

    async def run_forever(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The loop must outlive any one bad object or transient fault.
                log.exception("in-place restores: pass failed; retrying")
            await asyncio.sleep(interval)

    async def pass_once(self, now: datetime | None = None) -> None:
        if not supports_in_place(self.engine):
            return
        clusters = await self.engine.list("Cluster", {naming.LABEL_ROLE: naming.ROLE_RESTORE})
        for cluster in clusters:
            if request_of(cluster).get("target") != "in_place":
                continue
            async with self._lock:
                fresh = await self.engine.get("Cluster", cluster["metadata"]["name"])
                if fresh is None:
                    continue
                try:
                    await self._advance(fresh, now or datetime.now(UTC))
                except PitrError as exc:
                    log.warning(
                        "in-place restore %s: %s (will retry)", cluster["metadata"]["name"], exc
                    )

    async def _advance(self, cluster: Manifest, now: datetime) -> None:
        record = record_of(cluster)
        phase = record.phase if record is not None else None
        if phase in (None, Phase.VERIFYING):
            state, _ = restore_state(cluster)
            if state is RestoreState.READY:
                await self._verify_then_switch(cluster, record)
        elif phase is Phase.SWITCHING:
            assert record is not None
            await self._switch(cluster, record)
        elif phase is Phase.UNDOING:
            assert record is not None
            await self._undo(cluster, record)
        elif phase in (Phase.SWITCHED, Phase.UNDONE):
            assert record is not None
            if record.undo_until is not None and now >= record.undo_until:
                await self._expire(cluster, record)
                return
            moved_at = record.undone_at if phase is Phase.UNDONE else record.switched_at
            if moved_at is not None and now - moved_at <= FINAL_END_WATCH:
                # CNPG removes the stopped server's pods after the switch returns, and
                # its last segments are archived then: follow the archive's end a while.
                stopped = record.to_server if phase is Phase.UNDONE else record.from_server
                if stopped is not None:
                    await record_final_end(self.engine, self.settings, cluster, stopped)

    async def _save(self, cluster: Manifest, record: InPlaceRecord) -> Manifest:
        current = await self.engine.get("Cluster", cluster["metadata"]["name"])
        if current is None:
            raise NotFound(f"cluster {cluster['metadata']['name']!r} is gone")
        current.pop("status", None)
        return await self.engine.apply(with_record(current, record))

    # --- verify ------------------------------------------------------------------------

    async def _verify_then_switch(self, cluster: Manifest, record: InPlaceRecord | None) -> None:
        engine = self._switching_engine()
        if record is None:
            record = InPlaceRecord(phase=Phase.VERIFYING, at=datetime.now(UTC))
            cluster = await self._save(cluster, record)
        conninfo = await engine.admin_conninfo(cluster)
        if conninfo is None:
            return  # not reachable yet: the next pass verifies
        report = await self.verify(
            conninfo,
            target_time=verification_target_time(request_of(cluster)),
            max_distance_seconds=self.settings.inplace_max_distance_seconds,
            amcheck_budget_seconds=self.settings.inplace_amcheck_budget_seconds,
        )
        checks = [
            {"name": c.name, "passed": c.passed, "reason": c.reason, "figures": c.figures}
            for c in report.checks
        ]
        if not report.passed:
            failing = report.failing
            reason = (
                f"verification failed ({failing.name}): {failing.reason}"
                if failing is not None
                else "verification failed"
            )
            await self._record_unused_incarnation(cluster)
            hint = failed_check_hint(
                failing.name if failing is not None else None, restore_url(cluster)
            )
            await self._fail(
                cluster, record.evolve(phase=Phase.FAILED, reason=reason, checks=checks), hint
            )
            return
        addon = await self._addon_of(cluster)
        if addon is None:
            reason = "the addon was deleted before the restored cluster could be switched to"
            hint = (
                "nothing was switched; restore the deleted addon's archive into a new "
                'cluster (target "new_cluster"), then delete this restore with DELETE '
                f"{restore_url(cluster)}"
            )
            await self._fail(cluster, record.evolve(phase=Phase.FAILED, reason=reason), hint)
            return
        # The intent, before anything is touched.
        intent = record.evolve(
            phase=Phase.SWITCHING,
            switch_id=uuid.uuid4().hex,
            from_server=incarnation_server_name_of(addon),
            to_server=incarnation_server_name_of(cluster),
            at=datetime.now(UTC),
            checks=checks,
        )
        cluster = await self._save(cluster, intent)
        await self._switch(cluster, intent)

    async def _fail(self, cluster: Manifest, record: InPlaceRecord, hint: str) -> None:
        """Record the failure with ``hint`` and hibernate the restored cluster: its server
        stops (the local engine stops PostgreSQL, CNPG removes the pods) and its data stays
        for ``DELETE .../restores/{id}`` to remove; a failed restore must not keep a server
        running, nor count as a restore under way."""
        current = await self.engine.get("Cluster", cluster["metadata"]["name"])
        if current is None:
            raise NotFound(f"cluster {cluster['metadata']['name']!r} is gone")
        current.pop("status", None)
        failed = with_record(current, record.evolve(hint=hint))
        failed["metadata"]["annotations"][ANNOTATION_HIBERNATION] = "on"
        await self.engine.apply(failed)
        self._audit_system(cluster, "addon.restore_failed", "failed", reason=record.reason)

    async def _record_unused_incarnation(self, cluster: Manifest) -> None:
        """The folder a failed restore archived to is named like an incarnation of the
        addon, and will never be one: record it like a deleted incarnation's (retention
        from now), or nothing would ever expire it. Raises when the record cannot be
        written (the pass retries)."""
        labels = cluster["metadata"]["labels"]
        as_addon = json.loads(json.dumps(cluster))
        as_addon["metadata"]["name"] = labels[naming.LABEL_ADDON]
        await record_deletion(
            self.engine,
            self.settings,
            as_addon,
            version=cluster_version(cluster),
            actor=SYSTEM_ACTOR,
        )

    async def _addon_of(self, cluster: Manifest) -> Manifest | None:
        addon_id = cluster["metadata"]["labels"][naming.LABEL_ADDON]
        addon = await self.engine.get("Cluster", addon_id)
        if addon is None or addon["metadata"].get("labels", {}).get(naming.LABEL_ROLE) != (
            naming.ROLE_ADDON
        ):
            return None
        return addon

    # --- switch ------------------------------------------------------------------------

    async def _close_incarnation(self, addon: Manifest, actor: str) -> list[ArchivePeriod]:
        """Record the incarnation the addon stops archiving into as deleted (its retention
        counts from now) and return its archive periods, closed now (none without a record)."""
        tombstone = await record_deletion(
            self.engine, self.settings, addon, version=cluster_version(addon), actor=actor
        )
        if tombstone is None:
            return []
        history = {naming.ANNOTATION_ARCHIVE_HISTORY: tombstone.archive_history}
        return archive_periods({"metadata": {"annotations": history}}, archiving_now=False)

    async def _switch(self, cluster: Manifest, record: InPlaceRecord) -> None:
        engine = self._switching_engine()
        assert record.switch_id and record.from_server and record.to_server
        addon = await self._addon_of(cluster)
        if addon is None:
            raise NotFound("the addon of an in-place restore under way is gone")
        if incarnation_server_name_of(addon) == record.from_server:
            # Not switched yet: the previous incarnation stops archiving at the switch, and
            # is recorded like a deleted one (its retention counts from now).
            closed = await self._close_incarnation(addon, SYSTEM_ACTOR)
            active, kept = switched_pair(addon, cluster, closed=closed)
        else:
            active, kept = addon, cluster  # the objects were switched before a restart
        kept = with_record(kept, record)
        unavailable = await engine.switch_clusters(record.switch_id, active, kept)
        await record_final_end(self.engine, self.settings, kept, record.from_server)
        now = datetime.now(UTC)
        done = record.evolve(
            phase=Phase.SWITCHED,
            switched_at=now,
            undo_until=now + timedelta(hours=self.settings.undo_hours),
            unavailable_seconds=round(unavailable, 3),
        )
        await self._save(cluster, done)
        await self._first_backup(active, record.switch_id)
        labels = cluster["metadata"]["labels"]
        self.addons.audit.log_event(
            actor=SYSTEM_ACTOR,
            action="addon.switchover",
            target_type="addon",
            target_id=labels[naming.LABEL_ADDON],
            details={
                "addon_id": labels[naming.LABEL_ADDON],
                "app_id": labels.get(naming.LABEL_APP),
                "restore_id": labels.get(naming.LABEL_RESTORE_ID),
                "from_incarnation": record.from_server,
                "to_incarnation": record.to_server,
                "kept_cluster": cluster["metadata"]["name"],
                "undo_until": format_api_time(done.undo_until) if done.undo_until else None,
                "unavailable_seconds": done.unavailable_seconds,
            },
            event_id=uuid.uuid5(RESTORE_NAMESPACE, f"{record.switch_id}:switchover"),
        )

    async def _first_backup(self, addon: Manifest, switch_id: str) -> None:
        """A base backup of the incarnation the addon now archives to: its range opens
        with it (a folder without one restores nothing)."""
        stored = await self.engine.get("Cluster", addon["metadata"]["name"])
        if stored is None:
            return
        config = await self.addons.render_config()
        name = f"{stored['metadata']['name']}-switch-{switch_id[:8]}"
        with contextlib.suppress(Conflict):
            await self.engine.create(build_backup(stored, name, config))

    # --- undo --------------------------------------------------------------------------

    async def undo(self, caller: Caller, app_id: str, addon_id: str, restore_id: str) -> None:
        """Switch the addon back to the cluster a switched in-place restore keeps; audited
        ``addon.undo``. ``UndoNotAvailable`` unless the restore is switched and its undo
        time has not passed; ``NotFound`` like a missing restore."""
        self._switching_engine()
        await self.addons.get_cluster(caller, app_id, addon_id)
        found = await self.engine.list(
            "Cluster",
            {
                naming.LABEL_TENANT: caller.tenant,
                naming.LABEL_APP: app_id,
                naming.LABEL_ADDON: addon_id,
                naming.LABEL_RESTORE_ID: restore_id,
            },
        )
        if not found:
            raise NotFound(f"restore {restore_id!r} not found")
        async with self._lock:
            cluster = await self.engine.get("Cluster", found[0]["metadata"]["name"])
            if cluster is None:
                raise NotFound(f"restore {restore_id!r} not found")
            record = record_of(cluster)
            now = datetime.now(UTC)
            if record is None or record.phase is not Phase.SWITCHED:
                raise UndoNotAvailable(
                    f"restore {restore_id!r} has not switched the addon "
                    f"(it is {record.phase.value if record else 'not switched'})",
                    details={"status": record.phase.value if record else None},
                )
            if record.undo_until is not None and now >= record.undo_until:
                raise UndoNotAvailable(
                    f"the undo of restore {restore_id!r} expired at "
                    f"{format_api_time(record.undo_until)}",
                    details={"undo_until": format_api_time(record.undo_until)},
                )
            self._refuse_unless_current(restore_id, record, await self._addon_of(cluster))
            intent = record.evolve(phase=Phase.UNDOING, switch_id=uuid.uuid4().hex, at=now)
            cluster = await self._save(cluster, intent)
            await self._undo(cluster, intent, actor=caller.actor, request_id=caller.request_id)

    @staticmethod
    def _refuse_unless_current(
        restore_id: str, record: InPlaceRecord, addon: Manifest | None
    ) -> None:
        """``UndoNotAvailable`` unless the addon still runs the incarnation ``record``
        switched it to: once a newer in-place restore has switched it, undoing this one
        would make the addon archive its previous incarnation again after a switch it knows
        nothing of, mixing two histories in one archive folder."""
        current = incarnation_server_name_of(addon) if addon is not None else None
        if current != record.to_server:
            raise UndoNotAvailable(
                f"restore {restore_id!r} no longer holds the addon's current data (the addon "
                f"runs incarnation {current!r}, this restore switched it to "
                f"{record.to_server!r}); only the restore that made the addon's current "
                "switch can be undone",
                details={
                    "status": record.phase.value,
                    "current_incarnation": current,
                    "to_incarnation": record.to_server,
                },
            )

    async def _undo(
        self,
        cluster: Manifest,
        record: InPlaceRecord,
        *,
        actor: str = SYSTEM_ACTOR,
        request_id: str | None = None,
    ) -> None:
        engine = self._switching_engine()
        assert record.switch_id and record.from_server and record.to_server
        addon = await self._addon_of(cluster)
        if addon is None:
            raise NotFound("the addon of an in-place restore being undone is gone")
        labels = cluster["metadata"]["labels"]
        if incarnation_server_name_of(addon) == record.to_server:
            at = datetime.now(UTC)
            # The restored incarnation stops archiving; the previous one is live again.
            closed = await self._close_incarnation(addon, actor)
            active, kept = undone_pair(addon, cluster, closed=closed, at=at)
        else:
            active, kept = addon, cluster
        kept = with_record(kept, record)
        unavailable = await engine.switch_clusters(record.switch_id, active, kept)
        await record_final_end(self.engine, self.settings, kept, record.to_server)
        bucket = require_bucket(self.engine, self.settings)
        await bucket.delete(
            tombstone_key(labels[naming.LABEL_TENANT], labels[naming.LABEL_APP], record.from_server)
        )
        now = datetime.now(UTC)
        done = record.evolve(
            phase=Phase.UNDONE,
            undone_at=now,
            undo_until=now + timedelta(hours=self.settings.undo_hours),
            unavailable_seconds=round(unavailable, 3),
        )
        await self._save(cluster, done)
        await self._first_backup(active, record.switch_id)
        self.addons.audit.log_event(
            actor=actor,
            action="addon.undo",
            target_type="addon",
            target_id=labels[naming.LABEL_ADDON],
            details={
                "addon_id": labels[naming.LABEL_ADDON],
                "app_id": labels.get(naming.LABEL_APP),
                "restore_id": labels.get(naming.LABEL_RESTORE_ID),
                "back_to_incarnation": record.from_server,
                "kept_incarnation": record.to_server,
                "kept_cluster": cluster["metadata"]["name"],
                "kept_until": format_api_time(now + timedelta(hours=self.settings.undo_hours)),
                "unavailable_seconds": done.unavailable_seconds,
            },
            request_id=request_id,
            event_id=uuid.uuid5(RESTORE_NAMESPACE, f"{record.switch_id}:undo"),
        )

    # --- expiry ------------------------------------------------------------------------

    async def _expire(self, cluster: Manifest, record: InPlaceRecord) -> None:
        """The undo time has passed: the kept cluster goes (its archive folder stays,
        recorded as deleted when it was switched away from)."""
        name = cluster["metadata"]["name"]
        addon = await self._addon_of(cluster)
        if addon is not None:
            # The restore stays listed once the Cluster it is read from is gone.
            view = await restore_view(self.engine, cluster)
            addon.pop("status", None)
            await self.engine.apply(
                with_expired(
                    addon,
                    view,
                    undo_until=format_api_time(record.undo_until) if record.undo_until else None,
                )
            )
        await self.engine.delete("Cluster", name)
        await self.engine.delete("ObjectStore", naming.object_store_name(name))
        self._audit_system(
            cluster,
            "addon.undo_expired",
            "undo_expired",
            kept_incarnation=incarnation_server_name_of(cluster),
            undo_until=format_api_time(record.undo_until) if record.undo_until else None,
        )

    def _audit_system(
        self, cluster: Manifest, action: str, outcome: str, **details: object
    ) -> None:
        labels = cluster["metadata"]["labels"]
        restore_id = labels.get(naming.LABEL_RESTORE_ID, "")
        self.addons.audit.log_event(
            actor=SYSTEM_ACTOR,
            action=action,
            target_type="addon",
            target_id=labels.get(naming.LABEL_ADDON, ""),
            details={
                "addon_id": labels.get(naming.LABEL_ADDON),
                "app_id": labels.get(naming.LABEL_APP),
                "restore_id": restore_id,
                "cluster_name": cluster["metadata"]["name"],
                **details,
            },
            event_id=uuid.uuid5(RESTORE_NAMESPACE, f"{restore_id}:{outcome}"),
        )
