"""Reading the audit trail back: the seed's query, with the action and the limit as
parameters."""

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


@dataclass(frozen=True, slots=True)
class AuditRow:
    created_at: datetime
    target_id: str
    details: dict[str, Any]


def recent_events(
    dsn: str, action: str = "addon.restore_pitr", limit: int = 10, *, timeout: int = 5
) -> list[AuditRow]:
    """The newest ``limit`` events of ``action``, newest first.

    Raises ``DatabaseError`` when the database cannot be reached or has no audit table yet.
    """
    try:
        with psycopg.connect(dsn, connect_timeout=timeout) as conn:
            rows = conn.execute(RECENT, (action, limit)).fetchall()
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot read the audit trail: {exc}") from exc
    return [AuditRow(created_at=r[0], target_id=str(r[1]), details=dict(r[2])) for r in rows]
