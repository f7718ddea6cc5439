"""Switching an addon between two servers on one machine: stop, swap, start.

The addon keeps its server (port, passwords, scripts); what moves is the data directory.
The addon's server is stopped, the two data directories are exchanged, the addon's server
is configured for the incarnation it now holds and started: the app's connection string
leads to the other data, and the addon is unavailable only between the stop and the start.
The other server stays stopped (hibernated) with the addon's previous data.

Each switch is journaled under ``<state>/local/switches/<id>.json`` (the Clusters as they
must end up, the step reached) before anything is touched; a switch interrupted by a crash
is finished when the engine starts again, before any server is started.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.archiving import Archiving
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.engines.local.status import StatusWriter
from paas_pitr.engines.local.wal import ArchiverStats
from paas_pitr.errors import DatabaseError, EngineError, PitrError
from paas_pitr.switchover.record import is_hibernated

log = logging.getLogger(__name__)

PHASE_HIBERNATED = "Cluster in hibernation"
# The longest wait for a server's archiver to catch up before it is stopped for a switch.
ARCHIVE_DRAIN_SECONDS = 30.0


def stop_promptly(instance: Instance, timeout: float = 60.0) -> None:
    """A fast shutdown, noticed within 10 ms (``pg_ctl -w`` looks every 100 ms)."""
    server = instance.server
    pid = server.postmaster_pid()
    if pid is None or not server.is_running():
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    except PermissionError:
        server.stop(mode="fast", timeout=timeout)
        return
    deadline = time.monotonic() + timeout
    while server.is_running():
        if time.monotonic() > deadline:
            raise DatabaseError(f"PostgreSQL of {instance.name} did not stop in {timeout:.0f}s")
        time.sleep(0.01)


def start_promptly(instance: Instance, timeout: float = 60.0) -> None:
    """Start and wait until the server accepts connections, looking every 10 ms."""
    instance.server.start(wait=False)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(instance.server.admin_conninfo(), connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"PostgreSQL of {instance.name} did not accept connections in "
                    f"{timeout:.0f}s: {exc}; log tail: {instance.server.log_tail()}"
                ) from exc
            time.sleep(0.01)


def drain_archive(instance: Instance, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) until ``instance``'s server has no WAL segment
    waiting to be archived."""
    status = instance.server.data_dir / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and instance.server.is_running():
        try:
            if not any(status.glob("*.ready")):
                return
        except OSError:
            return
        time.sleep(0.05)


def final_latest_restorable(instance: Instance) -> str | None:
    """The newest restorable instant of ``instance``'s stopped server (ISO 8601), from
    its heartbeats and the newest segment its archiver marked done (``None``: unknown)."""
    status = instance.server.data_dir / "pg_wal" / "archive_status"
    try:
        done = sorted(
            p.name.removesuffix(".done")
            for p in status.glob("*.done")
            if len(p.name) == len("000000010000000000000001.done")
        )
    except OSError:
        return None
    if done:
        instance.update_latest_restorable(ArchiverStats(last_archived_wal=done[-1]))
    latest = instance.meta.get("latest_restorable")
    return latest if isinstance(latest, str) else None


class DataSwitch:
    def __init__(
        self,
        root: Path,
        objects: ObjectDatabase,
        status: StatusWriter,
        archiving: Archiving,
        instance_for: Callable[[Manifest], Instance],
    ) -> None:
        self.folder = root / "switches"
        self.objects = objects
        self.status = status
        self.archiving = archiving
        self.instance_for = instance_for
        self.busy: set[str] = set()
        """Clusters whose servers the reconciler must leave alone: a switch is moving them."""

    def _journal(self, switch_id: str) -> Path:
        if not switch_id.isalnum():
            raise EngineError(f"invalid switch id {switch_id!r}")
        return self.folder / f"{switch_id}.json"

    def _write(self, path: Path, body: dict[str, Any]) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def unfinished(self) -> list[str]:
        """Ids of journaled switches that did not finish (a crash interrupted them)."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            body = json.loads(path.read_text(encoding="utf-8"))
            if not body.get("done"):
                found.append(path.stem)
        return found

    def run(self, switch_id: str, active: Manifest | None, kept: Manifest | None) -> float:
        """Switch (blocking; run in a thread): see :meth:`SwitchingEngine.switch_clusters`.
        ``active``/``kept`` may be ``None`` only to resume a journaled switch."""
        path = self._journal(switch_id)
        if path.exists():
            journal: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if journal.get("done"):
                return float(journal.get("unavailable_seconds") or 0.0)
        else:
            if active is None or kept is None:
                raise EngineError(f"no switch {switch_id!r} to resume")
            journal = {"active": active, "kept": kept, "step": 0, "done": False}
        active, kept = journal["active"], journal["kept"]
        a = self.instance_for(active)
        b = self.instance_for(kept)
        if "latest" not in journal:
            # Facts that belong to the data (not to the server) move with it.
            journal["latest"] = [a.meta.get("latest_restorable"), b.meta.get("latest_restorable")]
            self._write(path, journal)
        names = {a.name, b.name}
        self.busy |= names
        try:
            # Neither counts against the addon's availability: the other server does not
            # serve the app, and a shut-down server first archives every WAL segment that
            # is ready (seconds each with barman-cloud), so the addon's archive is drained
            # while it still serves.
            b.server.stop(mode="fast")
            if journal["step"] == 0 and a.server.is_running():
                # The shutdown checkpoint is then short too.
                with a.connect() as conn:
                    conn.execute("CHECKPOINT")
                drain_archive(a, ARCHIVE_DRAIN_SECONDS)
            started = time.monotonic()
            stop_promptly(a)
            stopped = time.monotonic()
            if journal["step"] == 0:
                # The server archived its last ready segments while stopping: the data's
                # newest restorable instant is the newest heartbeat in them, later than
                # what was known before the stop.
                final = final_latest_restorable(a)
                if final is not None:
                    journal["latest"][0] = final
                    self._write(path, journal)
            parked = a.root / "data.switching"
            moves = [
                (a.server.data_dir, parked),
                (b.server.data_dir, a.server.data_dir),
                (parked, b.server.data_dir),
            ]
            for index, (source, target) in enumerate(moves, start=1):
                if journal["step"] >= index:
                    continue
                # After a crash the rename may be done while the journal says otherwise.
                if source.exists() and not target.exists():
                    os.rename(source, target)
                journal["step"] = index
                self._write(path, journal)
            a_latest, b_latest = journal["latest"]
            for instance, latest in ((a, b_latest), (b, a_latest)):
                instance.meta["latest_restorable"] = latest
                instance.meta["settings"] = None
                instance.heartbeats.clear()
                instance.save_meta()
            stored = self.objects.put(active)
            self.objects.put(kept)
            # The status CNPG would recompute for the data now behind the addon's Cluster.
            self.status.update_cluster(
                stored["metadata"]["name"],
                {"firstRecoverabilityPoint": None, "lastSuccessfulBackup": None},
            )
            self.status.set_phase(kept["metadata"]["name"], PHASE_HIBERNATED)
            self.status.set_condition(
                kept["metadata"]["name"], "Ready", False, "Hibernated", "the cluster is hibernated"
            )
            self.archiving.configure(stored, a)
            settings = a.settings_for(stored)
            a.write_config(settings)
            a.meta["settings"] = settings
            a.save_meta()
            swapped = time.monotonic()
            if not is_hibernated(stored):
                start_promptly(a)
                # The app's password is the addon's, whatever the data held.
                a.create_app_objects()
            unavailable = time.monotonic() - started
            phases = {
                "stop": round(stopped - started, 3),
                "swap": round(swapped - stopped, 3),
                "start": round(started + unavailable - swapped, 3),
            }
            journal.update(done=True, unavailable_seconds=unavailable, phases=phases)
            self._write(path, journal)
            log.info(
                "switched %s to the data of %s: unavailable %.3fs %s",
                a.name,
                b.name,
                unavailable,
                phases,
            )
            return unavailable
        except PitrError as exc:
            raise EngineError(f"switch {switch_id} did not finish (it resumes): {exc}") from exc
        except OSError as exc:
            raise EngineError(f"switch {switch_id} did not finish (it resumes): {exc}") from exc
        finally:
            self.busy -= names
