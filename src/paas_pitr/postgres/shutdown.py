"""Stopping many PostgreSQL servers at once, each within a deadline (``serve`` on Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from paas_pitr.errors import PitrError
from paas_pitr.postgres.server import PostgresServer

log = logging.getLogger(__name__)
# After the fast shutdown's deadline: an immediate shutdown needs no checkpoint (the next
# start replays WAL, as after a crash), so it takes well under this.
IMMEDIATE_SECONDS = 5.0


async def stop_servers(servers: Mapping[str, PostgresServer], deadline_seconds: float) -> None:
    """Stop every server in parallel: a fast shutdown (clients disconnected, a checkpoint,
    the archiver finishing the segment it is on) given ``deadline_seconds``, then an
    immediate one for any still running. Says on the log what it waits for; a server that
    cannot be stopped at all is logged, never raised, so the others still stop."""
    running = {name: server for name, server in servers.items() if server.is_running()}
    if not running:
        return
    log.info(
        "waiting for %d PostgreSQL server(s) to stop (at most %.0fs each): %s",
        len(running),
        deadline_seconds,
        ", ".join(sorted(running)),
    )

    def stop(name: str, server: PostgresServer) -> None:
        try:
            server.stop(mode="fast", timeout=deadline_seconds)
            return
        except PitrError as exc:
            log.warning(
                "PostgreSQL server %s did not stop within %.0fs (%s); stopping it immediately",
                name,
                deadline_seconds,
                exc.message,
            )
        try:
            server.stop(mode="immediate", timeout=IMMEDIATE_SECONDS)
        except PitrError as exc:
            log.error("cannot stop PostgreSQL server %s: %s", name, exc.message)

    await asyncio.gather(
        *(asyncio.to_thread(stop, name, server) for name, server in running.items())
    )
