"""archive_command's script with real bash and a real loopback listener: success only on
the answer ``stored`` followed by the reply token of the archiver's ticket; an ``error``
answer fails with its message in PostgreSQL's log (stderr) and the error file; anything
else (no ticket, nobody listening, a broken connection, an impostor, a refusal, no answer
within the reply bound) falls back to barman-cloud-wal-archive, whose own failure is
reported the same way."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paas_pitr.engines.local import walarchiver
from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.archive_client import TIMEOUT_SECONDS
from paas_pitr.engines.local.barman import Barman

SEGMENT = "000000010000000000000003"
REQUEST, REPLY = "a1" * 16, "b2" * 16


@dataclass
class Script:
    path: Path
    pgdata: Path
    socket: Path
    error_file: Path
    fallback_log: Path
    fallback_status: Path

    def run(self, wal: str = f"pg_wal/{SEGMENT}") -> subprocess.CompletedProcess[str]:
        # archive_command runs in the data directory, with %p relative to it.
        return subprocess.run(
            [str(self.path), wal], cwd=self.pgdata, capture_output=True, text=True, timeout=30
        )

    def fallback_calls(self) -> list[str]:
        if not self.fallback_log.exists():
            return []
        return self.fallback_log.read_text(encoding="utf-8").splitlines()

    def ticket(self, port: int) -> None:
        walarchiver.ticket_path(self.socket).write_text(f"{port} {REQUEST} {REPLY}\n")


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return _script(tmp_path)


def _script(tmp_path: Path, **options: float) -> Script:
    """The script (``options``: ``wal_archive_script``'s), a fake barman-cloud-wal-archive
    recording its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fallback_log, fallback_status = tmp_path / "fallback.log", tmp_path / "fallback.status"
    fallback_status.write_text("0")
    fake = bin_dir / "barman-cloud-wal-archive"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {fallback_log}\n'
        f"status=$(cat {fallback_status})\n"
        '[ "$status" -eq 0 ] || echo "bucket says no" >&2\n'
        'exit "$status"\n'
    )
    fake.chmod(0o755)
    env_file = tmp_path / "s3.env"
    env_file.write_text("AWS_ACCESS_KEY_ID=k\n")
    pgdata = tmp_path / "pgdata"
    (pgdata / "pg_wal").mkdir(parents=True)
    (pgdata / "pg_wal" / SEGMENT).write_bytes(b"wal")
    config = ArchiveConfig(
        destination="s3://bucket/wal",
        server_name="db",
        endpoint_url="http://127.0.0.1:9",
        secret_refs={},
        wal_compression="snappy",
    )
    socket_path, error_file = tmp_path / "walarchiver.sock", tmp_path / "archive.error"
    text = Barman(None, bin_dir).wal_archive_script(
        config, env_file, error_file, socket_path, **options
    )
    path = tmp_path / "archive.sh"
    path.write_text(text)
    path.chmod(0o700)
    return Script(path, pgdata, socket_path, error_file, fallback_log, fallback_status)


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list[bytes], list[bytes | None]]]:
    """A loopback listener answering each connection with the next of its answers (None:
    close without answering); what it received, line by line."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    answers: list[bytes | None] = []

    def run() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)
                answer = answers.pop(0) if answers else None
                if answer is not None:
                    conn.sendall(answer)

    threading.Thread(target=run, daemon=True).start()
    yield server, received, answers
    server.close()


def _port(server: socket.socket) -> int:
    return int(server.getsockname()[1])


def test_stored_with_the_reply_token_is_success_without_the_fallback(
    script: Script, listener: tuple[socket.socket, list[bytes], list[bytes | None]]
) -> None:
    server, received, answers = listener
    script.ticket(_port(server))
    answers.append(f"stored {REPLY}\n".encode())
    result = script.run()
    assert (result.returncode, result.stderr) == (0, "")
    wal = script.pgdata / "pg_wal" / SEGMENT
    assert received == [f"archive {REQUEST} {wal}\n".encode()]
    assert script.fallback_calls() == []


def test_an_error_answer_fails_with_its_message_in_the_log_and_the_error_file(
    script: Script, listener: tuple[socket.socket, list[bytes], list[bytes | None]]
) -> None:
    server, _, answers = listener
    script.ticket(_port(server))
    answers.append(b"error bucket unreachable\n")
    result = script.run()
    assert result.returncode == 1
    assert result.stderr == "WAL archiver: bucket unreachable\n"
    assert script.error_file.read_text() == "bucket unreachable\n"
    assert script.fallback_calls() == []


@pytest.mark.parametrize(
    "answer",
    [
        None,  # the archiver died before answering
        b"stored\n",  # no reply token: not the archiver of this ticket
        f"stored {'c3' * 16}\n".encode(),  # another token: an impostor on the port
        f"stored {REPLY}".encode(),  # no end of line: the connection broke
        b"refused: not this archiver's token\n",  # a stale ticket, another archiver
    ],
)
def test_anything_but_an_answer_of_this_archiver_falls_back(
    script: Script,
    listener: tuple[socket.socket, list[bytes], list[bytes | None]],
    answer: bytes | None,
) -> None:
    server, _, answers = listener
    script.ticket(_port(server))
    answers.append(answer)
    result = script.run()
    assert result.returncode == 0
    wal = script.pgdata / "pg_wal" / SEGMENT
    assert script.fallback_calls() == [
        f"--snappy --endpoint-url http://127.0.0.1:9 s3://bucket/wal db {wal}"
    ]


def test_an_archiver_that_accepts_and_never_answers_falls_back_after_the_bound(
    tmp_path: Path,
) -> None:
    script = _script(tmp_path, reply_seconds=0.5)
    received: list[bytes] = []
    release = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def hang() -> None:
        # Like a stopped archiver: the request is taken, no answer ever comes.
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(4096))
            release.wait(30)

    thread = threading.Thread(target=hang, daemon=True)
    thread.start()
    script.ticket(_port(server))
    try:
        result = script.run()
    finally:
        release.set()
        thread.join()
        server.close()
    wal = script.pgdata / "pg_wal" / SEGMENT
    assert received == [f"archive {REQUEST} {wal}\n".encode()]
    assert (result.returncode, result.stderr) == (
        0,
        "WAL archiver: no answer within 0.5s; archiving with barman-cloud-wal-archive\n",
    )
    assert script.fallback_calls() == [
        f"--snappy --endpoint-url http://127.0.0.1:9 s3://bucket/wal db {wal}"
    ]
    assert not script.error_file.exists()


def test_the_default_reply_bound_is_the_clients(script: Script) -> None:
    assert f"read -r -t {TIMEOUT_SECONDS:g} answer" in script.path.read_text()


def test_no_ticket_or_nobody_listening_falls_back(script: Script) -> None:
    assert script.run().returncode == 0
    probe = socket.create_server(("127.0.0.1", 0))
    port = _port(probe)
    probe.close()
    script.ticket(port)
    assert script.run().returncode == 0
    assert len(script.fallback_calls()) == 2


def test_a_failing_fallback_reports_its_status_and_message(script: Script) -> None:
    script.fallback_status.write_text("4")
    result = script.run(str(script.pgdata / "pg_wal" / SEGMENT))
    assert result.returncode == 4
    assert result.stderr == "bucket says no\n"
    assert script.error_file.read_text() == "bucket says no\n"


def test_the_script_starts_no_process_on_the_archivers_path(
    script: Script, listener: tuple[socket.socket, list[bytes], list[bytes | None]]
) -> None:
    """Builtins only: with an empty PATH (no external command can be found) it succeeds."""
    server, _, answers = listener
    script.ticket(_port(server))
    answers.append(f"stored {REPLY}\n".encode())
    result = subprocess.run(
        [str(script.path), f"pg_wal/{SEGMENT}"],
        cwd=script.pgdata,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(script.pgdata / "nothing-here")},
    )
    assert (result.returncode, result.stderr) == (0, "")
