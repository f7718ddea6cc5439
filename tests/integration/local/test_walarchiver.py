"""The long-running WAL archiver with real processes: PostgreSQL archiving through it into
the embedded S3 server, and the archiver killed mid-upload.

The invariant under test is archive_command's: PostgreSQL counts a segment archived only
once its object is in the bucket, whatever happens to the archiver.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.engines.local import archive_client, walarchiver
from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.archivers import ArchiverSupervisor
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.switchover.record import ANNOTATION_HIBERNATION
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.instances import archived_instance

pytestmark = pytest.mark.integration

BUCKET = "wal-bucket"
SEGMENT_BYTES = 16 * 1024 * 1024


@dataclass
class Rig:
    s3: EmbeddedS3
    instance: Instance
    config: ArchiveConfig
    credentials: dict[str, str]
    archivers: ArchiverSupervisor
    # "http": segments PUT to the embedded S3 server; "folder": written into the folder it
    # serves (what the local engine does with the embedded server's own archives).
    path: str
    # Who owns what either path writes: the servers' OS user, which the S3 server and the
    # archiver both run as.
    writer_uid: int

    def ensure_archiver(self) -> bool:
        return self.archivers.ensure(
            self.instance.name,
            self.config,
            self.credentials,
            pgdata=self.instance.server.data_dir,
            socket_path=self.instance.archiver_socket,
            log_path=self.instance.scripts / "walarchiver.log",
            served_folder=(
                folder.child(self.config.server_name)
                if self.path == "folder"
                and (folder := self.s3.folder_of(self.config.destination, self.credentials))
                else None
            ),
        )

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.config.endpoint_url,
            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def archiver_log(self) -> str:
        path = self.instance.scripts / "walarchiver.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def object_of(self, segment: str) -> Path:
        return self.s3.data / BUCKET / "wals-test" / "db" / "wals" / segment[:16] / f"{segment}.gz"

    def archived(self) -> tuple[int, str | None]:
        with self.instance.connect() as conn:
            row = conn.execute(
                "SELECT archived_count, last_archived_wal FROM pg_stat_archiver"
            ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    def done_segments(self) -> list[str]:
        status = self.instance.server.data_dir / "pg_wal" / "archive_status"
        return sorted(
            p.name.removesuffix(".done") for p in status.glob("*.done") if len(p.stem) == 24
        )

    def write_segments(self, count: int) -> None:
        with self.instance.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS filler (v text)")
            for _ in range(count):
                conn.execute(
                    "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 100)"
                )
                conn.execute("SELECT pg_switch_wal()")


@pytest.fixture(params=["http", "folder"])
def rig(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    with archived_instance(
        workdir,
        "walarchiver",
        bucket=BUCKET,
        prefix="wals-test",
        server="db",
        wal_compression="gzip",
        wal_max_parallel=4,
    ) as made:
        archivers = ArchiverSupervisor(made.barman, made.user)
        path = str(request.param)
        writer = made.user.uid if made.user else os.getuid()
        rig = Rig(made.s3, made.instance, made.config, made.credentials, archivers, path, writer)
        try:
            assert rig.ensure_archiver()
            # Until it listens, archive_command uses its fallback (by design): the tests
            # that count on the archiver start PostgreSQL once it does.
            ticket = walarchiver.ticket_path(made.instance.archiver_socket)
            wait_for(ticket.exists, timeout=60, what="the archiver listening")
            made.instance.server.start()
            yield rig
        finally:
            archivers.stop_all()


def _assert_every_archived_segment_is_stored(rig: Rig) -> list[str]:
    done = rig.done_segments()
    for segment in done:
        stored = rig.object_of(segment)
        assert stored.is_file(), f"{segment} reported archived but not stored"
        assert len(gzip.decompress(stored.read_bytes())) == SEGMENT_BYTES
    return done


def test_postgres_archives_through_the_archiver_reading_ahead(rig: Rig) -> None:
    before, _ = rig.archived()
    rig.write_segments(8)
    wait_for(lambda: rig.archived()[0] >= before + 8, timeout=90, what="8 segments archived")
    done = _assert_every_archived_segment_is_stored(rig)
    assert len(done) >= 8
    assert {rig.object_of(segment).stat().st_uid for segment in done} == {rig.writer_uid}
    # Written into the folder or not, the S3 server lists and serves them at once, and
    # nothing else: no temporary file of a write is ever listed.
    client = rig.s3_client()
    prefix = "wals-test/db/wals/"
    listed = [
        item["Key"].removeprefix(prefix)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    assert sorted(listed) == sorted(
        str(p.relative_to(rig.object_of(done[0]).parent.parent))
        for p in rig.object_of(done[0]).parent.parent.rglob("*")
        if p.is_file()
    )
    assert {f"{segment[:16]}/{segment}.gz" for segment in done} <= set(listed)
    body = client.get_object(Bucket=BUCKET, Key=f"{prefix}{done[-1][:16]}/{done[-1]}.gz")
    assert len(gzip.decompress(body["Body"].read())) == SEGMENT_BYTES
    log = rig.archiver_log()
    # The archiver stored them (not the fallback), some before PostgreSQL asked.
    for segment in done:
        assert f"stored {segment} (" in log
    assert "(read ahead)" in log
    # The request of an already stored segment is answered at once, no second upload.
    assert all(log.count(f"stored {segment} ") == 1 for segment in done)


def test_into_the_folder_archiving_goes_on_with_the_s3_server_frozen(rig: Rig) -> None:
    if rig.path != "folder":
        pytest.skip("over HTTP, a frozen S3 server holds archiving (the next test)")
    rig.write_segments(1)
    wait_for(lambda: rig.archived()[0] >= 1, timeout=60, what="a first segment archived")
    count, _ = rig.archived()
    s3_pid = json.loads((rig.s3.root / "server.json").read_text())["pid"]
    os.kill(s3_pid, signal.SIGSTOP)
    try:
        rig.write_segments(3)
        wait_for(lambda: rig.archived()[0] >= count + 3, timeout=60, what="3 segments archived")
        _assert_every_archived_segment_is_stored(rig)
    finally:
        os.kill(s3_pid, signal.SIGCONT)


def test_archiver_killed_mid_upload_loses_nothing_and_reports_nothing_unstored(rig: Rig) -> None:
    rig.write_segments(1)
    wait_for(lambda: rig.archived()[0] >= 1, timeout=60, what="a first segment archived")
    count, _ = rig.archived()
    first_pid = rig.archivers.pid("db")
    assert first_pid is not None
    # Freeze the object store (over HTTP) or the archiver itself (writing into the folder):
    # uploads started now cannot complete.
    frozen = json.loads((rig.s3.root / "server.json").read_text())["pid"]
    if rig.path == "folder":
        frozen = first_pid
    os.kill(frozen, signal.SIGSTOP)
    try:
        rig.write_segments(3)
        time.sleep(2.0)  # the archiver reads ahead and archive_command waits on it
        assert rig.archived()[0] == count, "a segment was reported archived while frozen"
        os.kill(first_pid, signal.SIGKILL)
        if frozen != first_pid:
            time.sleep(1.0)  # archive_command sees the archiver gone and falls back
            assert rig.archived()[0] == count
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    wait_for(lambda: rig.archived()[0] >= count + 3, timeout=120, what="the backlog archived")
    _assert_every_archived_segment_is_stored(rig)

    # The supervisor restarts it; archiving goes through the new process again.
    assert rig.ensure_archiver()
    second_pid = rig.archivers.pid("db")
    assert second_pid is not None and second_pid != first_pid
    wait_for(lambda: rig.instance.archiver_socket.exists(), timeout=30, what="the new socket")
    count, _ = rig.archived()
    rig.write_segments(2)
    wait_for(lambda: rig.archived()[0] >= count + 2, timeout=90, what="2 more segments")
    done = _assert_every_archived_segment_is_stored(rig)
    assert f"stored {done[-1]} (" in rig.archiver_log()


def test_a_hung_archiver_is_bypassed_then_replaced_by_the_supervisor(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # A short reply bound, so that each segment does not wait the default for its answer.
    rig.instance.write_archive_script(rig.config, rig.credentials, None, reply_seconds=1)
    rig.write_segments(1)
    wait_for(lambda: rig.archived()[0] >= 1, timeout=60, what="a first segment archived")
    first_pid = rig.archivers.pid("db")
    assert first_pid is not None
    before = set(rig.done_segments())
    # Stopped, not dead: its sockets still accept connections, nothing answers.
    os.kill(first_pid, signal.SIGSTOP)
    try:
        count, _ = rig.archived()
        rig.write_segments(3)
        wait_for(lambda: rig.archived()[0] >= count + 3, timeout=120, what="3 segments archived")
        fallen_back = sorted(set(rig.done_segments()) - before)
        assert len(fallen_back) >= 3
        _assert_every_archived_segment_is_stored(rig)
        # barman-cloud-wal-archive stored them: the stopped archiver logged nothing.
        log = rig.archiver_log()
        assert not [segment for segment in fallen_back if f"stored {segment} " in log]

        # The supervisor finds it silent, kills it and starts another.
        with caplog.at_level("WARNING", logger="paas_pitr.engines.local.archivers"):
            assert rig.ensure_archiver()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first_pid, signal.SIGCONT)
    assert [r.getMessage() for r in caplog.records] == [
        f"WAL archiver of db (pid {first_pid}) did not answer a ping within 5s; "
        "killing and restarting it"
    ]
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    second_pid = rig.archivers.pid("db")
    assert second_pid is not None and second_pid != first_pid
    ticket = walarchiver.ticket_path(rig.instance.archiver_socket)
    wait_for(
        lambda: (
            ticket.exists() and archive_client.probe(str(rig.instance.archiver_socket)) == "alive"
        ),
        timeout=60,
        what="the new archiver answering",
    )
    # Healthy now: the next reconcile leaves it alone.
    assert not rig.ensure_archiver()
    assert rig.archivers.pid("db") == second_pid
    count, _ = rig.archived()
    rig.write_segments(2)
    wait_for(lambda: rig.archived()[0] >= count + 2, timeout=90, what="2 more segments")
    done = _assert_every_archived_segment_is_stored(rig)
    assert f"stored {done[-1]} (" in rig.archiver_log()


def _ask(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode().rstrip("\n")


def test_the_archivers_port_answers_only_the_holder_of_its_ticket(rig: Rig) -> None:
    ticket = walarchiver.ticket_path(rig.instance.archiver_socket)
    wait_for(ticket.exists, timeout=30, what="the archiver's ticket")
    assert stat.S_IMODE(ticket.stat().st_mode) == 0o600
    port, request, reply = ticket.read_text(encoding="ascii").split()
    rig.write_segments(1)
    wait_for(lambda: rig.archived()[0] >= 1, timeout=60, what="a segment archived")
    segment = rig.done_segments()[-1]
    path = rig.instance.server.data_dir / "pg_wal" / segment
    assert _ask(int(port), f"archive {'0' * 32} {path}") == "refused: not this archiver's token"
    assert _ask(int(port), f"archive {request} /etc/passwd") == (
        f"error /etc/passwd is not in {rig.instance.server.data_dir / 'pg_wal'}"
    )
    # Stored already (PostgreSQL archived it through this port): answered from memory.
    assert _ask(int(port), f"archive {request} {path}") == f"stored {reply}"
    assert rig.archiver_log().count(f"stored {segment} ") == 1
    # A stopped archiver takes its ticket with it; the script then uses its fallback.
    rig.archivers.stop("db")
    assert not ticket.exists()


def test_a_running_archiver_is_kept_and_a_changed_configuration_restarts_it(rig: Rig) -> None:
    pid = rig.archivers.pid("db")
    assert not rig.ensure_archiver()
    assert rig.archivers.pid("db") == pid
    rig.credentials = {**rig.credentials, "AWS_SESSION_TOKEN": "rotated"}
    assert rig.ensure_archiver()
    assert rig.archivers.pid("db") not in (None, pid)


def test_the_engine_archives_an_addon_through_its_archiver(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id = addon["addon_id"]
    local_api.wait_backups_completed("app-1", addon_id)
    engine = local_api.engine
    archivers = engine.archiving.archivers
    assert archivers is not None
    pid = archivers.pid(addon_id)
    assert pid is not None
    log = engine.instances[addon_id].scripts / "walarchiver.log"
    # The base backup's own WAL went through it (barman-cloud-backup waits for it).
    wait_for(lambda: "stored " in log.read_text(encoding="utf-8"), what="a segment stored")
    # Killed, the reconciler starts another.
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_for(
        lambda: (found := archivers.pid(addon_id)) not in (None, pid) and found,
        what="a new WAL archiver",
    )
    assert new_pid != pid
    # Hibernated: the server stops, then its archiver (none runs for a stopped server).
    cluster = engine.objects.get("Cluster", addon_id)
    assert cluster is not None
    cluster["metadata"].setdefault("annotations", {})[ANNOTATION_HIBERNATION] = "on"
    engine.objects.put(cluster)
    engine.wake()
    wait_for(lambda: archivers.pid(addon_id) is None, timeout=60, what="the archiver stopped")
    assert not engine.instances[addon_id].server.is_running()
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)
