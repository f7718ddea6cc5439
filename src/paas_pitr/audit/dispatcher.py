"""Fire-and-forget, durable audit logging.

``log_event`` appends the event to a local journal (one JSON line, no database round trip)
and returns. A background task inserts journaled events into PostgreSQL in batches,
idempotently (``ON CONFLICT (id) DO NOTHING``), retrying with backoff while the database is
down. The journal is truncated only once everything in it is in the database, and is
replayed on start-up, so an event survives an outage, a restart, or both, and is written
exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from paas_pitr.audit.events import AuditEvent
from paas_pitr.audit.repository import AuditRepository
from paas_pitr.errors import DependencyError

log = logging.getLogger(__name__)


class AuditJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")
        os.chmod(path, 0o600)

    def append(self, event: AuditEvent) -> None:
        self._handle.write(event.to_json() + "\n")
        self._handle.flush()

    def sync(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.fsync(self._handle.fileno())

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
        self._handle.truncate(0)
        self._handle.seek(0)
        self._handle.flush()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        self._handle.close()


class AuditLog:
    def __init__(
        self,
        repository: AuditRepository,
        journal: AuditJournal,
        *,
        batch_size: int = 200,
        memory_limit: int = 10_000,
        max_backoff: float = 5.0,
    ) -> None:
        self.repository = repository
        self.journal = journal
        self._batch_size = batch_size
        self._memory_limit = memory_limit
        self._max_backoff = max_backoff
        self._pending: deque[AuditEvent] = deque()
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
        self.journal.append(event)
        if len(self._pending) < self._memory_limit:
            self._pending.append(event)
        else:
            self._spilled = True
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
                self.journal.truncate()
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
