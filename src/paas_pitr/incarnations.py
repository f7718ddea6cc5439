"""Incarnations: what one server folder of an addon id holds, as the bucket shows it, and
what a restore of it to an instant targets.

Each incarnation of an addon (a re-created addon, a restore) archives under its own folder.
A deleted one has no Cluster left to say what it was: its range comes from its folder (the
base backups of barman's catalog, the newest WAL object), its plan and archive history from
its tombstone (:mod:`paas_pitr.tombstones`), cut into ranges by the same rules as a live
addon's window (:mod:`paas_pitr.cnpg.window`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from paas_pitr.catalog import CatalogBackup
from paas_pitr.cnpg.builders import BackupEnd, PointInTime, RecoveryTarget
from paas_pitr.cnpg.history import ArchivePeriod
from paas_pitr.cnpg.projections import BackupRecord, BackupStatus
from paas_pitr.cnpg.window import (
    completed_backups,
    consistent_by,
    period_spans,
    restore_points_in,
)
from paas_pitr.errors import NoBackupForTarget, OutsideRecoverabilityWindow, UnknownPlan
from paas_pitr.plans import Tier, policy_for, tier_for_plan
from paas_pitr.timestamps import format_api_time
from paas_pitr.tombstones import Tombstone


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

    ``earliest`` is when the oldest completed base backup is consistent (its recorded end
    plus a margin, see :func:`paas_pitr.cnpg.window.consistent_by`). For a deleted
    incarnation ``latest`` is the newest restorable instant recorded when it was deleted
    (the segment being written then was never archived); for the live one it is the time
    the newest WAL object was written, an upper estimate (its own ``/backups`` window is
    exact). The standard tier restores base backups only: its ``earliest``
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
        if self.newest_wal is None:
            return []  # no WAL in the folder: nothing replays
        by_id = {b.backup_id: b for b in self.backups}
        spans = []
        for span in period_spans(
            self.periods,
            completed_backups(_record(b) for b in self.backups),
            current_latest=self.newest_wal,
            current_source="archive",
        ):
            # Never past what the folder holds, whatever was recorded.
            latest = min(span.latest, self.newest_wal) if span.latest else None
            if span.earliest is not None and latest is not None and span.earliest <= latest:
                spans.append(
                    Span(span.earliest, latest, [by_id[str(r.backup_id)] for r in span.backups])
                )
        return spans

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
            if not points:
                return None, None
            return consistent_by(_end(points[-1])), consistent_by(_end(points[0]))
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
        chosen = next(
            (b for b in incarnation.restore_points() if consistent_by(_end(b)) <= moment), None
        )
        if chosen is None:
            raise NoBackupForTarget(
                f"no completed base backup of incarnation {incarnation.server_name} ends at or "
                f"before {format_api_time(moment)}",
                details=details,
            )
        return BackupEnd(chosen.backup_id, consistent_by(_end(chosen))), chosen
    span = incarnation.span_for(moment)
    if span is None:
        raise OutsideRecoverabilityWindow(
            f"timestamp {format_api_time(moment)} is outside the restorable range of "
            f"incarnation {incarnation.server_name}: {_why_outside(incarnation, moment)}",
            details=details,
        )
    base = max(
        (b for b in span.backups if consistent_by(_end(b)) <= moment), key=_end, default=None
    )
    return PointInTime(moment), base
