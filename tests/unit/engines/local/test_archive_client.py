"""archive_command's client: success only on the answer ``stored``; an error answer fails
(PostgreSQL retries); no archiver, or a connection that breaks before an answer, is
``UNAVAILABLE`` (the script falls back to barman-cloud-wal-archive), and so is an archiver
that accepts and never answers within the bound. The supervisor's probe tells a live
archiver (``pong``) from a hung one (silent) and an absent one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from paas_pitr.engines.local.archive_client import UNAVAILABLE, probe, request


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the ~107-byte limit of a unix socket path.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ac-") as name:
        yield Path(name)


def _serve_once(path: Path, answer: bytes | None) -> list[bytes]:
    received: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            received.append(conn.recv(4096))
            if answer is not None:
                conn.sendall(answer)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return received


def test_stored_is_success_and_the_path_is_made_absolute(short_dir: Path) -> None:
    sock = short_dir / "s"
    received = _serve_once(sock, b"stored\n")
    assert request(str(sock), "pg_wal/000000010000000000000003") == (0, "")
    assert received == [f"archive {Path.cwd()}/pg_wal/000000010000000000000003\n".encode()]


def test_an_error_answer_fails_with_its_message(short_dir: Path) -> None:
    sock = short_dir / "s"
    _serve_once(sock, b"error bucket unreachable\n")
    assert request(str(sock), "/x/pg_wal/000000010000000000000003") == (1, "bucket unreachable")


@pytest.mark.parametrize("answer", [None, b"", b"stor", b"ok\n"])
def test_no_answer_or_an_unknown_one_is_unavailable(short_dir: Path, answer: bytes | None) -> None:
    sock = short_dir / "s"
    _serve_once(sock, answer)
    status, _ = request(str(sock), "/x/pg_wal/000000010000000000000003")
    assert status == UNAVAILABLE


def test_no_archiver_is_unavailable(short_dir: Path) -> None:
    status, message = request(str(short_dir / "absent"), "/x/pg_wal/000000010000000000000003")
    assert status == UNAVAILABLE
    assert "unavailable" in message


@pytest.fixture
def silent(short_dir: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket whose listener accepts, reads, and never answers (a stopped process
    would not even accept: the kernel queues the connection, with the same effect)."""
    path = short_dir / "hung"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    received: list[bytes] = []
    release = threading.Event()

    def run() -> None:
        conns = []
        while not release.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            conns.append(conn)
            received.append(conn.recv(4096))
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield path, received
    release.set()
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


def test_no_answer_within_the_bound_is_unavailable(silent: tuple[Path, list[bytes]]) -> None:
    path, received = silent
    assert request(str(path), "/x/pg_wal/000000010000000000000003", timeout=0.3) == (
        UNAVAILABLE,
        "the WAL archiver did not answer within 0.3s",
    )
    assert received == [b"archive /x/pg_wal/000000010000000000000003\n"]


def test_the_probe_tells_alive_from_hung_and_absent(
    short_dir: Path, silent: tuple[Path, list[bytes]]
) -> None:
    alive = short_dir / "alive"
    received = _serve_once(alive, b"pong\n")
    assert probe(str(alive), 5) == "alive"
    assert received == [b"ping\n"]
    path, pings = silent
    assert probe(str(path), 0.3) == "hung"
    assert pings == [b"ping\n"]
    assert probe(str(short_dir / "absent"), 0.3) == "absent"
    closing = short_dir / "closing"
    _serve_once(closing, None)
    assert probe(str(closing), 5) == "absent"
