"""Checks that a recovered cluster is usable: what a restore drill (and an in-place restore)
asserts before it calls a restore good.

Four checks, each a :class:`CheckResult` with its figures and, when it failed, PostgreSQL's
own message:

- ``promoted_and_writable``: the server left recovery and commits a write (a temporary
  table, dropped at commit, so nothing is left behind).
- ``reached_target``: the newest commit the cluster holds is at or before the recovery
  target and at most ``max_distance_seconds`` before it. The newest commit is read, in this
  order, from the local engine's heartbeat row (committed every few seconds, so exact),
  from commit timestamps (when the source ran with ``track_commit_timestamp``), or from
  ``pg_last_xact_replay_timestamp()`` (only while the server that replayed the WAL still
  runs). When none of them can tell, the check passes with ``measured_by: null``: nothing
  contradicts the target, but nothing proves it either.
- ``amcheck``: ``bt_index_check`` on every valid B-tree index of every database that
  accepts connections, within ``amcheck_budget_seconds`` in all; a budget hit is reported
  in the figures (``budget_hit``), not as a failure. The extension is created where it is
  missing and dropped again afterwards.
- ``user_tables``: the count of user tables (ordinary and partitioned) per database.

The conninfo must be a superuser's (``amcheck`` functions are not granted to others).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from paas_pitr.timestamps import format_api_time

# The local engine commits a heartbeat row here every few seconds (same name as there).
HEARTBEAT_DATABASE = "paas_pitr_heartbeat"
# How far back from the next transaction id commit timestamps are searched for the newest.
COMMIT_TS_SEARCH_XIDS = 1000
CONNECT_TIMEOUT_SECONDS = 10

CHECK_NAMES = ("promoted_and_writable", "reached_target", "amcheck", "user_tables")


@dataclass(frozen=True)
class CheckResult:
    name: str
    """``promoted_and_writable`` | ``reached_target`` | ``amcheck`` | ``user_tables``."""
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)
    """What was measured (JSON-ready: times as API timestamps, durations in seconds)."""
    reason: str | None = None
    """PostgreSQL's own message (or what contradicts the target) when the check failed."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "figures": self.figures,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class VerificationReport:
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failing(self) -> CheckResult | None:
        """The first check that failed (``None`` when all passed)."""
        return next((check for check in self.checks if not check.passed), None)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.to_dict() for check in self.checks]}


def postgres_reason(exc: psycopg.Error) -> str:
    """PostgreSQL's own message for an error (the client's, for a connection failure)."""
    primary = exc.diag.message_primary if exc.diag is not None else None
    return primary or str(exc).strip() or type(exc).__name__


@asynccontextmanager
async def _connect(
    conninfo: str, dbname: str | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    target = make_conninfo(conninfo, dbname=dbname) if dbname is not None else conninfo
    conn = await psycopg.AsyncConnection.connect(
        target, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    )
    try:
        yield conn
    finally:
        await conn.close()


async def verify_recovered_cluster(
    conninfo: str,
    *,
    target_time: datetime | None,
    max_distance_seconds: float,
    amcheck_budget_seconds: float,
) -> VerificationReport:
    """Run the four checks against the recovered cluster at ``conninfo`` (a libpq string or
    URI, a superuser's). ``target_time`` (aware) is the recovery target; ``None`` (a restore
    to the end of the archive) skips ``reached_target``'s bound and only reports the newest
    commit. Never raises for what the cluster answers: a connection failure or a refused
    statement is the failing check, with PostgreSQL's message as ``reason``.
    ``max_distance_seconds`` may be ``math.inf``: only "at or before the target" is checked."""
    try:
        async with _connect(conninfo) as conn:
            in_recovery = await _scalar(conn, "SELECT pg_is_in_recovery()")
            if in_recovery:
                return VerificationReport(
                    (
                        CheckResult(
                            "promoted_and_writable",
                            False,
                            {"in_recovery": True},
                            "the server is still in recovery (not promoted)",
                        ),
                    )
                )
            # Measured before the write check, whose own commit would be the newest.
            reached = await _reached_target(conn, conninfo, target_time, max_distance_seconds)
            writable = await _writable(conn)
            databases = [
                str(row[0])
                for row in await (
                    await conn.execute(
                        "SELECT datname FROM pg_database WHERE datallowconn "
                        "AND NOT datistemplate ORDER BY datname"
                    )
                ).fetchall()
            ]
    except psycopg.Error as exc:
        return VerificationReport(
            (CheckResult("promoted_and_writable", False, {}, postgres_reason(exc)),)
        )
    integrity = await _amcheck(conninfo, databases, amcheck_budget_seconds)
    tables = await _user_tables(conninfo, databases)
    return VerificationReport((writable, reached, integrity, tables))


async def _scalar(
    conn: psycopg.AsyncConnection[Any], query: str, params: tuple[Any, ...] | None = None
) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    return row[0] if row is not None else None


async def _writable(conn: psycopg.AsyncConnection[Any]) -> CheckResult:
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMPORARY TABLE paas_pitr_write_probe (written_at timestamptz) "
                "ON COMMIT DROP"
            )
            await conn.execute("INSERT INTO paas_pitr_write_probe VALUES (clock_timestamp())")
            xid = await _scalar(conn, "SELECT pg_current_xact_id()::text")
        # The WAL file name starts with the timeline: exact right after a promotion, when
        # the control file's checkpoint may still name the old one.
        lsn, walfile = await _row(
            conn, "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
        )
    except psycopg.Error as exc:
        return CheckResult(
            "promoted_and_writable", False, {"in_recovery": False}, postgres_reason(exc)
        )
    timeline = int(str(walfile)[:8], 16)
    return CheckResult(
        "promoted_and_writable",
        True,
        {
            "in_recovery": False,
            "write_xid": xid,
            "timeline": timeline,
            "wal_lsn": lsn,
            "recovery_end_lsn": await _switch_point(conn, timeline),
        },
    )


async def _row(conn: psycopg.AsyncConnection[Any], query: str) -> tuple[Any, ...]:
    row = await (await conn.execute(query)).fetchone()
    if row is None:
        raise psycopg.DataError(f"no row for {query!r}")
    return tuple(row)


async def _switch_point(conn: psycopg.AsyncConnection[Any], timeline: int) -> str | None:
    """Where recovery ended: the switch point the history file of ``timeline`` records
    (``None`` on timeline 1, which never recovered, or without the right to read it)."""
    if timeline <= 1:
        return None
    try:
        text = await _scalar(
            conn, "SELECT pg_read_file(%s, true)", (f"pg_wal/{timeline:08X}.history",)
        )
    except psycopg.Error:
        return None
    lines = [line for line in str(text or "").splitlines() if line.strip() and line[0] != "#"]
    if not lines:
        return None
    fields = lines[-1].split()
    return fields[1] if len(fields) > 1 else None


async def _newest_commit(
    conn: psycopg.AsyncConnection[Any], conninfo: str
) -> tuple[datetime | None, str | None]:
    """The newest commit's time and how it was measured (``None, None``: it cannot be)."""
    has_heartbeat = await _scalar(
        conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (HEARTBEAT_DATABASE,)
    )
    if has_heartbeat:
        try:
            async with _connect(conninfo, HEARTBEAT_DATABASE) as beat_conn:
                beat = await _scalar(beat_conn, "SELECT max(beat) FROM heartbeat")
        except psycopg.errors.UndefinedTable:
            beat = None
        if beat is not None:
            return beat, "heartbeat"
    if await _scalar(conn, "SHOW track_commit_timestamp") == "on":
        # Commit timestamps are kept on disk (also across the restart that follows a
        # recovery); the newest among the last transaction ids is the newest commit.
        found = await _scalar(
            conn,
            "SELECT max(pg_xact_commit_timestamp((x % 4294967296)::text::xid)) "
            "FROM generate_series("
            " (pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1),"
            " greatest(3, pg_snapshot_xmax(pg_current_snapshot())::text::bigint - "
            f"{COMMIT_TS_SEARCH_XIDS}), -1) AS x",
        )
        if found is not None:
            return found, "commit_timestamp"
    replayed = await _scalar(conn, "SELECT pg_last_xact_replay_timestamp()")
    if replayed is not None:
        return replayed, "replay_timestamp"
    return None, None


async def _reached_target(
    conn: psycopg.AsyncConnection[Any],
    conninfo: str,
    target_time: datetime | None,
    max_distance: float,
) -> CheckResult:
    try:
        newest, measured_by = await _newest_commit(conn, conninfo)
    except psycopg.Error as exc:
        return CheckResult("reached_target", False, {}, postgres_reason(exc))
    figures: dict[str, Any] = {
        "newest_commit": format_api_time(newest.astimezone(UTC)) if newest else None,
        "target": format_api_time(target_time) if target_time else None,
        "distance_seconds": None,
        # Infinite (nothing bounds it): JSON has no infinity.
        "max_distance_seconds": max_distance if math.isfinite(max_distance) else None,
        "measured_by": measured_by,
    }
    if newest is None or target_time is None:
        return CheckResult("reached_target", True, figures)
    distance = (target_time - newest).total_seconds()
    figures["distance_seconds"] = round(distance, 6)
    if distance < 0:
        return CheckResult(
            "reached_target",
            False,
            figures,
            f"the newest commit ({figures['newest_commit']}) is after the recovery target "
            f"({figures['target']}): recovery went past its target",
        )
    if distance > max_distance:
        return CheckResult(
            "reached_target",
            False,
            figures,
            f"the newest commit ({figures['newest_commit']}) is {distance:.3f}s before the "
            f"recovery target, more than the archive explains ({max_distance:.3f}s): "
            "WAL the target needs was not replayed",
        )
    return CheckResult("reached_target", True, figures)


_BTREE_INDEXES = (
    "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
    "WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready "
    "ORDER BY c.oid"
)


async def _amcheck(conninfo: str, databases: list[str], budget: float) -> CheckResult:
    started = time.monotonic()
    checked: dict[str, int] = {}
    total = 0
    budget_hit = False

    def figures() -> dict[str, Any]:
        return {
            "indexes_checked": sum(checked.values()),
            "indexes_total": total,
            "per_database": dict(checked),
            "budget_seconds": budget,
            "budget_hit": budget_hit,
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }

    for database in databases:
        index = None
        try:
            async with _connect(conninfo, database) as conn:
                created = not await _scalar(
                    conn, "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'"
                )
                if created:
                    await conn.execute("CREATE EXTENSION amcheck")
                try:
                    indexes = await (await conn.execute(_BTREE_INDEXES)).fetchall()
                    total += len(indexes)
                    checked[database] = 0
                    for oid, name in indexes:
                        index = str(name)
                        left = budget - (time.monotonic() - started)
                        if left <= 0:
                            budget_hit = True
                            break
                        # One index may be larger than the whole budget: bound the statement.
                        await conn.execute(
                            sql.SQL("SET statement_timeout = {}").format(
                                sql.Literal(max(1, int(left * 1000)))
                            )
                        )
                        try:
                            await conn.execute("SELECT bt_index_check(%s::oid::regclass)", (oid,))
                        except psycopg.errors.QueryCanceled:
                            budget_hit = True
                            break
                        checked[database] += 1
                finally:
                    await conn.execute("RESET statement_timeout")
                    if created:
                        await conn.execute("DROP EXTENSION amcheck")
        except psycopg.Error as exc:
            found = figures()
            found["database"] = database
            if index is not None:
                found["index"] = index
            return CheckResult("amcheck", False, found, postgres_reason(exc))
    return CheckResult("amcheck", True, figures())


_USER_TABLES = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)


async def _user_tables(conninfo: str, databases: list[str]) -> CheckResult:
    counts: dict[str, int] = {}
    for database in databases:
        try:
            async with _connect(conninfo, database) as conn:
                counts[database] = int(await _scalar(conn, _USER_TABLES))
        except psycopg.Error as exc:
            return CheckResult(
                "user_tables",
                False,
                {"per_database": counts, "database": database},
                postgres_reason(exc),
            )
    return CheckResult("user_tables", True, {"per_database": counts, "total": sum(counts.values())})
