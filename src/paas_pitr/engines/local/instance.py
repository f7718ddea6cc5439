"""One PostgreSQL server per Cluster object, with its archive scripts and heartbeat."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from paas_pitr.cnpg.diagnosis import TRANSIENT_SERVER_STATES, diagnose_recovery
from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.barman import Barman, env_file_text, failing_script
from paas_pitr.errors import DatabaseError
from paas_pitr.postgres.binaries import PostgresBinaries
from paas_pitr.postgres.server import (
    UTC_ZONE_SETTINGS,
    OsUser,
    PostgresServer,
    chown_tree,
    pick_port,
    port_is_free,
)

APP_DATABASE = "app"
APP_USER = "app"
HEARTBEAT_DATABASE = "paas_pitr_heartbeat"
WAL_SEGMENT_BYTES = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})$")
_PARAMETER = re.compile(r"^[a-z_][a-z0-9_.]*$")
# Parameters the engine owns, as CNPG owns its fixed parameters; the zones are owned so
# that no user parameter moves a server off UTC.
_FIXED = {
    *UTC_ZONE_SETTINGS,
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "archive_mode",
    "archive_command",
    "restore_command",
    "wal_level",
    "hot_standby",
}


def segment_end_lsn(wal_name: str | None) -> int | None:
    """The LSN just past the end of a WAL segment file (16 MiB segments)."""
    match = _SEGMENT.match(wal_name or "")
    if not match:
        return None
    log_id, segment = int(match.group(1), 16), int(match.group(2), 16)
    return (log_id << 32) + (segment + 1) * WAL_SEGMENT_BYTES


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


# postmaster.pid: line 1 is the postmaster's PID, line 8 its status word, padded to 8
# characters: "starting", "stopping", "ready" or "standby". PostgreSQL 15 restoring with
# hot_standby on (our case) goes starting -> ready (consistent, read-only) and stays ready
# once promoted; with it off, starting -> standby -> ready after promotion.
_PM_STATUS_LINE = 8
PM_READY = "ready"
PM_STARTING = "starting"
PM_STOPPING = "stopping"

# "%m [%p] " (log_line_prefix) then "LEVEL:  message"; the prefix is optional so lines
# written before the configuration is read still parse.
_LOG_ENTRY = re.compile(
    r"^(?:.*?\[(?P<pid>\d+)\]\s+)?"
    r"(?P<level>DEBUG\d|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT):"
    r"\s+(?P<message>.*)$"
)
# The postmaster names the startup process when it fails (an exit code 0 is never logged).
_STARTUP_EXIT = re.compile(
    r"^startup process \(PID (?P<pid>\d+)\) (?:exited with exit code|was terminated by)"
)
# Startup failures that mean the archive ran out of WAL: the restore_command's own error
# then says which segment and why.
WAL_SHORTAGE_MESSAGES = (
    "recovery ended before configured recovery target was reached",
    "could not locate required checkpoint record",
    "could not locate a valid checkpoint record",
    "wal ends before end of online backup",
    "wal ends before consistent recovery point",
)
_SEGMENT_NAME = re.compile(r"\b([0-9A-F]{24})\b")
# barman-cloud's "2026-01-01 00:00:00,000 [123] " in front of each of its lines.
_BARMAN_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \[\d+\] ")


def postmaster_status_of(pid_file_text: str) -> str:
    """The status word of a postmaster.pid's text; ``"starting"`` until the postmaster has
    written one (it writes its PID first and the status last)."""
    lines = pid_file_text.split("\n")
    if len(lines) >= _PM_STATUS_LINE and lines[_PM_STATUS_LINE - 1].strip():
        return lines[_PM_STATUS_LINE - 1].strip()
    return PM_STARTING


def is_transient(message: str) -> bool:
    """A state PostgreSQL passes through while it starts or stops, never a failure."""
    text = message.strip().rstrip(".").lower()
    return any(text.startswith(state) for state in TRANSIENT_SERVER_STATES)


@dataclass(frozen=True, slots=True)
class _LogError:
    pid: str | None
    level: str
    message: str
    detail: str | None = None

    @property
    def text(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message


def startup_failure(log_text: str) -> str | None:
    """Why PostgreSQL's startup process (recovery) failed, from a server log's text.

    FATAL and PANIC lines of transient states (what clients are told while the server
    starts or stops) are skipped. When the postmaster named the startup process that
    failed, only that process's errors count (a client's own FATAL is not the reason);
    among them a known recovery failure wins, else the last. With no such error, the
    postmaster's own line about the startup process's end, if any. ``None``: nothing
    failed in this text. A DETAIL line is appended in parentheses.
    """
    errors: list[_LogError] = []
    startup_pids: set[str] = set()
    startup_exit: str | None = None
    # A DETAIL belongs to the entry just before it, from the same process.
    last_was_error = False
    for line in log_text.splitlines():
        match = _LOG_ENTRY.match(line)
        if match is None:
            continue
        pid, level, message = match.group("pid"), match.group("level"), match.group("message")
        message = message.strip()
        if level == "DETAIL":
            if last_was_error and errors[-1].pid == pid and errors[-1].detail is None:
                errors[-1] = _LogError(pid, errors[-1].level, errors[-1].message, message)
            continue
        last_was_error = False
        if level in ("FATAL", "PANIC"):
            if not is_transient(message):
                errors.append(_LogError(pid, level, message))
                last_was_error = True
        elif level == "LOG" and (exited := _STARTUP_EXIT.match(message)):
            startup_pids.add(exited.group("pid"))
            startup_exit = message
    candidates = [e for e in errors if e.pid in startup_pids] or errors
    if not candidates:
        return startup_exit
    known = [e for e in candidates if diagnose_recovery(e.message) is not None]
    return (known[0] if known else candidates[-1]).text


def is_wal_shortage(reason: str) -> bool:
    """Whether a startup failure means recovery could not get the WAL it needed."""
    text = reason.lower()
    return any(text.startswith(message) for message in WAL_SHORTAGE_MESSAGES)


def missing_segment(restore_error: str) -> str | None:
    """The WAL segment (24 hex digits) a restore_command error names, if any."""
    match = _SEGMENT_NAME.search(restore_error)
    return match.group(1) if match else None


@dataclass
class ArchiverStats:
    archived_count: int = 0
    last_archived_wal: str | None = None
    last_archived_time: datetime | None = None
    failed_count: int = 0
    last_failed_wal: str | None = None
    last_failed_time: datetime | None = None

    @property
    def failing(self) -> bool:
        if self.last_failed_time is None:
            return False
        # failed_count never resets: compare times, not counts (LOCAL_PIPELINE.md gotcha 7).
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


class Instance:
    def __init__(
        self,
        name: str,
        root: Path,
        socket_root: Path,
        binaries: PostgresBinaries,
        user: OsUser | None,
        barman: Barman,
    ) -> None:
        self.name = name
        self.root = root
        self.barman = barman
        self.user = user
        self.meta_path = root / "meta.json"
        self.meta = self._load_meta()
        # Short socket path: the unix socket path limit is about 107 bytes.
        socket_id = hashlib.sha256(str(root).encode()).hexdigest()[:10]
        self.server = PostgresServer(
            binaries=binaries,
            data_dir=root / "data",
            port=int(self.meta["port"]),
            password=str(self.meta["superuser_password"]),
            user=user,
            socket_dir=socket_root / socket_id,
            local_trust=True,
        )
        self.scripts = root / "barman"
        self.heartbeats: deque[tuple[datetime, int]] = deque(maxlen=4096)

    # --- persistent facts ------------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.meta_path.read_text(encoding="utf-8"))
            return loaded
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            return {
                "port": pick_port(),
                "superuser_password": secrets.token_urlsafe(24),
                "app_password": secrets.token_urlsafe(18),
                "bootstrap": "pending",
            }

    def save_meta(self) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.meta, handle, default=str)
        os.replace(tmp, self.meta_path)

    @property
    def bootstrap_state(self) -> str:
        return str(self.meta.get("bootstrap", "pending"))

    def set_bootstrap(self, state: str, reason: str | None = None) -> None:
        self.meta["bootstrap"] = state
        self.meta["bootstrap_reason"] = reason
        self.save_meta()

    @property
    def latest_restorable(self) -> datetime | None:
        value = self.meta.get("latest_restorable")
        return datetime.fromisoformat(value) if value else None

    def connection_info(self) -> dict[str, Any]:
        password = self.meta["app_password"]
        port = self.server.port
        return {
            "host": "127.0.0.1",
            "port": port,
            "database": APP_DATABASE,
            "user": APP_USER,
            "password": password,
            "uri": f"postgresql://{APP_USER}:{password}@127.0.0.1:{port}/{APP_DATABASE}",
        }

    # --- files the server user owns --------------------------------------------------

    def _write_owned(self, path: Path, text: str, mode: int) -> None:
        """Atomically (re)write a file the server user owns; a no-op when unchanged (the
        reconciler calls this every pass)."""
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)
        chown_tree(tmp, self.user)
        os.replace(tmp, path)

    def prepare_root(self) -> None:
        if self.scripts.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # noqa: S103 - traverse only, for the server user
        self.scripts.mkdir(parents=True, exist_ok=True, mode=0o700)
        chown_tree(self.scripts, self.user)

    @property
    def archive_error_file(self) -> Path:
        return self.scripts / "last-archive-error"

    def write_archive_script(
        self, config: ArchiveConfig | None, credentials: dict[str, str] | None, problem: str | None
    ) -> None:
        """archive.sh and its 0600 credentials; rewritten whenever config or Secret changes,
        so a fixed credential heals archiving without a restart."""
        self.prepare_root()
        script = self.scripts / "archive.sh"
        env_file = self.scripts / "s3.env"
        if config is None:
            # Like CNPG: archive_mode stays on; with no destination the command is a no-op.
            text = "#!/bin/sh\n# Written by paas-pitr: no backup configured.\nexit 0\n"
        elif problem is not None or credentials is None:
            text = failing_script(problem or "no credentials", self.archive_error_file)
        else:
            self._write_owned(env_file, env_file_text(credentials), 0o600)
            text = self.barman.wal_archive_script(config, env_file, self.archive_error_file)
        self._write_owned(script, text, 0o700)

    def write_restore_script(
        self, config: ArchiveConfig, credentials: dict[str, str], parallel: int
    ) -> Path:
        self.prepare_root()
        env_file = self.scripts / "source-s3.env"
        self._write_owned(env_file, env_file_text(credentials), 0o600)
        script = self.scripts / "restore.sh"
        text = self.barman.wal_restore_script(
            config, env_file, self.restore_error_file, self.wal_spool, parallel
        )
        self._write_owned(script, text, 0o700)
        return script

    @property
    def wal_spool(self) -> Path:
        return self.scripts / "wal-spool"

    def read_archive_error(self) -> str | None:
        with contextlib.suppress(OSError):
            text = self.archive_error_file.read_text(encoding="utf-8", errors="replace").strip()
            return " | ".join(text.splitlines()[-3:]) or None
        return None

    # --- configuration ---------------------------------------------------------------

    def server_settings(
        self, parameters: dict[str, Any], extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        settings = {
            key: str(value)
            for key, value in parameters.items()
            if _PARAMETER.match(key) and key not in _FIXED
        }
        settings.update(
            {
                "wal_level": "replica",
                "archive_mode": "on",
                "archive_command": f"'{self.scripts / 'archive.sh'}' \"%p\"",
                "max_wal_senders": "4",
                "max_connections": "50",
                "log_line_prefix": "%m [%p] ",
                **UTC_ZONE_SETTINGS,
            }
        )
        settings.setdefault("archive_timeout", "300s")
        settings.update(extra or {})
        return settings

    def write_config(self, settings: dict[str, str]) -> None:
        conf = {k: v.replace("'", "''") for k, v in settings.items()}
        self.server.write_conf(conf)
        hba = (
            "# Written by paas-pitr.\n"
            "local all all trust\n"
            "local replication all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        self._write_owned(self.server.data_dir / "pg_hba.conf", hba, 0o600)

    # --- lifecycle -------------------------------------------------------------------

    def ensure_port(self) -> None:
        if not self.server.is_running() and not port_is_free(self.server.port):
            self.server.port = pick_port()
            self.meta["port"] = self.server.port
            self.save_meta()

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.server.admin_conninfo(database), autocommit=True, connect_timeout=5
            )
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to {self.name}: {exc}") from exc

    def create_app_objects(self) -> None:
        with self.connect() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,)).fetchone():
                conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(APP_USER),
                        sql.Literal(self.meta["app_password"]),
                    )
                )
            else:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(APP_USER),
                        sql.Literal(self.meta["app_password"]),
                    )
                )
            for database, owner in ((APP_DATABASE, APP_USER), (HEARTBEAT_DATABASE, "postgres")):
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
                ).fetchone()
                if not exists:
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(owner)
                        )
                    )
        with self.connect(HEARTBEAT_DATABASE) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS heartbeat (id int PRIMARY KEY, beat timestamptz)"
            )

    def heartbeat(self) -> None:
        """A tiny commit, so the archive always holds a commit after any archived instant:
        the newest restorable instant stays exact on an idle database."""
        with self.connect(HEARTBEAT_DATABASE) as conn:
            row = conn.execute(
                "INSERT INTO heartbeat (id, beat) VALUES (1, clock_timestamp()) "
                "ON CONFLICT (id) DO UPDATE SET beat = excluded.beat RETURNING beat"
            ).fetchone()
            lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        if row and lsn:
            self.heartbeats.append((row[0].astimezone(UTC), parse_lsn(lsn[0])))

    def archiver_stats(self) -> ArchiverStats:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
                "last_failed_wal, last_failed_time FROM pg_stat_archiver"
            ).fetchone()
        if row is None:
            return ArchiverStats()
        return ArchiverStats(*row)

    def enforce_archive_timeout(self, timeout_seconds: float, stats: ArchiverStats) -> bool:
        """Switch WAL segments when ``archive_timeout`` has passed without a switch.

        PostgreSQL's own archive_timeout was seen not to fire after a restart of the server
        (PostgreSQL 15 here), leaving the newest restorable instant stuck; the engine keeps
        its promise itself. A switch with nothing written since the last one is a no-op.
        """
        with self.connect() as conn:
            row = conn.execute(
                "SELECT pg_walfile_name(pg_current_wal_lsn()), "
                "extract(epoch FROM now() - greatest(pg_postmaster_start_time(), %s))",
                (stats.last_archived_time or datetime.fromtimestamp(0, UTC),),
            ).fetchone()
            if row is None:
                return False
            current, idle = row
            if current == stats.last_archived_wal or float(idle) < timeout_seconds:
                return False
            conn.execute("SELECT pg_switch_wal()")
        return True

    def update_latest_restorable(self, stats: ArchiverStats) -> datetime | None:
        """The newest heartbeat whose commit lies in an archived segment."""
        end = segment_end_lsn(stats.last_archived_wal)
        if end is not None:
            archived = [at for at, lsn in self.heartbeats if lsn <= end]
            if archived:
                newest = max(archived)
                current = self.latest_restorable
                if current is None or newest > current:
                    self.meta["latest_restorable"] = newest.isoformat()
                    self.save_meta()
        return self.latest_restorable

    def in_recovery(self) -> bool:
        with self.connect() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])

    def postmaster_status(self) -> str | None:
        """The running postmaster's status word (see :func:`postmaster_status_of`), or
        ``None`` when no postmaster runs on this data directory. Reads a file: it never
        connects, so it never makes PostgreSQL log anything."""
        if not self.server.is_running():
            return None
        try:
            text = (self.server.data_dir / "postmaster.pid").read_text(errors="replace")
        except OSError:
            return None
        return postmaster_status_of(text)

    def log_since(self, since: int = 0) -> str:
        """The server log from byte offset ``since`` (empty when there is no log)."""
        try:
            with self.server.log_file.open("rb") as handle:
                handle.seek(since)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def startup_failure(self, since: int = 0) -> str | None:
        """Why recovery failed, from the log written after byte offset ``since``
        (:func:`startup_failure`); ``None`` when it shows no failure."""
        return startup_failure(self.log_since(since))

    @property
    def restore_error_file(self) -> Path:
        return self.scripts / "last-restore-error"

    def restore_error(self, newer_than: float) -> str | None:
        """The restore_command's last error, if written at or after ``newer_than`` (a Unix
        time): barman-cloud's lines without their time and PID prefix, joined by " | "."""
        try:
            if self.restore_error_file.stat().st_mtime < newer_than:
                return None
            text = self.restore_error_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        lines: list[str] = []
        for line in text.splitlines():
            cleaned = _BARMAN_PREFIX.sub("", line).strip()
            if cleaned and cleaned not in lines:
                lines.append(cleaned)
        return " | ".join(lines[-3:]) or None

    def log_size(self) -> int:
        try:
            return self.server.log_file.stat().st_size
        except OSError:
            return 0

    def destroy(self) -> None:
        self.server.kill()
        if self.server.socket_dir is not None:
            shutil.rmtree(self.server.socket_dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
