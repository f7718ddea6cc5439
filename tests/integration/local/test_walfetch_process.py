"""The restore prefetcher as a real process: it ends when its recovery's server is gone,
and when the engine stops it, rather than outliving a failed or stopped restore."""

from __future__ import annotations

import getpass
import gzip
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


def start_prefetcher(
    spool: Path, pgdata: Path, wals_fd: int | None = None
) -> subprocess.Popen[bytes]:
    """As restore_command starts it (lock first), against an S3 endpoint that refuses
    connections: the history listing fails and the prefetcher goes on waiting for work.
    ``wals_fd``: a descriptor of the archive's wals/ folder, as the engine passes it."""
    (spool / walfetch.LOCK).mkdir(parents=True)
    env = {
        **({walfetch.WALS_FD_VARIABLE: str(wals_fd)} if wals_fd is not None else {}),
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
        pass_fds=(wals_fd,) if wals_fd is not None else (),
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


def test_given_the_archives_folder_a_prefetcher_fetches_without_the_s3_server(
    tmp_path: Path, postmaster: subprocess.Popen[bytes]
) -> None:
    wals = tmp_path / "wals"
    # The one asked for and the window after it (depth 2).
    segments = {f"00000001000000000000000{n}": f"segment {n}".encode() for n in range(3, 6)}
    (wals / "0000000100000000").mkdir(parents=True)
    (wals / "0000000100000000" / "000000010000000000000006.gz").write_bytes(b"beyond")
    for name, body in segments.items():
        (wals / name[:16]).mkdir(parents=True, exist_ok=True)
        (wals / name[:16] / f"{name}.gz").write_bytes(gzip.compress(body))
    (wals / "00000002.history").write_bytes(b"1\t0/3000000\tno reason\n")
    spool = tmp_path / "spool"
    fd = os.open(wals, os.O_RDONLY | os.O_DIRECTORY)
    try:
        process = start_prefetcher(spool, recovering(tmp_path, postmaster), wals_fd=fd)
    finally:
        os.close(fd)
    try:
        (spool / ".wanted").write_text("000000010000000000000003 1\n")
        # The S3 endpoint refuses connections: what arrives came from the folder.
        wait_for(
            lambda: all((spool / name).exists() for name in segments),
            timeout=30,
            what="the window fetched from the folder",
        )
        assert {name: (spool / name).read_bytes() for name in segments} == segments
        assert not (spool / "000000010000000000000006").exists()  # beyond the window
        assert (spool / ".histories").read_text() == "00000002.history\n"
        assert (spool / "00000002.history").read_bytes() == b"1\t0/3000000\tno reason\n"
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
