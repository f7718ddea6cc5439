"""Reading the audit trail back: the seed's query, with the action and the limit as
parameters, or the same over every action."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from paas_pitr.errors import DatabaseError

RECENT = (
    "SELECT created_at, target_id, details_jsonb FROM paas_audit_events "
    "WHERE action = %s ORDER BY created_at DESC LIMIT %s"
)
RECENT_ALL = (
    "SELECT created_at, target_id, details_jsonb, action FROM paas_audit_events "
    "ORDER BY created_at DESC LIMIT %s"
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    created_at: datetime
    target_id: str
    details: dict[str, Any]
    action: str


def recent_events(
    dsn: str, action: str | None = "addon.restore_pitr", limit: int = 10, *, timeout: int = 5
) -> list[AuditRow]:
    """The newest ``limit`` events of ``action`` (``None``: of every action), newest first.

    Raises ``DatabaseError`` when the database cannot be reached or has no audit table yet.
    """
    try:
        with psycopg.connect(dsn, connect_timeout=timeout) as conn:
            if action is None:
                rows = conn.execute(RECENT_ALL, (limit,)).fetchall()
            else:
                found = conn.execute(RECENT, (action, limit)).fetchall()
                rows = [(*row, action) for row in found]
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot read the audit trail: {exc}") from exc
    return [
        AuditRow(created_at=r[0], target_id=str(r[1]), details=dict(r[2]), action=str(r[3]))
        for r in rows
    ]
