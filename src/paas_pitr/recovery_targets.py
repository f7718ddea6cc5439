"""Restore requests that target something else than an instant: the newest restorable
instant (``latest``), an LSN, a transaction id, a named restore point, or "just before" an
event the finder listed, each checked against what the archive can replay before anything
is created.

What is checked, and against what:

- ``lsn``: within the current restorable range's LSN bounds, past the end LSN of its
  oldest completed base backup (``Backup.status.endLSN``: consistency is reached there) and
  before the start of the newest archived WAL segment (its name gives its start LSN; every
  record before it is archived, and followed by one PostgreSQL can stop at);
- ``restore_point``: recorded by ``POST .../restore-points`` (PostgreSQL keeps no list of
  them; an unrecorded name would replay to the end of the archive and fail), past that
  base backup end, in an archived segment;
- ``xid``: nothing in PostgreSQL maps a transaction id to a time or a position, so its
  commit record is looked for in the archived WAL of the current range (bounded by
  ``events_max_scan_mib``). A transaction that aborted, is still running, is not archived
  yet, or committed before the oldest base backup is refused; a range too long to scan is
  refused with ``wal_scan_too_large`` (list the events of a narrower range and restore
  ``before_event`` instead);
- ``before_event``: the event id's commit LSN and transaction id are checked against the
  commit record at that LSN in the archive.

Each target names the newest completed base backup ending before it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from paas_pitr.backups import ArchiveState
from paas_pitr.cnpg.builders import BackupEnd, RecoveryTarget
from paas_pitr.cnpg.projections import BackupRecord, BackupStatus
from paas_pitr.cnpg.targets import AtLsn, AtRestorePoint, AtXid, EndOfArchive
from paas_pitr.cnpg.window import consistent_by
from paas_pitr.context import Caller
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import (
    InvalidBody,
    InvalidInput,
    InvalidRecoveryTarget,
    OutsideRecoverabilityWindow,
    TargetNotReachable,
    UnknownEvent,
    UnknownRestorePoint,
    WalScanTooLarge,
)
from paas_pitr.events.scan import ArchivedSegment
from paas_pitr.events.service import ArchiveAccess, EventService, parse_event_id
from paas_pitr.lsn import format_lsn, parse_lsn
from paas_pitr.plans import Tier
from paas_pitr.restore_points import RestorePointService, validate_point_name
from paas_pitr.restore_targets import resolve_live_target
from paas_pitr.timestamps import format_api_time

TargetKind = Literal["timestamp", "latest", "lsn", "xid", "restore_point", "before_event"]
# The first normal transaction id (0-2 are reserved) and the largest 32-bit one.
_FIRST_XID, _LAST_XID = 3, 0xFFFFFFFF
_INCLUSIVE_KINDS = ("timestamp", "lsn", "xid")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TargetAsk:
    """What a restore request targets, as sent (validated for form, not reachability)."""

    kind: TargetKind
    value: str
    inclusive: bool | None = None

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": self.kind, "value": self.value}
        if self.inclusive is not None:
            described["inclusive"] = self.inclusive
        return described

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(self.describe()).encode()).hexdigest()


def parse_target_ask(
    *,
    timestamp: str | None = None,
    lsn: str | None = None,
    xid: str | int | None = None,
    restore_point: str | None = None,
    before_event: str | None = None,
    inclusive: bool | None = None,
) -> TargetAsk:
    """Exactly one target; ``timestamp: "latest"`` is the newest restorable instant.
    422 ``invalid_recovery_target`` otherwise."""
    given = {
        name: value
        for name, value in (
            ("timestamp", timestamp),
            ("lsn", lsn),
            ("xid", xid),
            ("restore_point", restore_point),
            ("before_event", before_event),
        )
        if value is not None
    }
    if not given:
        # As before targets other than a timestamp existed: a body without one is malformed.
        raise InvalidBody(
            "the body names no recovery target: timestamp (an instant or 'latest'), lsn, xid, "
            "restore_point or before_event",
            details={"field": "timestamp"},
        )
    if len(given) != 1:
        raise InvalidRecoveryTarget(
            "name exactly one recovery target: timestamp (an instant or 'latest'), lsn, xid, "
            f"restore_point or before_event (got {sorted(given) or 'none'})",
            details={"given": sorted(given)},
        )
    ((name, raw),) = given.items()
    kind: TargetKind = "latest" if name == "timestamp" and raw == "latest" else name  # type: ignore[assignment]
    if inclusive is not None and kind not in _INCLUSIVE_KINDS:
        raise InvalidRecoveryTarget(
            f"'inclusive' applies to a timestamp, an lsn or an xid, not to {kind}",
            details={"inclusive": inclusive, "kind": kind},
        )
    value = str(raw)
    if kind == "lsn":
        try:
            value = format_lsn(parse_lsn(value))
        except InvalidInput as exc:
            raise InvalidRecoveryTarget(exc.message, details=exc.details) from exc
    elif kind == "xid":
        if (
            isinstance(raw, bool)
            # ASCII digits only: "²" or "٣" are digits to str.isdigit, not transaction ids.
            or not (str(raw).isascii() and str(raw).isdigit())
            or not (_FIRST_XID <= int(raw) <= _LAST_XID)
        ):
            raise InvalidRecoveryTarget(
                f"invalid transaction id {raw!r}: an integer from {_FIRST_XID} to {_LAST_XID}",
                details={"xid": str(raw)},
            )
        value = str(int(raw))
    elif kind == "restore_point":
        validate_point_name(value)
    elif kind == "before_event":
        parse_event_id(value)
    return TargetAsk(kind, value, inclusive)


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    target: RecoveryTarget
    backup_id: str | None
    restores_to: datetime | None
    """The instant restored to, where known (a commit's or a restore point's time)."""


@dataclass(frozen=True, slots=True)
class LsnBounds:
    lower: int
    """The end LSN of the current range's oldest completed base backup."""
    upper: int
    """The start of the newest archived WAL segment."""
    backups: list[tuple[int, BackupRecord]]
    """The current range's completed base backups with their end LSN, oldest first."""
    segments: list[ArchivedSegment]

    def details(self) -> dict[str, Any]:
        return {"earliest_lsn": format_lsn(self.lower), "latest_lsn": format_lsn(self.upper)}

    def base_backup(self, lsn: int) -> str | None:
        """The newest base backup that ended before ``lsn``."""
        chosen = [b.backup_id for end, b in self.backups if end < lsn and b.backup_id]
        return chosen[-1] if chosen else None


class TargetResolver:
    def __init__(self, events: EventService, points: RestorePointService) -> None:
        self.events = events
        self.points = points

    async def resolve(
        self,
        caller: Caller,
        app_id: str,
        cluster: Manifest,
        tier: Tier,
        state: ArchiveState,
        ask: TargetAsk,
    ) -> ResolvedTarget:
        window = state.window
        if ask.kind == "latest":
            if window.latest is None or not window.is_open:
                raise OutsideRecoverabilityWindow(
                    "nothing is restorable yet: " + (window.message or "no open window"),
                    details=window.details(),
                )
            if tier is Tier.DAILY:
                daily = resolve_live_target(tier, window.latest, state)
                assert isinstance(daily, BackupEnd)
                return ResolvedTarget(daily, daily.backup_id, daily.ends_at)
            return ResolvedTarget(EndOfArchive(), None, window.latest)
        if tier is not Tier.PITR:
            raise InvalidRecoveryTarget(
                f"this plan restores the ends of base backups only: a {ask.kind} target needs "
                "WAL replay (the pro plan); restore to a timestamp or 'latest'",
                details={"kind": ask.kind},
            )
        access = self.events.access(caller, app_id, cluster)
        bounds = await self._bounds(access, state)
        if ask.kind == "lsn":
            return self._lsn(ask, bounds)
        if ask.kind == "restore_point":
            return await self._restore_point(caller, app_id, cluster, ask, bounds)
        if ask.kind == "xid":
            return await self._xid(access, ask, bounds)
        return await self._before_event(access, ask, bounds)

    async def _bounds(self, access: ArchiveAccess, state: ArchiveState) -> LsnBounds:
        current = next((r for r in state.window.ranges if r.current), None)
        if current is None:
            raise TargetNotReachable(
                "nothing of the current archive period is restorable yet: "
                + (state.window.message or "no open range"),
                details=state.window.details(),
            )
        backups = sorted(
            (
                (parse_lsn(b.end_lsn), b)
                for b in state.backups
                if b.status is BackupStatus.COMPLETED
                and b.end_lsn
                and b.stopped_at is not None
                and consistent_by(b.stopped_at) >= current.earliest
            ),
            key=lambda pair: (pair[0], pair[1].stopped_at or EPOCH),
        )
        segments = await access.segments()
        if not backups or not segments:
            raise TargetNotReachable(
                "the current range has no completed base backup with an end LSN, or its WAL "
                "archive is empty",
                details=state.window.details(),
            )
        return LsnBounds(backups[0][0], segments[-1].segment.start, backups, segments)

    def _lsn(self, ask: TargetAsk, bounds: LsnBounds) -> ResolvedTarget:
        lsn = parse_lsn(ask.value)
        if not bounds.lower < lsn < bounds.upper:
            where = (
                "before the end of the oldest base backup"
                if lsn <= bounds.lower
                else ("past the WAL archived so far (the newest segment is not proven complete)")
            )
            raise TargetNotReachable(
                f"LSN {ask.value} is outside the restorable LSN range "
                f"{format_lsn(bounds.lower)}..{format_lsn(bounds.upper)}: it is {where}",
                details={"lsn": ask.value, **bounds.details()},
            )
        backup = bounds.base_backup(lsn)
        assert backup is not None
        return ResolvedTarget(
            AtLsn(ask.value, backup, inclusive=ask.inclusive is not False), backup, None
        )

    async def _restore_point(
        self, caller: Caller, app_id: str, cluster: Manifest, ask: TargetAsk, bounds: LsnBounds
    ) -> ResolvedTarget:
        known = {p.name: p for p in await self.points.recorded(caller, app_id, cluster)}
        point = known.get(ask.value)
        if point is None:
            raise UnknownRestorePoint(
                f"no restore point named {ask.value!r} was created for this addon's current "
                "incarnation (GET .../restore-points lists them)",
                details={"restore_point": ask.value, "known": sorted(known)},
            )
        lsn = parse_lsn(point.lsn)
        newest = bounds.segments[-1].segment
        if lsn <= bounds.lower or lsn >= newest.end:
            raise TargetNotReachable(
                f"restore point {ask.value!r} at {point.lsn} is "
                + ("before the oldest base backup" if lsn <= bounds.lower else "not archived yet"),
                details={"restore_point": ask.value, "lsn": point.lsn, **bounds.details()},
            )
        backup = bounds.base_backup(lsn)
        assert backup is not None
        return ResolvedTarget(AtRestorePoint(ask.value, backup), backup, point.created_at)

    async def _xid(
        self, access: ArchiveAccess, ask: TargetAsk, bounds: LsnBounds
    ) -> ResolvedTarget:
        xid = int(ask.value)
        scanned = [s for s in bounds.segments if s.segment.end > bounds.lower]
        try:
            found = (await self.events.commits(access, scanned, {xid})).get(xid)
        except WalScanTooLarge as exc:
            raise WalScanTooLarge(
                f"transaction {xid} is validated by finding its commit in the archived WAL, "
                f"and the current range is too long to scan: {exc.message}; list the events "
                "of a narrower range (GET .../events) and restore before_event instead",
                details={"xid": xid, **exc.details},
            ) from exc
        if found is None or not found.committed or found.lsn <= bounds.lower:
            why = (
                "it aborted"
                if found is not None and not found.committed
                else "its commit is before the end of the oldest base backup"
                if found is not None
                else "no commit record of it is in the archived WAL of the current range: it "
                "is still running or not archived yet, aborted without a record, or "
                "committed before the oldest base backup"
            )
            raise TargetNotReachable(
                f"transaction {xid} cannot be restored to: {why}",
                details={"xid": xid, **bounds.details()},
            )
        backup = bounds.base_backup(found.lsn)
        assert backup is not None
        return ResolvedTarget(
            AtXid(xid, backup, inclusive=ask.inclusive is not False), backup, found.at
        )

    async def _before_event(
        self, access: ArchiveAccess, ask: TargetAsk, bounds: LsnBounds
    ) -> ResolvedTarget:
        lsn, xid, _ = parse_event_id(ask.value)
        around = [s for s in bounds.segments if s.segment.end > lsn][:2]
        found = (
            (await self.events.commits(access, around, {xid})).get(xid)
            if around and around[0].segment.start <= lsn
            else None
        )
        if found is None or found.lsn != lsn or not found.committed:
            raise UnknownEvent(
                f"event {ask.value!r} is not in this addon's archive: no commit of transaction "
                f"{xid} at {format_lsn(lsn)}",
                details={"before_event": ask.value},
            )
        backup = bounds.base_backup(lsn)
        if lsn <= bounds.lower or backup is None:
            raise TargetNotReachable(
                f"event {ask.value!r} committed before the end of the oldest base backup: "
                "nothing before it can be restored",
                details={"before_event": ask.value, **bounds.details()},
            )
        return ResolvedTarget(AtXid(xid, backup, inclusive=False), backup, found.at)


def describe_restores_to(resolved: ResolvedTarget) -> str | None:
    return format_api_time(resolved.restores_to) if resolved.restores_to else None
