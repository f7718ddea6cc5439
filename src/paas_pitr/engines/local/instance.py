"""One PostgreSQL server per Cluster object, with its archive scripts and heartbeat.

An :class:`Instance` owns its directory under the state directory: the data directory,
the scripts PostgreSQL calls (archive_command, restore_command) with their credentials, and
``meta.json`` (port, passwords, bootstrap state, newest restorable instant), which
outlives the process. Its state is read from files (``postmaster.pid``, the log) where
connecting would disturb a starting server (see :mod:`.serverlog`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local import archive_client
from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.barman import Barman, env_file_text, failing_script
from paas_pitr.engines.local.parameters import cluster_parameters, server_settings
from paas_pitr.engines.local.serverlog import (
    barman_errors,
    postmaster_status_of,
    startup_failure,
)
from paas_pitr.engines.local.wal import ArchiverStats, parse_lsn, segment_end_lsn
from paas_pitr.errors import DatabaseError
from paas_pitr.postgres.binaries import PostgresBinaries
from paas_pitr.postgres.server import (
    OsUser,
    PostgresServer,
    chown_tree,
    pick_port,
    port_is_free,
)

APP_DATABASE = "app"
APP_USER = "app"
HEARTBEAT_DATABASE = "paas_pitr_heartbeat"


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

    def is_ready(self) -> bool:
        """Bootstrapped and running: a server backups can be taken from."""
        return self.bootstrap_state == "done" and self.server.is_running()

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
        self,
        config: ArchiveConfig | None,
        credentials: dict[str, str] | None,
        problem: str | None,
        *,
        reply_seconds: float = archive_client.TIMEOUT_SECONDS,
    ) -> None:
        """archive.sh and its 0600 credentials; rewritten whenever config or Secret changes,
        so a fixed credential heals archiving without a restart. ``reply_seconds``: how
        long it waits for the WAL archiver's answer before falling back."""
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
            text = self.barman.wal_archive_script(
                config,
                env_file,
                self.archive_error_file,
                self.archiver_socket,
                reply_seconds=reply_seconds,
            )
        self._write_owned(script, text, 0o700)

    def write_restore_script(
        self, config: ArchiveConfig, credentials: dict[str, str], parallel: int
    ) -> Path:
        self.prepare_root()
        env_file = self.scripts / "source-s3.env"
        self._write_owned(env_file, env_file_text(credentials), 0o600)
        script = self.scripts / "restore.sh"
        text = self.barman.wal_restore_script(
            config,
            env_file,
            self.restore_error_file,
            self.wal_spool,
            self.server.data_dir,
            parallel,
        )
        self._write_owned(script, text, 0o700)
        return script

    @property
    def archiver_socket(self) -> Path:
        """Where the instance's WAL archiver (:mod:`.walarchiver`) listens. In the short
        socket folder: a unix socket path is limited to about 107 bytes."""
        assert self.server.socket_dir is not None
        return self.server.socket_dir / "walarchiver.sock"

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
        return server_settings(parameters, self.scripts / "archive.sh", extra)

    def settings_for(self, cluster: Manifest) -> dict[str, str]:
        """The server settings of ``cluster``: its ``spec.postgresql.parameters`` with
        the ones the engine owns."""
        return self.server_settings(cluster_parameters(cluster))

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

    def apply_settings(self, settings: dict[str, str]) -> None:
        """Write ``settings`` and reload the running server, unless they are in force."""
        if self.meta.get("settings") == settings:
            return
        self.write_config(settings)
        self.meta["settings"] = settings
        self.save_meta()
        with self.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")

    # --- lifecycle -------------------------------------------------------------------

    def ensure_port(self) -> None:
        """Move a stopped server off a port someone else took meanwhile. A client still
        holding the old address would hand its password to whoever listens there: the app
        password changes with the port (applied by :meth:`rotate_app_password_if_moved`)."""
        if not self.server.is_running() and not port_is_free(self.server.port):
            self.server.port = pick_port()
            self.meta["port"] = self.server.port
            self.meta["app_password"] = secrets.token_urlsafe(18)
            self.meta["app_password_pending"] = True
            self.save_meta()

    def rotate_app_password_if_moved(self) -> None:
        """Apply a password :meth:`ensure_port` changed (the server must be running)."""
        if self.meta.get("app_password_pending") and self.bootstrap_state == "done":
            self.create_app_objects()
            self.meta["app_password_pending"] = False
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

    def recovery_signal_present(self) -> bool:
        """Whether ``recovery.signal`` is still there: PostgreSQL removes it when archive
        recovery ends, right before promotion (a file read, no connection)."""
        return (self.server.data_dir / "recovery.signal").exists()

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
        return barman_errors(text)

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
