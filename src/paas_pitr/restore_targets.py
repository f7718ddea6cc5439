"""What a restore of a live addon to an instant targets, decided before anything is created.

PostgreSQL silently restores the wrong data for a target before the end of the base backup
it starts from, and never finishes for one after the last archived WAL: the window is
therefore enforced here, up front. The pitr tier restores any instant of a restorable range
(from the newest base backup ending before it); the daily tier restores the end of the
newest base backup ending at or before it, and says so.
"""

from __future__ import annotations

from datetime import datetime

from paas_pitr.backups import ArchiveState
from paas_pitr.cnpg.builders import BackupEnd, PointInTime
from paas_pitr.cnpg.projections import BackupStatus
from paas_pitr.cnpg.window import RecoverabilityWindow, WindowState, consistent_by
from paas_pitr.errors import NoBackupForTarget, OutsideRecoverabilityWindow
from paas_pitr.plans import Tier
from paas_pitr.timestamps import format_api_time


def what_you_get(asked: datetime, backup_id: str, ends_at: datetime | None) -> str:
    """The standard tier's answer in a sentence: which backup, and how far from the ask."""
    if ends_at is None:
        return f"you asked for {format_api_time(asked)}; you get the end of backup {backup_id}"
    seconds = max(0.0, (asked - ends_at).total_seconds())
    if seconds < 120:
        gap = f"{seconds:.0f} seconds earlier"
    elif seconds < 2 * 3600:
        gap = f"{seconds / 60:.0f} minutes earlier"
    else:
        gap = f"{seconds / 3600:.1f} hours earlier"
    return (
        f"you asked for {format_api_time(asked)}; you get the end of backup {backup_id} at "
        f"{format_api_time(ends_at)} ({gap})"
    )


def resolve_live_target(
    tier: Tier, moment: datetime, state: ArchiveState
) -> BackupEnd | PointInTime:
    """The recovery target of a restore to ``moment``; refused (with the window in the
    error's details) when the addon's archive cannot serve it."""
    window: RecoverabilityWindow = state.window
    if tier is Tier.DAILY:
        chosen = next((p for p in window.restore_points if p.at <= moment), None)
        if chosen is None:
            raise NoBackupForTarget(
                f"no completed base backup ends at or before {format_api_time(moment)}",
                details={"timestamp": format_api_time(moment), **window.details()},
            )
        return BackupEnd(chosen.backup_id, chosen.at)
    if not window.contains(moment):
        raise OutsideRecoverabilityWindow(
            f"timestamp {format_api_time(moment)} is outside the recoverability window: "
            f"{_why_outside(window, moment)}",
            details={"timestamp": format_api_time(moment), **window.details()},
        )
    return PointInTime(moment)


def _why_outside(window: RecoverabilityWindow, moment: datetime) -> str:
    if window.state is WindowState.WAITING_FOR_BACKUP and not window.ranges:
        return "there is no completed base backup yet"
    if window.state is WindowState.OPENING:
        return (
            "no WAL past the end of the first base backup is archived yet; the window "
            f"is expected to open by {format_api_time(window.opens_at)}"
            if window.opens_at
            else "no WAL past the end of the first base backup is archived yet"
        )
    if not window.ranges:
        return "no instant is restorable yet"
    if moment < window.ranges[0].earliest:
        return (
            "it is before the oldest base backup is consistent (its recorded end plus "
            "a margin for the end-of-backup record)"
        )
    if moment > window.ranges[-1].latest:
        return "it is after the newest archived WAL"
    return (
        "it falls in a gap of the WAL archive (archiving was off, or no base backup had "
        "completed since it was switched back on)"
    )


def base_backup_for(moment: datetime, state: ArchiveState) -> str | None:
    """The base backup a restore to ``moment`` starts from: the newest consistent by it."""
    candidates = [
        (b.stopped_at, b.backup_id)
        for b in state.backups
        if b.status is BackupStatus.COMPLETED
        and b.stopped_at is not None
        and consistent_by(b.stopped_at) <= moment
        and b.backup_id
    ]
    return max(candidates)[1] if candidates else None
