"""What a restore may target: restorable ranges (pro) and restore points (standard).

Computed from CNPG objects only (the Cluster with its status and archive history, its
Backups, the plugin's ObjectStore), so both engines and every replica give one answer.

A range lies inside one period of continuous archiving of one incarnation: it starts at the
end of the oldest completed base backup taken wholly inside that period and ends at the
newest restorable instant (now, for the current period; when archiving was switched off,
for an earlier one). PostgreSQL silently restores the wrong data for a target before a
backup's end, and never finishes for one past the archived WAL, so nothing outside a range
is ever offered.

Over 400 lines on purpose: ranges, restore points and the window's states are one
computation over the same periods and backups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.history import (
    UNREADABLE_SINCE,
    ArchivePeriod,
    archive_periods,
    incarnation_server_name_of,
)
from paas_pitr.cnpg.projections import (
    BackupRecord,
    BackupStatus,
    archive_server_name,
    condition,
    uses_plugin,
)
from paas_pitr.errors import UnknownPlan
from paas_pitr.plans import Tier, parse_tier
from paas_pitr.timestamps import format_api_time, parse_k8s_time

Manifest = Mapping[str, Any]
LatestSource = Literal["archive", "estimate", "recorded", "none"]


class WindowState(StrEnum):
    OPEN = "open"
    """At least one instant (pro) or backup end (standard) can be restored now."""
    OPENING = "opening"
    """A base backup has completed; the WAL past its end is not archived yet."""
    WAITING_FOR_BACKUP = "waiting_for_backup"
    """Archiving is on, but no base backup of the current period has completed."""
    NONE = "none"
    """The plan has no backups (WAL archiving is off)."""


class RestorableRange(BaseModel):
    """Every instant from ``earliest`` to ``latest`` (inclusive) can be restored exactly."""

    earliest: datetime
    latest: datetime
    latest_source: LatestSource
    server_name: str = Field(description="The archive folder the range is replayed from")
    current: bool = Field(description="Whether the range still grows (archiving is on)")
    ended_at: datetime | None = Field(
        default=None, description="When WAL archiving was switched off, ending this range"
    )
    ended_because: str | None = None


class RestorePoint(BaseModel):
    """A standard-tier restore target: one completed base backup, restored to its end."""

    backup_id: str
    name: str
    at: datetime = Field(
        description="When the base backup is surely consistent (its end, plus a margin for "
        "the end-of-backup record): a restore to it contains no commit after this"
    )


class RecoverabilityWindow(BaseModel):
    state: WindowState = WindowState.NONE
    message: str | None = Field(default=None, description="The state in a sentence")
    earliest: datetime | None = Field(
        default=None, description="Start of the current range: end of its oldest base backup"
    )
    latest: datetime | None = Field(default=None, description="Newest restorable instant")
    latest_source: LatestSource = "none"
    opens_at: datetime | None = Field(
        default=None, description="While opening: when the first instant is expected"
    )
    ranges: list[RestorableRange] = Field(
        default_factory=list, description="Restorable ranges, oldest first (pro)"
    )
    restore_points: list[RestorePoint] = Field(
        default_factory=list, description="Completed base backups, newest first (standard)"
    )

    @property
    def is_open(self) -> bool:
        return self.state is WindowState.OPEN

    def range_for(self, moment: datetime) -> RestorableRange | None:
        return next((r for r in self.ranges if r.earliest <= moment <= r.latest), None)

    def contains(self, moment: datetime) -> bool:
        return self.range_for(moment) is not None

    def details(self) -> dict[str, Any]:
        """The window as error details carry it (API times)."""

        def when(moment: datetime | None) -> str | None:
            return format_api_time(moment) if moment else None

        return {
            "window": {
                "state": self.state.value,
                "earliest": when(self.earliest),
                "latest": when(self.latest),
                "ranges": [
                    {"earliest": when(r.earliest), "latest": when(r.latest)} for r in self.ranges
                ],
            }
        }


def _status_first_point(cluster: Manifest, object_store: Manifest | None) -> datetime | None:
    """In-tree: ``Cluster.status.firstRecoverabilityPoint``. Plugin: the ObjectStore's
    ``serverRecoveryWindow[serverName]`` (the Cluster fields are never set for plugins)."""
    if uses_plugin(cluster):
        server = archive_server_name(cluster) or ""
        store_status = (object_store or {}).get("status")
        windows = (store_status or {}).get("serverRecoveryWindow") if store_status else None
        entry = windows.get(server) if isinstance(windows, Mapping) else None
        return parse_k8s_time((entry or {}).get("firstRecoverabilityPoint"))
    status = cluster.get("status")
    return parse_k8s_time(status.get("firstRecoverabilityPoint")) if status else None


# How long after the end time barman records a base backup is surely consistent. Barman
# reads now() just before pg_backup_stop() writes the end-of-backup record, so on a busy
# database commits land between the two: a target in that gap makes PostgreSQL stop with
# "requested recovery stop point is before consistent recovery point" (measured: a few
# milliseconds; a second covers a stalled machine).
BACKUP_END_MARGIN = timedelta(seconds=1)


def consistent_by(end: datetime) -> datetime:
    """The instant by which a base backup that ended at ``end`` (barman's end time) is
    consistent: the earliest target it can serve, and what a restore of it contains.

    Kubernetes and CNPG write times in whole seconds, truncated, so a whole-second ``end``
    may stand for any instant of that second: one more second is added for it.
    """
    truncated = end.microsecond == 0
    return end + BACKUP_END_MARGIN + (timedelta(seconds=1) if truncated else timedelta(0))


def newest_restorable(
    cluster: Manifest,
    *,
    last_archived_at: datetime | None,
    now: datetime | None,
    archive_timeout: timedelta | None,
) -> tuple[datetime | None, LatestSource]:
    """The newest restorable instant of a cluster that archives now.

    ``last_archived_at`` is the exact figure when the engine can read the archive. Without
    it, and only while ``ContinuousArchiving`` is True, ``now - archive_timeout`` is a
    conservative estimate (CNPG's status has no last-archived time).
    """
    if last_archived_at is not None:
        return last_archived_at, "archive"
    archiving = condition(cluster, "ContinuousArchiving")
    if (
        archiving is not None
        and archiving.get("status") == "True"
        and now is not None
        and archive_timeout is not None
    ):
        return now - archive_timeout, "estimate"
    return None, "none"


def _in_period(
    backup: BackupRecord, period: ArchivePeriod, previous_off: datetime | None = None
) -> bool:
    """A backup restores only if all WAL from its start to its end was archived.

    Backup times are whole seconds (truncated): a start in the second archiving came back
    counts, unless archiving also went away in that second (the backup may have begun
    before the gap); an end counts only once surely consistent before archiving went away.
    """
    assert backup.stopped_at is not None
    if period.on is not None:
        started = backup.started_at
        if started is None or started < period.on.replace(microsecond=0):
            return False
        if previous_off is not None and started <= previous_off:
            return False
    return period.off is None or consistent_by(backup.stopped_at) <= period.off


def _with_previous_off(
    periods: list[ArchivePeriod],
) -> list[tuple[ArchivePeriod, datetime | None]]:
    return [(p, periods[i - 1].off if i else None) for i, p in enumerate(periods)]


def _end_of(backup: BackupRecord) -> datetime:
    assert backup.stopped_at is not None
    return backup.stopped_at


def _tier_of(cluster: Manifest) -> Tier:
    labels = (cluster.get("metadata") or {}).get("labels") or {}
    try:
        return parse_tier(str(labels.get(naming.LABEL_TIER, Tier.PITR.value)))
    except UnknownPlan:
        return Tier.PITR


@dataclass(frozen=True, slots=True)
class PeriodSpan:
    """What one archive period can restore: from the end of its oldest base backup taken
    wholly inside it to its newest restorable instant."""

    period: ArchivePeriod
    backups: list[BackupRecord]
    """The completed base backups taken wholly inside the period, oldest first."""
    earliest: datetime | None
    latest: datetime | None
    latest_source: LatestSource

    @property
    def restorable(self) -> bool:
        return (
            self.earliest is not None and self.latest is not None and (self.earliest <= self.latest)
        )


def completed_backups(backups: Iterable[BackupRecord]) -> list[BackupRecord]:
    """The completed base backups with an end, oldest first."""
    return sorted(
        (b for b in backups if b.status is BackupStatus.COMPLETED and b.stopped_at is not None),
        key=_end_of,
    )


def period_spans(
    periods: list[ArchivePeriod],
    completed: list[BackupRecord],
    *,
    current_latest: datetime | None,
    current_source: LatestSource,
    first_point: datetime | None = None,
) -> list[PeriodSpan]:
    """One span per archive period, oldest first. ``current_latest`` is the newest
    restorable instant of a period still on; a period switched off ends at the instant
    recorded then. ``first_point`` is the operator's own start of the incarnation's first
    period (it knows what retention removed), preferred to the Backups'."""
    spans = []
    for index, (period, previous_off) in enumerate(_with_previous_off(periods)):
        members = [b for b in completed if _in_period(b, period, previous_off)]
        earliest = members[0].stopped_at if members else None
        if index == 0 and period.on is None:
            earliest = first_point or earliest
        if earliest is not None:
            earliest = consistent_by(earliest)
        if period.off is None:
            latest, source = current_latest, current_source
        else:
            latest, source = period.latest, "recorded"
        spans.append(PeriodSpan(period, members, earliest, latest, source))
    return spans


def restore_points_in(
    periods: list[ArchivePeriod], completed: list[BackupRecord]
) -> list[BackupRecord]:
    """The standard tier's restore targets: completed backups taken wholly inside an archive
    period (the WAL from their start to their end was archived), newest first."""
    pairs = _with_previous_off(periods)
    return [
        b
        for b in reversed(completed)
        if b.backup_id and any(_in_period(b, p, off) for p, off in pairs)
    ]


def _ended_because(period: ArchivePeriod) -> str | None:
    if period.off is None:
        return None
    return (
        f"WAL archiving was switched off at {format_api_time(period.off)} (the plan had no "
        "backups); WAL written after that was never archived"
    )


def recoverability_window(
    cluster: Manifest,
    backups: Iterable[BackupRecord],
    *,
    object_store: Manifest | None = None,
    last_archived_at: datetime | None = None,
    now: datetime | None = None,
    archive_timeout: timedelta | None = None,
) -> RecoverabilityWindow:
    """The restorable ranges (pro) or restore points (standard) of ``cluster``'s current
    incarnation, from its Backups (this incarnation's only) and archive history."""
    server = archive_server_name(cluster)
    periods = archive_periods(cluster, archiving_now=server is not None)
    server = server or incarnation_server_name_of(cluster)
    completed = completed_backups(backups)
    current_period = periods[-1] if periods and periods[-1].off is None else None

    if _tier_of(cluster) is Tier.DAILY:
        return _standard_window(restore_points_in(periods, completed), current_period, now)

    latest, source = newest_restorable(
        cluster, last_archived_at=last_archived_at, now=now, archive_timeout=archive_timeout
    )
    spans = period_spans(
        periods,
        completed,
        current_latest=latest,
        current_source=source,
        first_point=_status_first_point(cluster, object_store),
    )
    ranges = [
        RestorableRange(
            earliest=span.earliest,
            latest=span.latest,
            latest_source=span.latest_source,
            server_name=server,
            current=span.period is current_period,
            ended_at=span.period.off,
            ended_because=_ended_because(span.period),
        )
        for span in spans
        if span.restorable and span.earliest is not None and span.latest is not None
    ]
    current = spans[-1] if current_period is not None else None
    # The current range's bounds; no latest until it is restorable (an archived instant
    # before its first backup is consistent restores nothing of it).
    restorable = current is not None and current.restorable
    window = RecoverabilityWindow(
        earliest=current.earliest if current else None,
        latest=current.latest if current and restorable else None,
        latest_source=current.latest_source if current and restorable else "none",
        ranges=ranges,
    )
    if current_period is None:
        window.state = WindowState.NONE
        window.message = "WAL archiving is off: the plan has no backups"
        if ranges:
            window.state = WindowState.OPEN
            window.message += "; the ranges archived before remain restorable"
    elif current_period.on == UNREADABLE_SINCE:
        window.state = WindowState.NONE
        window.message = (
            f"the archive history on the Cluster ({naming.ANNOTATION_ARCHIVE_HISTORY}) is "
            "unreadable, so no instant can be proven restorable; change the plan (to the same "
            "plan is enough) to start a new history, then wait for the next base backup"
        )
    elif window.earliest is None:
        window.state = WindowState.WAITING_FOR_BACKUP
        window.message = "waiting for the first base backup since WAL archiving " + (
            "began" if current_period.on is None else "was switched back on"
        )
        if ranges:
            window.state = WindowState.OPEN
            window.message += "; earlier ranges remain restorable"
    elif not restorable:
        window.opens_at = window.earliest + (archive_timeout or timedelta(0))
        window.state = WindowState.OPEN if ranges else WindowState.OPENING
        window.message = (
            "the current range opens once WAL past the end of its first base backup is "
            f"archived, expected by {format_api_time(window.opens_at)}"
        )
    else:
        window.state = WindowState.OPEN
        window.message = (
            f"any instant from {format_api_time(window.earliest)} to "
            f"{format_api_time(window.latest)} can be restored"
            if window.latest
            else None
        )
        if len(ranges) > 1:
            window.message = f"{window.message}; earlier ranges: {len(ranges) - 1}"
    return window


def _standard_window(
    points: list[BackupRecord], current_period: ArchivePeriod | None, now: datetime | None
) -> RecoverabilityWindow:
    restore_points = [
        RestorePoint(backup_id=b.backup_id or b.name, name=b.name, at=consistent_by(_end_of(b)))
        for b in points
    ]
    # A backup that has just ended is a restore point only once surely consistent.
    pending = [p for p in restore_points if now is not None and p.at > now]
    restore_points = [p for p in restore_points if p not in pending]
    if restore_points:
        return RecoverabilityWindow(
            state=WindowState.OPEN,
            message="a restore returns the newest completed base backup consistent at or "
            "before the requested instant, as it was then",
            earliest=restore_points[-1].at,
            latest=restore_points[0].at,
            restore_points=restore_points,
        )
    if pending:
        opens_at = min(p.at for p in pending)
        return RecoverabilityWindow(
            state=WindowState.OPENING,
            opens_at=opens_at,
            message=f"the first base backup is consistent by {format_api_time(opens_at)}",
        )
    if current_period is None:
        return RecoverabilityWindow(
            state=WindowState.NONE, message="WAL archiving is off: the plan has no backups"
        )
    return RecoverabilityWindow(
        state=WindowState.WAITING_FOR_BACKUP,
        message="waiting for the first base backup to complete",
    )
