"""archive_command's client: success only on the answer ``stored``; an error answer fails
(PostgreSQL retries); no archiver, or a connection that breaks before an answer, is
``UNAVAILABLE`` (the script falls back to barman-cloud-wal-archive)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from paas_pitr.engines.local.archive_client import UNAVAILABLE, request


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
