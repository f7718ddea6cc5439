"""Where audit events are stored: PostgreSQL (psycopg 3 pool), or memory for unit tests."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from yoyo import get_backend, read_migrations  # type: ignore[import-untyped]
from yoyo.exceptions import LockTimeout  # type: ignore[import-untyped]

from paas_pitr.audit.events import AuditEvent
from paas_pitr.errors import DatabaseError

log = logging.getLogger(__name__)

INSERT = """
INSERT INTO paas_audit_events
    (id, created_at, actor, action, target_type, target_id, details_jsonb, request_id)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)
ON CONFLICT (id) DO NOTHING
"""


class AuditRepository(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ensure_schema(self) -> None: ...
    async def insert_many(self, events: Sequence[AuditEvent]) -> None: ...
    async def ping(self) -> None: ...


# Our migrations take well under a second; a lock older than this was left by a process or
# a database that died mid-migration (yoyo's lock row is committed before it migrates, and
# nothing else ever removes it), and would stop audit delivery for good.
STALE_LOCK_SECONDS = 120.0
LOCK_WAIT_SECONDS = 10.0


def migrate(dsn: str, *, stale_after: float = STALE_LOCK_SECONDS) -> None:
    """Apply the versioned migrations (yoyo keeps the applied versions and a lock).

    A lock held for longer than ``stale_after`` seconds is broken (logged); a younger one
    is another replica migrating, and ``LockTimeout`` is raised for the caller to retry.
    """
    directory = resources.files("paas_pitr.audit") / "migrations"
    backend = get_backend(_yoyo_url(dsn))
    try:
        migrations = read_migrations(str(directory))
        for attempt in (1, 2):
            try:
                with backend.lock(timeout=LOCK_WAIT_SECONDS):
                    backend.apply_migrations(backend.to_apply(migrations))
                return
            except LockTimeout:
                age = _lock_age(backend)
                if attempt == 2 or age is None or age < stale_after:
                    raise
                log.warning(
                    "breaking the audit database's migration lock, held for %.0fs: its "
                    "holder died mid-migration",
                    age,
                )
                backend.break_lock()
    finally:
        backend.connection.close()


def _lock_age(backend: Any) -> float | None:
    """Seconds since yoyo's lock row was written (yoyo writes naive UTC); ``None``: no row."""
    cursor = backend.execute(f"SELECT ctime FROM {backend.lock_table_quoted}")
    row = cursor.fetchone()
    if not row or row[0] is None:
        return None
    written: datetime = row[0] if row[0].tzinfo else row[0].replace(tzinfo=UTC)
    return (datetime.now(UTC) - written).total_seconds()


def _yoyo_url(dsn: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


class PostgresAuditRepository:
    def __init__(self, dsn: str, *, timeout: float = 2.0) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._schema_ready = False
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            open=False,
            timeout=timeout,
            # A connection that died with the server is replaced on checkout, not reused.
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(timeout))},
            name="paas-pitr-audit",
        )

    async def open(self) -> None:
        # Never wait for the database here: the service must start while it is down.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close(timeout=2)

    async def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            await asyncio.to_thread(migrate, self._dsn)
        except (psycopg.Error, LockTimeout, OSError) as exc:
            raise DatabaseError(f"cannot migrate the audit database: {exc}") from exc
        self._schema_ready = True

    async def insert_many(self, events: Sequence[AuditEvent]) -> None:
        await self.ensure_schema()
        rows = [
            (
                e.id,
                e.created_at,
                e.actor,
                e.action,
                e.target_type,
                e.target_id,
                json.dumps(e.details, default=str),
                e.request_id,
            )
            for e in events
        ]
        try:
            async with self._pool.connection() as conn, conn.cursor() as cursor:
                await cursor.executemany(INSERT, rows)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise DatabaseError(f"audit insert failed: {exc}") from exc

    async def ping(self) -> None:
        try:
            async with self._pool.connection(timeout=self._timeout) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise DatabaseError(f"audit database unreachable: {exc}") from exc


class InMemoryAuditRepository:
    """A fake for unit tests; ``fail`` simulates an outage."""

    def __init__(self) -> None:
        self.rows: dict[str, AuditEvent] = {}
        self.fail = False
        self.attempts = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure_schema(self) -> None:
        return None

    async def insert_many(self, events: Sequence[AuditEvent]) -> None:
        self.attempts += 1
        if self.fail:
            raise DatabaseError("simulated outage")
        for event in events:
            self.rows.setdefault(str(event.id), event)

    async def ping(self) -> None:
        if self.fail:
            raise DatabaseError("simulated outage")
