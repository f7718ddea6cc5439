"""A Python client of :mod:`.walarchiver` over its unix socket: standard library only.

    python -I -S archive_client.py SOCKET WAL_PATH

archive_command itself no longer runs it (its script talks to the archiver's loopback port
with bash builtins, see ``Barman.wal_archive_script``): it serves Python callers that need
a segment stored before they go on, and shares its timeout with the script.

Exit status: 0 once the archiver answered ``stored``; 1 when it answered an error (printed
on stderr; PostgreSQL retries); ``UNAVAILABLE`` (75) when no archiver answers, the
connection broke before an answer or no answer came within ``TIMEOUT_SECONDS`` (a hung
archiver): the caller falls back to barman-cloud-wal-archive. No other answer is ever taken
for success.

:func:`probe` is the supervisor's health check: ``ping`` answered ``pong`` in time.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Literal

UNAVAILABLE = 75
# An answer not received within this is taken for a hung archiver, and the caller falls
# back to barman-cloud-wal-archive (a second upload of a segment writes the same bytes
# under the same key). A 16 MiB segment takes well under a second to a healthy store; 60 s
# leaves room for an on-demand request queued behind the archiver's read-ahead uploads on
# a slow link (five 16 MiB uploads at ~1.5 MB/s) before a second upload is added to them.
TIMEOUT_SECONDS = 60.0
# A ping is answered by the archiver's serving thread alone, without touching the store:
# a live process answers in milliseconds, even on a loaded machine.
PROBE_SECONDS = 5.0


def _exchange(socket_path: str, line: str, timeout: float) -> bytes:
    """Send ``line`` to the archiver at ``socket_path`` and read its answer up to a newline
    (less when it closes the connection first). Raises ``TimeoutError`` when nothing ends
    within ``timeout`` seconds, ``OSError`` when no archiver listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(f"{line}\n".encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def request(socket_path: str, wal_path: str, timeout: float = TIMEOUT_SECONDS) -> tuple[int, str]:
    """(exit status, message) of asking the archiver at ``socket_path`` to store
    ``wal_path`` (made absolute: archive_command runs in the data directory)."""
    try:
        answer = _exchange(socket_path, f"archive {os.path.abspath(wal_path)}", timeout)
    except TimeoutError:
        return UNAVAILABLE, f"the WAL archiver did not answer within {timeout:g}s"
    except OSError as exc:
        return UNAVAILABLE, f"the WAL archiver is unavailable: {exc}"
    text = answer.decode(errors="replace").strip()
    if text == "stored":
        return 0, ""
    if text.startswith("error "):
        return 1, text.removeprefix("error ")
    return UNAVAILABLE, f"the WAL archiver gave no answer ({text[:80]!r})"


def probe(socket_path: str, timeout: float = PROBE_SECONDS) -> Literal["alive", "hung", "absent"]:
    """Whether the archiver at ``socket_path`` answers: ``alive`` (``pong`` within
    ``timeout`` seconds), ``hung`` (it accepted, or its queue was full, but no answer came
    in time: a stopped or wedged process), ``absent`` (no socket, nobody listening, or the
    connection closed: not started yet, or gone)."""
    try:
        answer = _exchange(socket_path, "ping", timeout)
    except TimeoutError:
        return "hung"
    except OSError:
        return "absent"
    return "alive" if answer == b"pong\n" else "absent"


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
