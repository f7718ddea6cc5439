"""The destructive-event finder's scan rate against a bare ``pg_waldump`` of the same WAL.

    .venv/bin/python benchmarks/events.py [--rows 400000] [--parallel 2]

A real PostgreSQL 15 writes WAL (inserts, updates, deletes, a TRUNCATE, a DROP TABLE); its
segments are stored gzip-compressed in a bucket (in memory: the figures are decoding, not
network). Prints, for the same segments, in MiB of WAL per second:
- the finder: download, gunzip, ``pg_waldump`` in chunks (``--parallel`` at once), parse,
  detect;
- ``pg_waldump`` alone, one process over the uncompressed segments, output discarded;
- ``pg_waldump`` with the finder's resource-manager filters, output discarded;
and how often the finder reports its progress (what a client streaming the scan sees).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from paas_pitr.bucket import InMemoryBucket
from paas_pitr.events.detect import Detector
from paas_pitr.events.scan import RMGRS, WalScanner, archived_segments
from paas_pitr.lsn import WAL_SEGMENT_SIZE, parse_lsn, parse_segment
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import (
    OsUser,
    PostgresServer,
    chown_tree,
    make_traversable,
    pick_port,
)

PREFIX = "bench/app/server/wals/"
MIB = 1024 * 1024


def write_wal(server: PostgresServer, rows: int) -> tuple[int, int]:
    """The workload; the LSN range it wrote."""
    with psycopg.connect(server.admin_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_switch_wal()")
        start = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric)")
        conn.execute("CREATE TABLE audit (id int PRIMARY KEY, note text)")
        conn.execute(
            "INSERT INTO orders SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(
            "INSERT INTO audit SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows // 4,)
        )
        for step in range(20):
            conn.execute("UPDATE orders SET amount = amount + 1 WHERE id %% 20 = %s", (step,))
        conn.execute("DELETE FROM orders WHERE id % 3 = 0")
        conn.execute("TRUNCATE audit")
        conn.execute("DROP TABLE orders")
        end = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        conn.execute("SELECT pg_switch_wal()")
    assert start is not None and end is not None
    return parse_lsn(str(start[0])), parse_lsn(str(end[0]))


def rate(seconds: float, mib: float) -> str:
    return f"{mib / seconds:8.1f} MiB/s ({seconds:6.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    binaries = find_binaries(15)
    user = OsUser.for_servers()
    with tempfile.TemporaryDirectory(prefix="paas-pitr-bench-events-") as work_dir:
        work = Path(work_dir)
        make_traversable(work)
        server = PostgresServer(
            binaries=binaries,
            data_dir=work / "data",
            port=pick_port(),
            password="x",
            user=user,
            socket_dir=work / "run",
            local_trust=True,
        )
        server.initdb()
        server.write_conf({"wal_level": "replica", "max_wal_size": "8GB", "wal_keep_size": "8GB"})
        server.start()
        try:
            print(f"[{datetime.now(UTC):%H:%M:%S}] writing WAL ({args.rows} rows)...", flush=True)
            start, end = write_wal(server, args.rows)
            raw = work / "wal"
            raw.mkdir()
            bucket = InMemoryBucket()
            for path in sorted((server.data_dir / "pg_wal").iterdir()):
                segment = parse_segment(path.name)
                if segment is None or segment.end <= start or segment.start > end:
                    continue
                shutil.copy(path, raw / path.name)
                bucket.put_object(
                    f"{PREFIX}{path.name[:16]}/{path.name}.gz",
                    gzip.compress(path.read_bytes(), 1),
                    datetime.now(UTC),
                )
        finally:
            server.stop()
        chown_tree(raw, None)
        segments = asyncio.run(archived_segments(bucket, PREFIX))
        mib = len(segments) * WAL_SEGMENT_SIZE / MIB
        print(f"{len(segments)} segments, {mib:.0f} MiB of WAL")
        tool = binaries.tool("pg_waldump")

        detector = Detector(threshold=1000)
        reported: list[float] = []
        began = time.monotonic()
        stats = asyncio.run(
            WalScanner(bucket, tool, parallel=args.parallel).scan(
                segments, detector, lambda _: reported.append(time.monotonic())
            )
        )
        finder = time.monotonic() - began
        gaps = [b - a for a, b in zip([began, *reported], reported, strict=False)]
        kinds = sorted({f.kind for f in detector.findings})

        first, last = segments[0].segment.name, segments[-1].segment.name
        bare = [tool, "--path", str(raw), first, last]
        timings = {}
        for name, command in (
            ("bare", bare),
            ("filtered", [*bare, *[part for r in RMGRS for part in ("--rmgr", r)]]),
        ):
            began = time.monotonic()
            subprocess.run(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
            )
            timings[name] = time.monotonic() - began
        print(f"finder (download, gunzip, decode x{args.parallel}, detect): {rate(finder, mib)}")
        print(f"pg_waldump alone, all records:                  {rate(timings['bare'], mib)}")
        print(f"pg_waldump alone, the finder's filters:          {rate(timings['filtered'], mib)}")
        print(
            f"  of which reading {stats.lines} output lines: {stats.read_seconds:.2f} s; "
            f"events found: {len(detector.findings)} ({', '.join(kinds)})"
        )
        # What a client streaming the scan sees: how often it hears of its progress.
        print(
            f"  progress reports: {len(reported)} for {len(segments)} segments; longest wait "
            f"between two: {max(gaps):.2f} s"
        )


if __name__ == "__main__":
    main()
