"""The restore prefetcher as a real process: it ends when its recovery's server is gone,
and when the engine stops it, rather than outliving a failed or stopped restore."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from paas_pitr.engines.local import LocalEngine, walfetch
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.settings import Settings
from tests.integration.local.conftest import wait_for
from tests.unit.engines.local.fakes import FakeBarman

pytestmark = pytest.mark.integration


def start_prefetcher(spool: Path, pgdata: Path) -> subprocess.Popen[bytes]:
    """As restore_command starts it (lock first), against an S3 endpoint that refuses
    connections: the history listing fails and the prefetcher goes on waiting for work."""
    (spool / walfetch.LOCK).mkdir(parents=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PAAS_PITR_WALFETCH_ENDPOINT": "http://127.0.0.1:9",
    }
    args = [sys.executable, "-I", walfetch.__file__, "s3://bucket/acme", "db"]
    return subprocess.Popen(
        [*args, str(spool), str(pgdata), "2", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def postmaster() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for the recovering server's postmaster."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def recovering(tmp_path: Path, postmaster: subprocess.Popen[bytes]) -> Path:
    pgdata = tmp_path / "data"
    pgdata.mkdir()
    (pgdata / "recovery.signal").touch()
    (pgdata / "postmaster.pid").write_text(f"{postmaster.pid}\n{pgdata}\n")
    return pgdata


def test_the_engine_stops_a_prefetcher(tmp_path: Path, postmaster: subprocess.Popen[bytes]) -> None:
    spool = tmp_path / "spool"
    process = start_prefetcher(spool, recovering(tmp_path, postmaster))
    try:
        wait_for(lambda: (spool / walfetch.LOCK / "pid").exists(), timeout=30)
        assert walfetch.stop_prefetcher(spool) == process.pid
        assert process.wait(10) is not None
        assert not (spool / walfetch.LOCK).exists()
    finally:
        process.kill()
        process.wait()


def test_a_prefetcher_ends_with_its_server(
    tmp_path: Path, postmaster: subprocess.Popen[bytes]
) -> None:
    spool = tmp_path / "spool"
    process = start_prefetcher(spool, recovering(tmp_path, postmaster))
    try:
        wait_for(lambda: (spool / walfetch.LOCK / "pid").exists(), timeout=30)
        assert process.poll() is None  # its server runs: recovery goes on
        # The server dies (a failed recovery, a stop) and leaves its pid file behind.
        postmaster.kill()
        postmaster.wait()
        assert process.wait(walfetch.POSTMASTER_GRACE_SECONDS + 10) == 0
        assert not (spool / walfetch.LOCK).exists()
    finally:
        process.kill()
        process.wait()


async def test_the_engine_stops_its_prefetchers_when_it_stops(
    tmp_path: Path, postmaster: subprocess.Popen[bytes]
) -> None:
    """A service stopped mid-restore (SIGTERM: the engine closes) leaves no prefetcher, even
    one whose server outlives the stop."""
    settings = Settings(state_dir=tmp_path / "state", pg_os_user=getpass.getuser())
    objects = ObjectDatabase(tmp_path / "objects.sqlite3")
    engine = LocalEngine(settings, barman=FakeBarman(), objects=objects)
    instance = Instance(
        "db-acme-app-1-r1",
        tmp_path / "instance",
        tmp_path / "run",
        find_binaries(None, settings.pg_bin),
        None,
        engine.barman,
    )
    engine.instances[instance.name] = instance
    process = start_prefetcher(instance.wal_spool, recovering(tmp_path, postmaster))
    try:
        wait_for(lambda: (instance.wal_spool / walfetch.LOCK / "pid").exists(), timeout=30)
        await engine.close()
        assert process.wait(10) is not None
        assert postmaster.poll() is None
    finally:
        process.kill()
        process.wait()
        objects.close()
