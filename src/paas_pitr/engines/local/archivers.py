"""Supervision of the instances' WAL archivers (:mod:`.walarchiver`): one process per
archiving instance, run as the server's OS user with the archive's credentials in its
environment, restarted by the reconciler when it died, when it stopped answering (a health
probe over its socket: a stopped or wedged process never exits by itself) or when its
archive or credentials changed.

While an archiver is down (dead, restarting, not started yet) ``archive_command`` falls back
to barman-cloud-wal-archive: archiving is slower for that time, never unsafe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from paas_pitr.engines.local import archive_client, walarchiver
from paas_pitr.engines.local.archive import ArchiveConfig, ServedFolder
from paas_pitr.engines.local.barman import Barman
from paas_pitr.postgres.server import OsUser, chown_tree

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0
LOG_ROTATE_BYTES = 16 * 2**20


def archiver_wanted(bootstrap_state: str, *, hibernated: bool, server_running: bool) -> bool:
    """Whether an instance's WAL archiver may run: while its bootstrap is under way (a
    restored server archives from the moment it promotes, and the bootstrap starts its
    archiver), then only while its server runs and archives. Not for a failed bootstrap
    (no server), a hibernated cluster (its server stopped, as CNPG's hibernation does) or a
    server that is down. ``bootstrap_state``: the instance's (pending, running, done,
    failed)."""
    if bootstrap_state in ("pending", "running"):
        return True
    return bootstrap_state == "done" and server_running and not hibernated


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    signature: str


class ArchiverSupervisor:
    """Keeps one :mod:`.walarchiver` process per archiving instance, keyed by name."""

    def __init__(
        self,
        barman: Barman,
        user: OsUser | None,
        *,
        probe_seconds: float = archive_client.PROBE_SECONDS,
    ) -> None:
        self.barman = barman
        self.user = user
        self.probe_seconds = probe_seconds
        self.running: dict[str, _Running] = {}

    def ensure(
        self,
        name: str,
        config: ArchiveConfig,
        credentials: dict[str, str],
        *,
        pgdata: Path,
        socket_path: Path,
        log_path: Path,
        served_folder: ServedFolder | None = None,
    ) -> bool:
        """Start ``name``'s archiver unless one runs with this very configuration; restart
        one that exited, that accepts connections but does not answer a ping within
        ``probe_seconds`` (killed: a stopped process ignores SIGTERM), or whose
        configuration changed. True when a process was started.

        ``served_folder``: the folder the embedded S3 server serves ``config``'s server
        folder from (:meth:`ArchiveResolver.local_folder`); the archiver then writes
        segments into its ``wals/`` there, without HTTP (see :mod:`.walarchiver`)."""
        jobs = config.wal_max_parallel or 1
        signature = hashlib.sha256(
            json.dumps(
                [
                    config.destination,
                    config.server_name,
                    config.endpoint_url,
                    config.wal_compression,
                    jobs,
                    str(pgdata),
                    str(socket_path),
                    sorted(credentials.items()),
                    str(served_folder.path if served_folder else None),
                ]
            ).encode()
        ).hexdigest()
        current = self.running.get(name)
        if current is not None:
            status = current.process.poll()
            if status is None and current.signature == signature:
                # "absent" is a process still starting (or just gone: poll() sees that
                # next time); only one that accepts and stays silent is hung.
                if archive_client.probe(str(socket_path), self.probe_seconds) != "hung":
                    return False
                log.warning(
                    "WAL archiver of %s (pid %d) did not answer a ping within %gs; "
                    "killing and restarting it",
                    name,
                    current.process.pid,
                    self.probe_seconds,
                )
                self._kill(current.process)
            elif status is not None:
                log.warning("WAL archiver of %s exited with status %s; restarting", name, status)
            self.stop(name)
        socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        chown_tree(socket_path.parent, self.user)
        args = [
            sys.executable,
            # By path, isolated (-I: its folder is not put on sys.path): importing it as
            # paas_pitr.engines.local.walarchiver would load the whole engine first.
            "-I",
            walarchiver.__file__,
            "--socket",
            str(socket_path),
            "--pgdata",
            str(pgdata),
            "--jobs",
            str(jobs),
            "--parent",
            str(os.getpid()),
            *(["--endpoint-url", config.endpoint_url] if config.endpoint_url else []),
            *(["--compression", config.wal_compression] if config.wal_compression else []),
            config.destination,
            config.server_name,
        ]
        wals = self._open_wals(served_folder.child("wals")) if served_folder else None
        if wals is not None:
            args[-2:-2] = ["--wals-fd", str(wals)]
        # One line per stored segment: the log is started afresh past a size, its
        # predecessor kept once (at each start; a long-lived one grows ~4 MB per TB of WAL).
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=self.barman.environment(credentials),
                user=self.user.uid if self.user else None,
                group=self.user.gid if self.user else None,
                extra_groups=[] if self.user else None,
                start_new_session=True,
                pass_fds=(wals,) if wals is not None else (),
            )
        finally:
            os.close(fd)
            if wals is not None:
                os.close(wals)
        self.running[name] = _Running(process, signature)
        return True

    def _open_wals(self, wals: ServedFolder) -> int | None:
        """A descriptor of the archive's ``wals`` folder, made if absent (owned by the
        servers' OS user, as the S3 server running as that user makes its folders): the
        archiver, run as that user, cannot reach it by path (the service's folders above
        are not readable to it) and writes through this descriptor. ``None`` (HTTP then)
        when it cannot be opened, a symbolic link on the way included."""
        try:
            return wals.open(self.user, create=True)
        except OSError as exc:
            log.warning("WAL archiving over HTTP: cannot open %s: %s", wals.path, exc)
            return None

    def supervises(self, name: str) -> bool:
        """Whether ``name`` has an archiver, running or exited since (not stopped)."""
        return name in self.running

    def pid(self, name: str) -> int | None:
        """The process id of ``name``'s archiver while it runs."""
        current = self.running.get(name)
        if current is None or current.process.poll() is not None:
            return None
        return current.process.pid

    def stop(self, name: str) -> None:
        """Stop ``name``'s archiver; requests it was serving fall back (see module doc)."""
        # Forgotten once it has exited, not before: until then pid() still names it (its
        # clean exit, removing its socket and ticket, takes a few milliseconds).
        current = self.running.get(name)
        if current is None:
            return
        process = current.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._kill(process)
        self.running.pop(name, None)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)
