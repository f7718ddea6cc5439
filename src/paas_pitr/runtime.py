"""Wiring: settings -> engine, audit log, token authority -> the app state."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import PostgresAuditRepository
from paas_pitr.auth import TokenAuthority, load_signing_key
from paas_pitr.engines.base import Engine
from paas_pitr.errors import InvalidSetting, PitrError
from paas_pitr.postgres.embedded import EmbeddedDatabase
from paas_pitr.settings import Settings

log = logging.getLogger(__name__)
# How often ``serve`` checks that the embedded audit database is still running.
EMBEDDED_CHECK_SECONDS = 5.0


def prepare_state_dir(settings: Settings) -> Path:
    state_dir = settings.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    # Servers run as an unprivileged user and must traverse (never list) the state dir.
    state_dir.chmod(0o711)
    return state_dir


def make_engine(settings: Settings) -> Engine:
    if settings.engine == "local":
        from paas_pitr.engines.local import LocalEngine

        return LocalEngine(settings)
    if settings.engine == "kubernetes":
        from paas_pitr.engines.kubernetes import KubernetesEngine

        return KubernetesEngine(settings)
    raise InvalidSetting(f"unknown engine {settings.engine!r}")


class Runtime:
    """Owns what ``serve`` starts outside the app's own lifecycle (the embedded database)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedDatabase | None = None

    async def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        self.embedded = EmbeddedDatabase(
            self.settings.state_dir, os_user=self.settings.pg_os_user, pg_bin=self.settings.pg_bin
        )
        first = not (self.embedded.root / "data" / "PG_VERSION").exists()
        log.info(
            "%s the embedded audit database under %s",
            "initialising (first start only) and starting" if first else "starting",
            self.embedded.root,
        )
        return await asyncio.to_thread(self.embedded.start)

    async def build(self, engine: Engine | None = None) -> AppState:
        prepare_state_dir(self.settings)
        dsn = await self.database_url()
        audit = AuditLog(
            PostgresAuditRepository(dsn),
            AuditJournal(self.settings.state_dir / "audit" / "journal.jsonl"),
            min_free_bytes=self.settings.min_free_disk_mb * 1024 * 1024,
        )
        tokens = TokenAuthority(
            load_signing_key(self.settings), cache_seconds=self.settings.token_cache_seconds
        )
        state = AppState.build(self.settings, engine or make_engine(self.settings), audit, tokens)
        state.closers.append(self.aclose)
        if self.embedded is not None:
            state.background.append(self.supervise_embedded)
        return state

    async def supervise_embedded(self, interval: float = EMBEDDED_CHECK_SECONDS) -> None:
        """Start the embedded audit database again if it dies: audit events wait in the
        journal meanwhile, and are delivered once it is back."""
        while True:
            await asyncio.sleep(interval)
            embedded = self.embedded
            if embedded is None or embedded.server.is_running():
                continue
            log.warning("the embedded audit database is down; starting it again")
            try:
                await asyncio.to_thread(embedded.start)
            except PitrError as exc:
                log.error("cannot restart the embedded audit database: %s", exc.message)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self.embedded is not None:
            log.info("stopping the embedded audit database")
            self.embedded.stop(timeout=self.settings.shutdown_deadline_seconds)
            self.embedded = None
