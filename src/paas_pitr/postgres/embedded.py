"""The embedded audit database: a PostgreSQL server under the state directory.

Used when ``PAAS_PITR_DATABASE_URL`` is not set, so ``paas-pitr serve`` works with nothing
configured. Its port and password are generated once and kept (mode 0600) with it.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import (
    UTC_ZONE_SETTINGS,
    OsUser,
    PostgresServer,
    pick_port,
    port_is_free,
)

DATABASE = "paas_pitr"


class EmbeddedDatabase:
    def __init__(self, state_dir: Path, *, os_user: str = "postgres", pg_bin: str | None = None):
        self.root = state_dir / "audit-db"
        self._os_user = os_user
        self._pg_bin = pg_bin
        self._server: PostgresServer | None = None

    def _credentials(self) -> dict[str, object]:
        path = self.root / "credentials.json"
        if path.exists():
            loaded: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
        self.root.mkdir(parents=True, exist_ok=True)
        credentials: dict[str, object] = {
            "port": pick_port(),
            "password": secrets.token_urlsafe(24),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(credentials, handle)
        return credentials

    @property
    def server(self) -> PostgresServer:
        if self._server is None:
            credentials = self._credentials()
            self._server = PostgresServer(
                binaries=find_binaries(None, self._pg_bin),
                data_dir=self.root / "data",
                port=int(str(credentials["port"])),
                password=str(credentials["password"]),
                user=OsUser.for_servers(self._os_user),
            )
        return self._server

    def start(self) -> str:
        server = self.server
        if not server.is_initialized():
            server.initdb()
        # Written at every start, not only after initdb, so that a database initialized by an
        # earlier version (in the host's zone) is moved to UTC too.
        server.write_conf({"max_connections": "50", "shared_buffers": "32MB", **UTC_ZONE_SETTINGS})
        if not server.is_running() and not port_is_free(server.port):
            # Someone took our port while we were down: move rather than fail.
            server.port = pick_port()
            self._save_port(server.port)
        server.start()
        self._ensure_database()
        return server.dsn(DATABASE)

    def url(self) -> str | None:
        """Its URL (the one ``serve`` uses), without starting anything; ``None`` before the
        first start created its credentials."""
        if not (self.root / "credentials.json").exists():
            return None
        return self.server.dsn(DATABASE)

    def _save_port(self, port: int) -> None:
        path = self.root / "credentials.json"
        credentials = self._credentials()
        credentials["port"] = port
        path.write_text(json.dumps(credentials), encoding="utf-8")

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.server.dsn("postgres"), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if found.fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self, timeout: float = 60) -> None:
        if self._server is not None:
            self._server.stop(timeout=timeout)
