"""A Python client of :mod:`.walarchiver` over its unix socket: standard library only.

    python -I -S archive_client.py SOCKET WAL_PATH

archive_command itself no longer runs it (its script talks to the archiver's loopback port
with bash builtins, see ``Barman.wal_archive_script``): it serves Python callers that need
a segment stored before they go on, and shares its timeout with the script.

Exit status: 0 once the archiver answered ``stored``; 1 when it answered an error (printed
on stderr; PostgreSQL retries); ``UNAVAILABLE`` (75) when no archiver answers or the
connection broke before an answer: the caller falls back to barman-cloud-wal-archive. No
other answer is ever taken for success.
"""

from __future__ import annotations

import os
import socket
import sys

UNAVAILABLE = 75
# An upload slower than this is given up; PostgreSQL retries the segment.
TIMEOUT_SECONDS = 600.0


def request(socket_path: str, wal_path: str, timeout: float = TIMEOUT_SECONDS) -> tuple[int, str]:
    """(exit status, message) of asking the archiver at ``socket_path`` to store
    ``wal_path`` (made absolute: archive_command runs in the data directory)."""
    path = os.path.abspath(wal_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_path)
            conn.sendall(f"archive {path}\n".encode())
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        return 1, f"the WAL archiver did not answer within {timeout:.0f}s"
    except OSError as exc:
        return UNAVAILABLE, f"the WAL archiver is unavailable: {exc}"
    text = answer.decode(errors="replace").strip()
    if text == "stored":
        return 0, ""
    if text.startswith("error "):
        return 1, text.removeprefix("error ")
    return UNAVAILABLE, f"the WAL archiver gave no answer ({text[:80]!r})"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: archive_client.py SOCKET WAL_PATH", file=sys.stderr)
        return 2
    status, message = request(argv[0], argv[1])
    if message:
        print(message, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
