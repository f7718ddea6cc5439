from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paas_pitr.audit import AuditEvent, AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository
from paas_pitr.errors import AuditUnavailable


def _log(repo: InMemoryAuditRepository, path: Path, **options: int) -> AuditLog:
    return AuditLog(repo, AuditJournal(path), max_backoff=0.01, **options)


def _event(log: AuditLog, n: int) -> None:
    log.log_event(
        actor="tenant:acme", action="addon.restore_pitr", target_type="addon", target_id=f"db-{n}"
    )


async def test_events_are_delivered_and_the_journal_emptied(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    log = _log(repo, tmp_path / "j")
    await log.start()
    for n in range(5):
        _event(log, n)
    assert await log.flush(5)
    assert len(repo.rows) == 5
    assert log.journal.size() == 0
    await log.stop()


async def test_outage_keeps_events_until_the_database_returns(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    repo.fail = True
    log = _log(repo, tmp_path / "j")
    await log.start()
    _event(log, 1)
    assert not await log.flush(0.2)
    assert repo.attempts >= 2  # retried, not dropped
    assert log.pending == 1
    assert log.last_error is not None
    repo.fail = False
    assert await log.flush(5)
    assert len(repo.rows) == 1
    await log.stop()


async def test_restart_replays_the_journal_once(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    repo.fail = True
    first = _log(repo, tmp_path / "j")
    await first.start()
    _event(first, 1)
    _event(first, 2)
    await first.stop(0.1)
    repo.fail = False
    second = _log(repo, tmp_path / "j")
    await second.start()
    assert await second.flush(5)
    assert sorted(e.target_id for e in repo.rows.values()) == ["db-1", "db-2"]
    await second.stop()


async def test_torn_journal_line_is_skipped(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    repo.fail = True
    first = _log(repo, tmp_path / "j")
    await first.start()
    _event(first, 1)
    await first.stop(0.1)
    with (tmp_path / "j").open("a") as handle:
        handle.write('{"id": "trunc')
    repo.fail = False
    second = _log(repo, tmp_path / "j")
    await second.start()
    assert await second.flush(5)
    assert len(repo.rows) == 1
    await second.stop()


async def test_memory_limit_spills_to_the_journal(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    repo.fail = True
    log = _log(repo, tmp_path / "j", memory_limit=3)
    await log.start()
    for n in range(10):
        _event(log, n)
    await asyncio.sleep(0.05)
    repo.fail = False
    assert await log.flush(5)
    assert len(repo.rows) == 10
    await log.stop()


class FailingJournal(AuditJournal):
    """The disk fills between the check and the write: appends fail until ``fail`` is off."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail = False

    def append(self, event: AuditEvent) -> None:
        if self.fail:
            self.last_error = "cannot write the audit journal: [Errno 28] No space left"
            raise OSError(28, "No space left on device")
        super().append(event)


async def test_an_event_the_journal_cannot_take_is_still_delivered(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    journal = FailingJournal(tmp_path / "j")
    log = AuditLog(repo, journal, max_backoff=0.01)
    await log.start()
    journal.fail = True
    _event(log, 1)  # never raises: the change it records is already made
    assert log.pending == 1
    assert await log.flush(5)
    assert [e.target_id for e in repo.rows.values()] == ["db-1"]
    await log.stop()


async def test_changes_are_refused_while_the_journal_cannot_be_made_durable(
    tmp_path: Path,
) -> None:
    repo = InMemoryAuditRepository()
    log = AuditLog(repo, AuditJournal(tmp_path / "j"), min_free_bytes=1 << 62)
    with pytest.raises(AuditUnavailable, match="PAAS_PITR_MIN_FREE_DISK_MB") as refused:
        log.ensure_durable()
    assert refused.value.code == "audit_unavailable"
    assert refused.value.details["min_free_bytes"] == 1 << 62
    log.min_free_bytes = 0
    log.ensure_durable()  # plenty of room here
    log.journal.close()


async def test_a_torn_line_costs_only_its_own_event(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    path = tmp_path / "j"
    journal = AuditJournal(path)
    log = AuditLog(repo, journal)
    _event(log, 1)
    # What a write cut short by a full disk leaves: half a line, no newline.
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "torn')
    journal._torn = True  # as append() records a short write
    _event(log, 2)
    replayed = [e.target_id for e in journal.read_all()]
    assert replayed == ["db-1", "db-2"]
    journal.close()


async def test_stalled_delivery_is_measured(tmp_path: Path) -> None:
    repo = InMemoryAuditRepository()
    repo.fail = True
    log = _log(repo, tmp_path / "j")
    await log.start()
    assert log.oldest_pending_seconds == 0
    _event(log, 1)
    await asyncio.sleep(0.2)
    assert log.oldest_pending_seconds >= 0.2
    repo.fail = False
    assert await log.flush(5)
    assert log.oldest_pending_seconds == 0
    await log.stop()
