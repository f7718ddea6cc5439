"""Fire-and-forget, durable audit logging.

``log_event`` appends the event to a local journal (one JSON line, no database round trip)
and returns. A background task inserts journaled events into PostgreSQL in batches,
idempotently (``ON CONFLICT (id) DO NOTHING``), retrying with backoff while the database is
down. The journal is truncated only once everything in it is in the database, and is
replayed on start-up, so an event survives an outage, a restart, or both, and is written
exactly once.

A change whose audit event cannot be made durable is refused before it is made:
``ensure_durable`` (called for every mutating request) fails while the journal's filesystem
has less than ``min_free_bytes`` free or the journal cannot be written. An event whose
append fails anyway (the disk filled in between) is kept in memory and delivered to the
database; the journal is never truncated while any event is undelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from paas_pitr.audit.events import AuditEvent
from paas_pitr.audit.repository import AuditRepository
from paas_pitr.errors import AuditUnavailable, DependencyError

log = logging.getLogger(__name__)
# After a failed append, changes are accepted again once this much space is free.
JOURNAL_RECOVERY_BYTES = 1024 * 1024


class AuditJournal:
    """An append-only file of audit events, one JSON line each.

    Appends are single ``write(2)`` calls on an ``O_APPEND`` descriptor (no user-space
    buffer that could fail to flush later). A write cut short by a full disk leaves a torn
    line; the next append starts on a fresh line so only the torn event's line is
    unreadable, and that event is still delivered from memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(path, 0o600)
        self._torn = False
        self.last_error: str | None = None

    def append(self, event: AuditEvent) -> None:
        """Raises ``OSError`` when the line could not be written whole."""
        line = (("\n" if self._torn else "") + event.to_json() + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self.last_error = f"cannot write the audit journal {self.path}: {exc}"
            raise
        if written != len(line):
            self._torn = True
            self.last_error = f"the audit journal {self.path} is full (a line was cut short)"
            raise OSError(28, self.last_error)
        self._torn = False
        self.last_error = None

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path.parent)
        return stats.f_bavail * stats.f_frsize

    def sync(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self._fd)

    def read_all(self) -> list[AuditEvent]:
        events: list[AuditEvent] = []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return events
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(AuditEvent.from_json(line))
            except (ValueError, KeyError) as exc:
                # A line torn by a crash mid-write: everything before it is intact.
                log.warning("skipping unreadable audit journal line %d: %s", number, exc)
        return events

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        self._torn = False

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class AuditLog:
    def __init__(
        self,
        repository: AuditRepository,
        journal: AuditJournal,
        *,
        batch_size: int = 200,
        memory_limit: int = 10_000,
        max_backoff: float = 5.0,
        min_free_bytes: int = 0,
    ) -> None:
        self.repository = repository
        self.journal = journal
        self._batch_size = batch_size
        self._memory_limit = memory_limit
        self._max_backoff = max_backoff
        self.min_free_bytes = min_free_bytes
        self._pending: deque[AuditEvent] = deque()
        # Events not in the journal (its append failed): memory is their only copy, so the
        # queue never drops them for the journal's sake.
        self._unjournaled = 0
        # monotonic time since which the oldest undelivered event has waited (None: none).
        self._waiting_since: float | None = None
        # Events journaled while the in-memory queue was full; they are re-read from the
        # journal once memory drains (re-inserting some is harmless: inserts are idempotent).
        self._spilled = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.last_error: str | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the dispatcher runs on (``None`` before :meth:`start`)."""
        return self._task.get_loop() if self._task is not None else None

    @property
    def pending(self) -> int:
        return len(self._pending) + (1 if self._spilled else 0)

    @property
    def oldest_pending_seconds(self) -> float:
        """For how long events have waited without any being delivered, in seconds (0 when
        none waits): grows without bound only while delivery is stuck."""
        if self._waiting_since is None:
            return 0.0
        return time.monotonic() - self._waiting_since

    def ensure_durable(self) -> None:
        """Raise ``AuditUnavailable`` when an event written now might not survive: the
        change it records must not be made (checked before every mutating request)."""
        try:
            free = self.journal.free_bytes()
        except OSError as exc:
            raise AuditUnavailable(f"the audit journal's disk cannot be checked: {exc}") from exc
        if free < self.min_free_bytes:
            raise AuditUnavailable(
                f"refusing changes: only {free // (1024 * 1024)} MiB free where the audit "
                f"journal lives ({self.journal.path.parent}); at least "
                f"{self.min_free_bytes // (1024 * 1024)} MiB are needed "
                "(PAAS_PITR_MIN_FREE_DISK_MB). Free disk space; nothing was changed.",
                details={"free_bytes": free, "min_free_bytes": self.min_free_bytes},
            )
        if self.journal.last_error is not None and free < max(
            self.min_free_bytes, JOURNAL_RECOVERY_BYTES
        ):
            raise AuditUnavailable(
                f"refusing changes: {self.journal.last_error}; nothing was changed",
                details={"journal": str(self.journal.path)},
            )

    async def start(self) -> None:
        await self.repository.open()
        replay = self.journal.read_all()
        if replay:
            log.info("replaying %d journaled audit events", len(replay))
        self._pending.extend(replay)
        self._task = asyncio.create_task(self._run(), name="audit-dispatcher")
        self._wakeup.set()

    def log_event(
        self,
        *,
        actor: str,
        action: str,
        target_type: str,
        target_id: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> AuditEvent:
        """Record an event; never waits on the database, never raises because of it.

        ``event_id`` makes an event idempotent across processes: several control-plane
        replicas observing the same fact write one row.
        """
        event = AuditEvent(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details or {},
            request_id=request_id,
            id=event_id or uuid.uuid4(),
        )
        try:
            self.journal.append(event)
        except OSError as exc:
            # The change it records is done: keep the event in memory rather than lose it.
            log.error("audit event %s kept in memory only: %s", event.id, exc)
            self._unjournaled += 1
            self._pending.append(event)
        else:
            if len(self._pending) < self._memory_limit:
                self._pending.append(event)
            else:
                self._spilled = True
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self._idle.clear()
        self._wakeup.set()
        return event

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._pending and self._spilled:
                self._spilled = False
                self._pending.extend(self.journal.read_all())
            if not self._pending:
                # Everything journaled or kept in memory is in the database now.
                with contextlib.suppress(OSError):
                    self.journal.truncate()
                self._unjournaled = 0
                self._waiting_since = None
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
            await asyncio.to_thread(self.journal.sync)
            try:
                await self.repository.insert_many(batch)
            except DependencyError as exc:
                if self.last_error is None:
                    log.warning("audit database unavailable, events kept in the journal: %s", exc)
                self.last_error = str(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            except Exception:
                # A bug must not kill the dispatcher and silently stop the audit trail.
                log.exception("unexpected error writing audit events; retrying")
                await asyncio.sleep(self._max_backoff)
                continue
            if self.last_error is not None:
                log.info("audit database back; delivering journaled events")
            self.last_error = None
            backoff = 0.1
            for _ in batch:
                self._pending.popleft()
            self.delivered += len(batch)
            # The next event in line has waited since (at most) now.
            self._waiting_since = time.monotonic() if self._pending else self._waiting_since

    async def flush(self, wait_seconds: float = 10.0) -> bool:
        """Wait until every event so far is in the database; ``False`` on timeout."""
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), wait_seconds)
        except TimeoutError:
            return False
        return True

    async def stop(self, wait_seconds: float = 2.0) -> None:
        await self.flush(wait_seconds)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.journal.sync()
        self.journal.close()
        await self.repository.close()
