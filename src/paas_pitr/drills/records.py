"""A restore drill as recorded and shown: what was restored, how long it took, each check."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

DrillStatus = Literal["queued", "running", "passed", "failed"]
UNFINISHED: frozenset[str] = frozenset({"queued", "running"})
# The newest drills kept per addon (older ones stay in the audit log).
DRILLS_KEPT = 50


class DrillCheck(BaseModel):
    name: str = Field(
        description="`recovery` (the cluster became ready), `promoted_and_writable`, "
        "`reached_target`, `amcheck` or `user_tables`"
    )
    passed: bool
    figures: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = Field(default=None, description="PostgreSQL's own message on failure")


class DrillRecord(BaseModel):
    drill_id: str
    tenant: str
    app_id: str
    addon_id: str
    plan: str
    status: DrillStatus
    trigger: Literal["api", "schedule"]
    requested_by: str
    requested_at: datetime
    started_at: datetime | None = Field(
        default=None, description="When the recovery cluster was requested (after any queue)"
    )
    ready_at: datetime | None = None
    finished_at: datetime | None = None
    target: Literal["point_in_time", "backup_end"] | None = None
    target_time: datetime | None = Field(
        default=None, description="The recovery target (pro), or the base backup's end"
    )
    backup_id: str | None = None
    incarnation: str | None = None
    cluster_name: str | None = None
    rto_seconds: float | None = Field(
        default=None, description="Wall time from the recovery cluster's request to ready"
    )
    data_bytes: int | None = Field(
        default=None, description="Size of the restored databases (what the base backup held)"
    )
    wal_bytes_replayed: int | None = Field(
        default=None, description="WAL replayed from the base backup's start to the target"
    )
    restore_rate_bytes_per_second: float | None = None
    checks: list[DrillCheck] = Field(default_factory=list)
    failing_check: str | None = None
    reason: str | None = None
    hint: str | None = None
    progress: str | None = Field(default=None, description="The step a running drill is at")

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


class LastDrill(BaseModel):
    """The addon view's summary of its newest finished drill."""

    drill_id: str
    status: DrillStatus
    finished_at: datetime | None
    rto_seconds: float | None
    failing_check: str | None = None


def last_drill_of(records: list[DrillRecord]) -> LastDrill | None:
    """The newest finished drill of ``records`` (any order)."""
    done = [r for r in records if r.finished]
    if not done:
        return None
    newest = max(done, key=lambda r: r.requested_at)
    return LastDrill(
        drill_id=newest.drill_id,
        status=newest.status,
        finished_at=newest.finished_at,
        rto_seconds=newest.rto_seconds,
        failing_check=newest.failing_check,
    )
