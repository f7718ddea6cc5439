"""The audit trail under faults, for real: a full disk, a stale migration lock left by a
crash, the embedded audit database dying. No change is made that cannot be audited, and no
event is lost or silently stuck."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import PostgresAuditRepository, migrate
from paas_pitr.auth import TokenAuthority
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.postgres.server import PostgresServer
from paas_pitr.runtime import Runtime
from paas_pitr.settings import Settings
from tests.integration.api.test_api import wait_for_rows
from tests.integration.conftest import SIGNING_KEY, RunningApi, start_api

MIB = 1024 * 1024


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """A 4 MiB filesystem of its own (tmpfs), to fill for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = workdir / f"small-disk-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until about ``leave`` bytes are free; the filler file."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_refuses_changes_before_anything_is_done(
    small_disk: Path, settings: Settings, audit_dsn: str
) -> None:
    engine = InMemoryEngine(mode="in-tree")
    audit = AuditLog(
        PostgresAuditRepository(audit_dsn, timeout=1.0),
        AuditJournal(small_disk / "journal.jsonl"),
        max_backoff=0.2,
        min_free_bytes=2 * MIB,
    )
    api: RunningApi = start_api(
        AppState.build(settings, engine, audit, TokenAuthority(SIGNING_KEY))
    )
    try:
        with api.client(api.token()) as client:
            filler = fill(small_disk, leave=MIB)
            refused = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "audit_unavailable"
            assert "nothing was changed" in error["message"]
            assert engine.objects == {}
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["data"]["checks"]["audit"]["ok"] is False
            # Reads go on.
            assert client.get("/v1/apps/app-1/addons").status_code == 200
            filler.unlink()
            created = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
            assert created.status_code == 201, created.text
        assert [row[1] for row in wait_for_rows(audit_dsn, 1, "addon.create")] == ["db-acme-app-1"]
    finally:
        api.stop()


def test_an_event_the_full_disk_cut_short_is_still_written(
    small_disk: Path, settings: Settings, audit_dsn: str
) -> None:
    """The disk fills between the check and the journal write: the change is done, so its
    event is kept in memory and delivered; later changes are refused until there is room."""
    engine = InMemoryEngine(mode="in-tree")
    audit = AuditLog(
        PostgresAuditRepository(audit_dsn, timeout=1.0),
        AuditJournal(small_disk / "journal.jsonl"),
        max_backoff=0.2,
    )
    api = start_api(AppState.build(settings, engine, audit, TokenAuthority(SIGNING_KEY)))
    try:
        with api.client(api.token()) as client:
            filler = fill(small_disk, leave=0)
            created = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
            assert created.status_code == 201, created.text
            assert [row[1] for row in wait_for_rows(audit_dsn, 1, "addon.create")] == [
                "db-acme-app-1"
            ]
            refused = client.post("/v1/apps/app-2/addons", json={"plan": "pro"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "audit_unavailable"
            filler.unlink()
            again = client.post("/v1/apps/app-2/addons", json={"plan": "pro"})
            assert again.status_code == 201, again.text
        assert len(wait_for_rows(audit_dsn, 2, "addon.create")) == 2
    finally:
        api.stop()


def _lock(dsn: str, age: timedelta) -> None:
    migrate(dsn)  # creates yoyo's tables, as a first start did
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM yoyo_lock")
        conn.execute(
            "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, %s, 4242)",
            ((datetime.now(UTC) - age).replace(tzinfo=None),),
        )


def test_a_stale_migration_lock_is_broken(audit_dsn: str, tmp_path: Path) -> None:
    """What a database crash mid-migration leaves: yoyo's lock row, committed, forever."""
    _lock(audit_dsn, timedelta(minutes=10))

    async def deliver() -> bool:
        log = AuditLog(
            PostgresAuditRepository(audit_dsn, timeout=1.0),
            AuditJournal(tmp_path / "j"),
            max_backoff=0.2,
        )
        await log.start()
        log.log_event(actor="a", action="addon.create", target_type="addon", target_id="db-x")
        try:
            return await log.flush(30)
        finally:
            await log.stop()

    assert asyncio.run(deliver())
    with psycopg.connect(audit_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


def test_a_young_lock_is_respected_and_readiness_says_delivery_is_stuck(
    audit_dsn: str, settings: Settings
) -> None:
    """A fresh lock is another replica migrating: not broken; while it blocks delivery for
    longer than PAAS_PITR_AUDIT_STUCK_SECONDS, /readyz says so."""
    _lock(audit_dsn, timedelta(seconds=0))
    engine = InMemoryEngine(mode="in-tree")
    audit = AuditLog(
        PostgresAuditRepository(audit_dsn, timeout=1.0),
        AuditJournal(settings.state_dir / "audit" / "journal.jsonl"),
        max_backoff=0.2,
    )
    quick = settings.model_copy(update={"audit_stuck_seconds": 1.0})
    api = start_api(AppState.build(quick, engine, audit, TokenAuthority(SIGNING_KEY)))
    try:
        with api.client(api.token()) as client:
            assert client.post("/v1/apps/app-1/addons", json={"plan": "pro"}).status_code == 201
            # Not ready once delivery has stalled past the bound, and (after the first
            # lock wait gives up) saying why.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ready = client.get("/readyz")
                audit_check = ready.json()["data"]["checks"]["audit"]
                if "locked" in str(audit_check.get("error")):
                    break
                time.sleep(0.5)
            assert ready.status_code == 503 and audit_check["ok"] is False, ready.text
            assert "without delivery" in audit_check["error"]
            assert "has locked this database" in audit_check["error"]
            with psycopg.connect(audit_dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM yoyo_lock")
            assert wait_for_rows(audit_dsn, 1, "addon.create")
    finally:
        api.stop()


def test_the_embedded_audit_database_is_restarted(workdir: Path, pg: PostgresServer) -> None:
    settings = Settings(state_dir=workdir / f"embedded-{uuid.uuid4().hex[:8]}")
    runtime = Runtime(settings)

    async def scenario() -> None:
        dsn = await runtime.database_url()
        assert runtime.embedded is not None
        server = runtime.embedded.server
        pid = server.postmaster_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        supervisor = asyncio.create_task(runtime.supervise_embedded(interval=0.2))
        try:
            for _ in range(150):
                await asyncio.sleep(0.2)
                if server.is_running():
                    try:
                        with psycopg.connect(dsn, connect_timeout=2) as conn:
                            conn.execute("SELECT 1")
                        return
                    except psycopg.OperationalError:
                        continue
            pytest.fail("the embedded audit database was not restarted")
        finally:
            supervisor.cancel()

    try:
        asyncio.run(scenario())
    finally:
        runtime.close()
