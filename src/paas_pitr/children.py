"""Helper processes (barman-cloud, the embedded S3 server) never outlive the service.

Two mechanisms, because neither is enough alone:

- :func:`die_with_parent`, a ``preexec_fn``, asks Linux to SIGKILL the helper when the
  thread that spawned it dies (``prctl(PR_SET_PDEATHSIG)``), so a service killed with
  ``-9`` takes its helpers along at once. Set after the switch to the server user (Python
  calls ``preexec_fn`` after ``setuid``; a later credential change would clear it).
- The signal reaches the helper only, not what it forked itself (barman-cloud-backup's
  upload workers). Each helper runs in a session of its own, recorded in a
  :class:`ChildRegistry` folder while it runs; the next start kills every process left in
  a recorded session (:meth:`ChildRegistry.reap`) before it reconciles anything, so no
  orphan keeps writing into an archive the new run is settling.

PostgreSQL servers are not helpers: like pods, they are meant to outlive the control plane
(an addon keeps serving while the service restarts) and are adopted by the next start
through their ``postmaster.pid``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


# Looked up once, here: a preexec_fn runs between fork and exec, where importing or
# loading a library could deadlock on a lock another thread held at the fork.
_PRCTL = _prctl()


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the spawning thread dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preexec() -> Callable[[], None] | None:
    """What to pass as ``preexec_fn``: :func:`die_with_parent` where Linux offers it."""
    return die_with_parent if _PRCTL is not None else None


def _stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time in clock ticks since boot) of ``pid``; ``None`` if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after the last ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


class ChildRegistry:
    """The sessions of the helpers this service runs: a folder with one file per helper,
    named after its pid (which is its session id), holding its start time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def started(self, pid: int) -> None:
        """Record a helper spawned with ``start_new_session=True``."""
        found = _stat(pid)
        if found is None:
            return  # already gone: nothing can be left of it
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.folder / str(pid)).write_text(str(found[1]), encoding="ascii")

    def ended(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / str(pid)).unlink()

    def reap(self) -> list[int]:
        """SIGKILL every process left in a session an earlier run recorded; the pids killed.

        Linux hands out no pid still in use as a session id, so the session is ours unless
        its leader's pid now runs another process (started at another time): then every
        process of our session is gone, and the id was given to someone else."""
        if not self.folder.is_dir():
            return []
        killed: list[int] = []
        for record in self.folder.iterdir():
            try:
                session, leader_start = int(record.name), int(record.read_text("ascii"))
            except (ValueError, OSError):
                record.unlink(missing_ok=True)
                continue
            leader = _stat(session)
            reused = leader is not None and leader[1] != leader_start
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or reused:
                    continue
                found = _stat(int(entry.name))
                if found is None or found[0] != session or found[1] < leader_start:
                    continue
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
            record.unlink(missing_ok=True)
        if killed:
            log.warning("killed %d helper process(es) a previous run left behind", len(killed))
        return killed
