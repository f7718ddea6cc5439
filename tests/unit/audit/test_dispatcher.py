from __future__ import annotations

import asyncio
from pathlib import Path

from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import InMemoryAuditRepository


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
