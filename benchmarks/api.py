"""API latency and throughput, next to a bare endpoint of the same framework, same run.

    .venv/bin/python benchmarks/api.py [--requests 2000] [--clients 16 --seconds 5 --rounds 2]

Starts a real PostgreSQL for the audit log, serves the API with uvicorn on loopback (the
in-memory engine holds one addon with 100 completed backups), and measures from one client:
GET .../backups, POST .../restore with the audit database up, then down, and a bare FastAPI
endpoint served the same way. Prints p50/p99 latency and requests/s.

Then ``--clients`` concurrent clients in another process (``wrk`` when installed, Debian's
package; else a Python process with one thread per client) against ``/healthz``, the bare
endpoint and ``GET .../backups`` (first page) of addons holding 10, 100 and 1000 stored
backups, the rows interleaved over ``--rounds`` rounds (the median of each is printed), and
the issue's ratios: the listing's p50 against ``/healthz``'s, its req/s against the bare
endpoint's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
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


_WRK_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def load(url: str, headers: dict[str, str], clients: int, seconds: float) -> tuple[float, ...]:
    """(p50 ms, p99 ms, req/s) of ``clients`` concurrent clients in another process."""
    if shutil.which("wrk"):
        command = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:g}s", "--latency"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out:
            raise SystemExit(f"{url}: errors under load\n{out}")
        latencies = {q: float(v) * _UNIT_MS[u] for q, v, u in _WRK_LATENCY.findall(out)}
        rate = _WRK_RATE.search(out)
        if rate is None or set(latencies) != {"50", "99"}:
            raise SystemExit(f"unexpected wrk output:\n{out}")
        return latencies["50"], latencies["99"], float(rate.group(1))
    command = [sys.executable, __file__, "--load", url, "--clients", str(clients)]
    command += ["--seconds", str(seconds), "--headers", json.dumps(headers)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    p50, p99, rate = json.loads(out)
    return float(p50), float(p99), float(rate)


def client_process(url: str, headers: dict[str, str], clients: int, seconds: float) -> None:
    """The Python load client (when wrk is missing): prints [p50 ms, p99 ms, req/s]."""
    latencies: list[float] = []
    failures: list[int] = []
    deadline = time.perf_counter() + seconds

    def run() -> None:
        with httpx.Client(headers=headers) as client:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = client.get(url)
                latencies.append(time.perf_counter() - t0)
                if response.status_code >= 300:
                    failures.append(response.status_code)

    started = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{url}: HTTP {failures[0]} under load")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(json.dumps([statistics.median(latencies) * 1000, p99 * 1000, len(latencies) / elapsed]))


def put_backups(engine: InMemoryEngine, addon: str, count: int, now: datetime) -> None:
    for day in range(count):
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
        "Cluster", addon, {"conditions": [{"type": "ContinuousArchiving", "status": "True"}]}
    )
    engine.archived_at[addon] = now


def concurrent(
    url: str,
    bare_url: str,
    client: httpx.Client,
    engine: InMemoryEngine,
    args: argparse.Namespace,
) -> None:
    headers = {"Authorization": str(client.headers["Authorization"])}
    now = datetime.now(UTC).replace(microsecond=0)
    rows: list[tuple[str, str, dict[str, str]]] = [
        ("/healthz", f"{url}/healthz", {}),
        ("bare FastAPI endpoint", f"{bare_url}/bare", {}),
    ]
    for count in (10, 100, 1000):
        created = client.post(f"/v1/apps/app-{count}/addons", json={"plan": "pro"})
        if created.status_code != 201:
            raise SystemExit(f"addon not created: {created.text}")
        addon = created.json()["data"]["addon_id"]
        put_backups(engine, addon, count, now)
        path = f"{url}/v1/apps/app-{count}/addons/{addon}/backups"
        rows.append((f"GET .../backups ({count} backups)", path, headers))
    figures: dict[str, list[tuple[float, ...]]] = {name: [] for name, _, _ in rows}
    for _ in range(args.rounds):
        for name, target, extra in rows:
            figures[name].append(load(target, extra, args.clients, args.seconds))
    tool = "wrk" if shutil.which("wrk") else "a Python client process"
    print(
        f"\n{args.clients} concurrent clients ({tool}), {args.seconds:g} s per row, "
        f"rows interleaved, median of {args.rounds} rounds"
    )
    print(f"{'endpoint':<44} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>10}")
    medians = {
        name: tuple(statistics.median(run[i] for run in runs) for i in range(3))
        for name, runs in figures.items()
    }
    for name, (p50, p99, rate) in medians.items():
        print(f"{name:<44} {p50:8.2f} {p99:8.2f} {rate:10.0f}")
    health, bare = medians["/healthz"], medians["bare FastAPI endpoint"]
    for count in (10, 100, 1000):
        p50, _, rate = medians[f"GET .../backups ({count} backups)"]
        print(
            f"{count:>5} backups: p50 {p50 / health[0]:.2f}x /healthz's (goal <= 2), "
            f"req/s {rate / bare[2]:.2f}x the bare endpoint's (goal >= 0.3)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        client_process(args.load, json.loads(args.headers), args.clients, args.seconds)
        return

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
        # Every restore request is measured as accepted: the limits are the run's size.
        settings = Settings(
            state_dir=work / "state",
            cnpg_mode="in-tree",
            max_restores_per_addon=10**7,
            max_concurrent_restores_per_tenant=10**7,
        )
        engine = InMemoryEngine()
        state = AppState.build(
            settings,
            engine,
            AuditLog(
                PostgresAuditRepository(pg.dsn("audit"), timeout=1.0),
                AuditJournal(work / "journal.jsonl"),
                max_backoff=1.0,
            ),
            TokenAuthority(b"b" * 48, cache_seconds=settings.token_cache_seconds),
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
        put_backups(engine, addon, 100, now)
        engine.archived_at[addon] = now
        target = (now - timedelta(hours=2)).isoformat()
        bare_client = httpx.Client(base_url=bare_url)

        # First: the restores measured below leave hundreds of restore clusters behind.
        concurrent(url, bare_url, client, engine, args)
        print(f"\n{args.requests} sequential requests per row, one client, loopback")
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
