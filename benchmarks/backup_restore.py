"""Backup, restore, archive lag and RPO of the local engine on a ~1 GiB pgbench database.

    .venv/bin/python benchmarks/backup_restore.py [--scale 70] [--pgbench-seconds 60]

Real processes throughout (PostgreSQL, barman-cloud, the embedded S3 server). Prints, side
by side in one run:
- base backup wall time vs `pg_basebackup -Ft -z` to local disk;
- restore + WAL replay + promote wall time vs the physical baseline (untar a local base
  backup, replay from a local copy of the same WAL with `cp`, promote);
- archive lag (commit -> WAL object stored) min/avg/max;
- a restore drill to the same instant: its RTO, the time its checks take, its restore rate;
- in-place restore: how long the addon answers nothing while it is switched to the
  restored data (a client querying through the app's connection string every 10 ms);
- RPO: the newest commit lost when the primary's data directory is destroyed mid-write and
  the addon restored to its latest restorable instant.

Against pgBackRest, interleaved: ``pgbackrest_anchor.py`` (base backup, restores at two WAL
volumes) and ``wal_drain.py`` (WAL archiving after a burst, CPU per segment).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from harness import local_stack, step, wait, wait_promoted

from paas_pitr.api.state import AppState
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.context import Caller
from paas_pitr.postgres.server import PostgresServer, chown_tree, make_traversable, pick_port

CALLER = Caller("bench")
APP = "bench-app"


async def run(command: list[str], *, check: bool = True, capture_output: bool = True) -> None:
    # In a thread: the engine's reconciler shares this event loop and must keep running.
    await asyncio.to_thread(subprocess.run, command, check=check, capture_output=capture_output)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 ~ 1.05 GiB)")
    parser.add_argument("--pgbench-seconds", type=int, default=60)
    parser.add_argument("--compression", default="snappy")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="paas-pitr-bench-"))
    work.chmod(0o755)
    make_traversable(work)
    engine, state = await local_stack(work, base_backup_compression=args.compression)
    results: list[tuple[str, str, str]] = []
    try:
        addon = await state.addons.create_addon_generic(CALLER, APP, plan="pro")
        addon_id = addon.addon_id

        async def ready() -> Any:
            view = await state.addons.view(await state.addons.get_cluster(CALLER, APP, addon_id))
            return view.ready and view

        view = await wait(ready, "the addon")
        uri = view.connection["uri"]
        instance = engine.instances[addon_id]
        server = instance.server
        pgbench = server.binaries.tool("pgbench")
        step(f"pgbench -i -s {args.scale}")
        await run(
            [pgbench, "-i", "-s", str(args.scale), "-q", uri], check=True, capture_output=True
        )
        with instance.connect() as conn:
            size = conn.execute("SELECT pg_database_size('app')").fetchone()
        step(f"database size {size[0] / 2**30:.2f} GiB" if size else "database size unknown")

        async def backups_done(count: int) -> Any:
            listing = await state.backups.list_backups(CALLER, APP, addon_id, per_page=500)
            done = [b for b in listing.items if b.status.value == "completed"]
            running = [b for b in listing.items if b.status.value in ("pending", "running")]
            return len(done) >= count and not running and listing

        await wait(lambda: backups_done(1), "the first backup")

        # 1. base backup vs pg_basebackup -Ft -z
        step("on-demand base backup through the engine")
        started = time.monotonic()
        await state.backups.create(CALLER, APP, addon_id)
        await wait(lambda: backups_done(2), "the on-demand backup")
        backup_seconds = time.monotonic() - started
        step("pg_basebackup -Ft -z to local disk")
        basedir = work / "basebackup"
        started = time.monotonic()
        await run(
            [
                server.binaries.tool("pg_basebackup"),
                "-h",
                str(server.socket_dir),
                "-p",
                str(server.port),
                "-U",
                "postgres",
                "-D",
                str(basedir),
                "-Ft",
                "-z",
                "-X",
                "none",
            ],
            check=True,
            capture_output=True,
        )
        basebackup_seconds = time.monotonic() - started
        results.append(
            (
                f"base backup ({args.compression}) -> S3 vs pg_basebackup -Ft -z -> disk",
                f"{backup_seconds:.1f} s",
                f"{basebackup_seconds:.1f} s",
            )
        )

        # 2. archive lag
        step("archive lag, 10 samples (archive_timeout 10 s)")
        # The addon archives under its incarnation's own folder, not its name.
        addon_cluster = await state.addons.get_cluster(CALLER, APP, addon_id)
        wal_root = (
            engine.root
            / "s3"
            / "data"
            / "paas-pg-backups"
            / CALLER.tenant
            / APP
            / incarnation_server_name_of(addon_cluster)
            / "wals"
        )
        lags: list[float] = []
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS lag (id serial PRIMARY KEY, at timestamptz)")
            for _ in range(10):
                conn.execute("INSERT INTO lag (at) VALUES (clock_timestamp())")
                committed = time.monotonic()
                row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
                assert row is not None
                segment = row[0]
                while not list(wal_root.glob(f"{segment[:16]}/{segment}*")):
                    await asyncio.sleep(0.05)
                lags.append(time.monotonic() - committed)
                await asyncio.sleep(1.3)
        results.append(
            (
                "archive lag, commit -> object stored (min/avg/max)",
                f"{min(lags):.1f} / {statistics.mean(lags):.1f} / {max(lags):.1f} s",
                "-",
            )
        )

        # 3. restore + replay + promote vs the physical baseline
        step(f"pgbench -T {args.pgbench_seconds} to produce WAL to replay")
        with instance.connect() as conn:
            lsn_row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        await run(
            [pgbench, "-c", "2", "-j", "2", "-T", str(args.pgbench_seconds), "-n", uri],
            check=True,
            capture_output=True,
        )
        target = datetime.now(UTC)
        with instance.connect() as conn:
            wal_row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)",
                (lsn_row[0] if lsn_row else "0/0",),
            ).fetchone()
        wal_bytes = float(wal_row[0]) if wal_row else 0.0
        step(f"{wal_bytes / 2**30:.2f} GiB of WAL since the backup; waiting for the archive")

        async def restorable() -> bool:
            listing = await state.backups.list_backups(CALLER, APP, addon_id)
            return bool(listing.window.latest and listing.window.latest >= target)

        await wait(restorable, "the target to be restorable")
        step("restore through the API use-case (restore + replay + promote)")
        started = time.monotonic()
        restore, _ = await state.restores.restore_addon_pitr(
            CALLER, APP, addon_id, timestamp=target.isoformat()
        )

        async def restored() -> Any:
            view = await state.restores.get(CALLER, APP, addon_id, restore.restore_id)
            if view.status == "failed":
                raise SystemExit(f"restore failed: {view.reason}")
            return view.status == "ready" and view

        await wait(restored, "the restore")
        restore_seconds = time.monotonic() - started

        step("physical baseline: untar + replay from a local WAL copy + promote")
        walcopy = work / "walcopy"
        walcopy.mkdir()
        for path in wal_root.rglob("*"):
            if path.is_file():
                name = path.name.removesuffix(".gz")
                opener = gzip.open if path.suffix == ".gz" else open
                with opener(path, "rb") as source, (walcopy / name).open("wb") as dest:
                    shutil.copyfileobj(source, dest)
        chown_tree(walcopy, instance.user)
        walcopy.chmod(0o755)
        baseline = PostgresServer(
            binaries=server.binaries,
            data_dir=work / "baseline" / "data",
            port=pick_port(),
            password="x",
            user=instance.user,
            socket_dir=work / "baseline" / "run",
            local_trust=True,
        )
        baseline.data_dir.parent.mkdir()
        chown_tree(baseline.data_dir.parent, instance.user)
        started = time.monotonic()
        baseline.data_dir.mkdir(mode=0o700)
        await run(
            ["tar", "-xzf", str(basedir / "base.tar.gz"), "-C", str(baseline.data_dir)], check=True
        )
        baseline.write_conf(
            {
                "restore_command": f"cp {walcopy}/%f %p",
                "recovery_target_time": target.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
                "recovery_target_action": "promote",
                "archive_mode": "off",
            }
        )
        (baseline.data_dir / "recovery.signal").touch()
        chown_tree(baseline.data_dir, instance.user)
        baseline.start(wait=False)
        await wait_promoted(baseline, interval=0.2)
        baseline_seconds = time.monotonic() - started
        baseline.destroy()
        results.append(
            (
                f"restore + replay {wal_bytes / 2**30:.2f} GiB WAL + promote vs untar + cp replay",
                f"{restore_seconds:.1f} s",
                f"{baseline_seconds:.1f} s",
            )
        )

        # 3b. in-place: the same target restored behind the addon's own connection
        step("in-place restore of the same target: restore, verify, switch")
        unavailable, engine_says = await in_place(state, addon_id, uri, target)
        results.append(
            (
                "in-place switch: addon unavailable (app's view / engine's stop->start)",
                f"{unavailable:.2f} s / {engine_says:.2f} s",
                "-",
            )
        )
        for journal in sorted((engine.root / "switches").glob("*.json")):
            phases = json.loads(journal.read_text(encoding="utf-8")).get("phases") or {}
            step("switch phases (s): " + ", ".join(f"{k} {v}" for k, v in phases.items()))

        async def reopened() -> Any:
            listing = await state.backups.list_backups(CALLER, APP, addon_id)
            return listing.window.latest is not None

        await wait(reopened, "the switched-to incarnation's first range")

        # 4. the same restore as a drill: its own RTO, then its checks (amcheck included)
        step("restore drill to the same instant (restore, checks, cluster deleted)")
        drill = await state.drills.start(CALLER, APP, addon_id, timestamp=target.isoformat())

        async def drilled() -> Any:
            record = await state.drills.get(CALLER, APP, addon_id, drill.drill_id)
            return record.finished and record

        record = await wait(drilled, "the drill")
        if record.status != "passed":
            raise SystemExit(f"drill failed at {record.failing_check}: {record.reason}")
        checked = (record.finished_at - record.ready_at).total_seconds()
        rate = (record.restore_rate_bytes_per_second or 0) / 2**20
        results.append(
            (
                "restore drill: RTO (request to ready), then checks incl. amcheck",
                f"{record.rto_seconds:.1f} s + {checked:.1f} s",
                "-",
            )
        )
        results.append(
            ("restore drill: restore rate (data + WAL replayed)", f"{rate:.1f} MiB/s", "-")
        )

        # 5. RPO
        step("RPO: destroy the primary mid-write, restore to the latest restorable instant")
        acked: dict[str, Any] = {"id": 0, "at": None}
        stop = threading.Event()

        def writer() -> None:
            try:
                with psycopg.connect(uri, autocommit=True) as conn:
                    conn.execute("CREATE TABLE rpo (id bigint PRIMARY KEY, at timestamptz)")
                    n = 0
                    while not stop.is_set():
                        n += 1
                        conn.execute("INSERT INTO rpo VALUES (%s, clock_timestamp())", (n,))
                        acked.update(id=n, at=datetime.now(UTC))
                        time.sleep(0.01)
            except psycopg.Error:
                return

        thread = threading.Thread(target=writer)
        thread.start()
        await asyncio.sleep(25)
        instance.server.kill()
        shutil.rmtree(instance.server.data_dir, ignore_errors=True)
        stop.set()
        thread.join()
        latest = instance.latest_restorable
        assert latest is not None
        restore, _ = await state.restores.restore_addon_pitr(
            CALLER, APP, addon_id, timestamp=latest.isoformat()
        )
        view = await wait(lambda: restored_view(state, restore.restore_id, addon_id), "RPO restore")
        with psycopg.connect(view.connection["uri"]) as conn:
            row = conn.execute("SELECT max(id), max(at) FROM rpo").fetchone()
        restored_id, restored_at = row or (0, None)
        lost = acked["id"] - (restored_id or 0)
        gap = (acked["at"] - restored_at).total_seconds() if restored_at else float("nan")
        results.append(
            (
                "RPO after destroying the primary (archive_timeout 10 s)",
                f"{lost} commits / {gap:.1f} s lost",
                "-",
            )
        )
    finally:
        await state.audit.stop()
        await engine.close()
        print()
        print(f"{'measure':<72} {'paas-pitr':>22} {'baseline':>10}")
        for name, ours, theirs in results:
            print(f"{name:<72} {ours:>22} {theirs:>10}")
        shutil.rmtree(work, ignore_errors=True)


async def in_place(
    state: AppState, addon_id: str, uri: str, target: datetime
) -> tuple[float, float]:
    """An in-place restore to ``target`` while a client queries the addon through its own
    connection string every 10 ms: the longest time without an answer, and the engine's
    own stop -> start figure."""
    assert state.inplace is not None
    restore, _ = await state.restores.restore_addon_pitr(
        CALLER, APP, addon_id, timestamp=target.isoformat(), target="in_place"
    )
    answered: list[float] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(uri, connect_timeout=2) as conn:
                    while not stop.is_set():
                        conn.execute("SELECT 1")
                        answered.append(time.monotonic())
                        time.sleep(0.01)
            except psycopg.Error:
                time.sleep(0.01)

    thread = threading.Thread(target=client)
    thread.start()
    try:

        async def switched() -> Any:
            await state.inplace.pass_once()  # type: ignore[union-attr]
            view = await state.restores.get(CALLER, APP, addon_id, restore.restore_id)
            if view.status == "failed":
                raise SystemExit(f"in-place restore failed: {view.reason}")
            return view.status == "switched" and view

        view = await wait(switched, "the in-place restore")
        await asyncio.sleep(1)
    finally:
        stop.set()
        thread.join()
    gaps = [b - a for a, b in itertools.pairwise(answered)]
    assert view.switch is not None
    return max(gaps, default=float("nan")), float(view.switch["unavailable_seconds"])


async def restored_view(state: AppState, restore_id: str, addon_id: str) -> Any:
    view = await state.restores.get(CALLER, APP, addon_id, restore_id)
    if view.status == "failed":
        raise SystemExit(f"restore failed: {view.reason}")
    return view.status == "ready" and view


if __name__ == "__main__":
    os.environ.setdefault("PGCONNECT_TIMEOUT", "5")
    asyncio.run(main())
