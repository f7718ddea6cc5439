"""API latency and throughput, next to a bare endpoint of the same framework, same run.

    .venv/bin/python benchmarks/api.py [--requests 2000]

Starts a real PostgreSQL for the audit log, serves the API with uvicorn on loopback (the
in-memory engine holds one addon with 100 completed backups), and measures from one client:
GET .../backups, POST .../restore with the audit database up, then down, and a bare FastAPI
endpoint served the same way. Prints p50/p99 latency and requests/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import uvicorn
from fastapi import FastAPI

from paas_pitr.api import create_app
from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import PostgresAuditRepository
from paas_pitr.auth import TokenAuthority
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import OsUser, PostgresServer, make_traversable, pick_port
from paas_pitr.settings import Settings


def serve(app: FastAPI) -> tuple[str, uvicorn.Server]:
    port = pick_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def measure(name: str, count: int, call: Callable[[], httpx.Response]) -> None:
    for _ in range(min(50, count)):
        call()  # warm-up
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        response = call()
        latencies.append(time.perf_counter() - t0)
        if response.status_code >= 300:
            raise SystemExit(f"{name}: HTTP {response.status_code} {response.text[:200]}")
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"{name:<44} {p50:8.2f} {p99:8.2f} {count / elapsed:10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="paas-pitr-bench-"))
    work.chmod(0o755)
    make_traversable(work)
    pg = PostgresServer(
        binaries=find_binaries(None),
        data_dir=work / "pg" / "data",
        port=pick_port(),
        password=uuid.uuid4().hex,
        user=OsUser.for_servers(os.environ.get("PAAS_PITR_PG_OS_USER", "postgres")),
    )
    pg.initdb()
    pg.start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE audit")
        settings = Settings(state_dir=work / "state", cnpg_mode="in-tree")
        engine = InMemoryEngine()
        state = AppState.build(
            settings,
            engine,
            AuditLog(
                PostgresAuditRepository(pg.dsn("audit"), timeout=1.0),
                AuditJournal(work / "journal.jsonl"),
                max_backoff=1.0,
            ),
            TokenAuthority(b"b" * 48),
        )
        url, server = serve(create_app(state))
        bare = FastAPI()

        @bare.get("/bare")
        async def bare_endpoint() -> dict[str, str]:
            return {"data": "ok"}

        bare_url, bare_server = serve(bare)
        token = state.tokens.issue("acme")
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        created = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
        addon = created.json()["data"]["addon_id"]
        now = datetime.now(UTC).replace(microsecond=0)
        for day in range(100):
            end = now - timedelta(days=day, hours=1)
            engine.put(
                {
                    "apiVersion": "postgresql.cnpg.io/v1",
                    "kind": "Backup",
                    "metadata": {
                        "name": f"{addon}-daily-{day}",
                        "labels": {"cnpg.io/cluster": addon},
                        "creationTimestamp": end.isoformat(),
                    },
                    "spec": {"cluster": {"name": addon}},
                    "status": {
                        "phase": "completed",
                        "backupId": end.strftime("%Y%m%dT%H%M%S"),
                        "startedAt": (end - timedelta(minutes=3)).isoformat(),
                        "stoppedAt": end.isoformat(),
                    },
                }
            )
        engine.set_status(
            "Cluster",
            addon,
            {"conditions": [{"type": "ContinuousArchiving", "status": "True"}]},
        )
        engine.archived_at[addon] = now
        target = (now - timedelta(hours=2)).isoformat()
        bare_client = httpx.Client(base_url=bare_url)

        print(f"{args.requests} sequential requests per row, one client, loopback")
        print(f"{'endpoint':<44} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>10}")
        measure(
            "bare FastAPI endpoint (same server setup)",
            args.requests,
            lambda: bare_client.get("/bare"),
        )
        measure(
            "GET .../backups (100 backups, per_page=100)",
            args.requests,
            lambda: client.get(f"/v1/apps/app-1/addons/{addon}/backups?per_page=100"),
        )
        measure(
            "POST .../restore, audit database up",
            args.requests,
            lambda: client.post(
                f"/v1/apps/app-1/addons/{addon}/restore", json={"timestamp": target}
            ),
        )
        pg.stop(mode="immediate")
        measure(
            "POST .../restore, audit database DOWN",
            args.requests,
            lambda: client.post(
                f"/v1/apps/app-1/addons/{addon}/restore", json={"timestamp": target}
            ),
        )
        print(f"audit events waiting in the journal while down: {state.audit.pending}")
        pg.start()
        deadline = time.monotonic() + 60
        while state.audit.pending and time.monotonic() < deadline:
            time.sleep(0.2)
        with psycopg.connect(pg.dsn("audit")) as conn:
            rows = conn.execute(
                "SELECT count(*) FROM paas_audit_events WHERE action = 'addon.restore_pitr'"
            ).fetchone()
        print(
            f"restore audit rows after the database returned: {rows[0] if rows else 0} "
            f"(expected {2 * (args.requests + min(50, args.requests))})"
        )
        server.should_exit = True
        bare_server.should_exit = True
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
