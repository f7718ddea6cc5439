"""Base backup and restore + replay + promote, ours against pgBackRest, interleaved.

    .venv/bin/python benchmarks/pgbackrest_anchor.py [--scale 10] [--repetitions 2]
        [--wal-seconds 15 45]

The issue's sizes: ``--scale 40 --wal-seconds 60 200`` (~0.6 GiB, ~0.3 and ~1 GiB of WAL).

Ours: the local engine through the API's use-cases (an addon on the pro plan, on-demand
backups, restores to an instant), the embedded S3 server. The anchor: pgBackRest 2.x on the
same server and data, ``full`` backups with ``--compress-type=lz4 --process-max=2``
(``--start-fast``), restores with ``--type=time`` and asynchronous ``archive-get``
prefetching, into a repository on local disk (pgBackRest speaks S3 only over TLS, which the
embedded server does not serve: the anchor skips HTTP, which favours it). pgBackRest's
backups do not wait for their WAL (``--no-archive-check``): the WAL our archiver stored is
pushed into its repository before it restores, untimed.

The untar + local-copy floor restores the same base backup as ours (its tar decompressed to
local disk beforehand, untimed) with GNU tar and replays from a local copy of the same WAL
(``cp``): what no tool fetching from a repository can beat. Rounds are interleaved (ours,
anchor, floor, ours, ...) so the noise of a shared machine hits all alike; min / median and
the ratio of medians are printed, and restore time as a
function of WAL volume (a line through the two volumes: seconds per GiB and fixed cost).
pgBackRest is installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import (
    ensure_pgbackrest,
    local_stack,
    plain_base_backup,
    plain_wal_copy,
    step,
    untar_floor,
    wait,
    wait_promoted,
)

from paas_pitr.context import Caller
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.walfetch import decompress
from paas_pitr.postgres.server import PostgresServer, chown_tree, make_traversable, pick_port

CALLER = Caller("bench")
APP = "bench-app"
SUFFIXES = {".gz": "gzip", ".snappy": "snappy", ".lz4": "lz4", ".bz2": "bzip2", "": None}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Anchor:
    """pgBackRest on the addon's server, as the PostgreSQL user."""

    def __init__(self, binary: str, work: Path, instance: Instance) -> None:
        self.binary = binary
        self.root = work / "pgbackrest"
        self.instance = instance
        self.user = instance.user
        for folder in ("repo", "spool", "log", "lock"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "pgbackrest.conf"
        server = instance.server
        self.conf.write_text(
            "[global]\n"
            f"repo1-path={self.root / 'repo'}\n"
            f"spool-path={self.root / 'spool'}\n"
            f"log-path={self.root / 'log'}\n"
            f"lock-path={self.root / 'lock'}\n"
            "repo1-retention-full=100\n"
            "compress-type=lz4\n"
            "process-max=2\n"
            "archive-async=y\n"
            "archive-get-queue-max=1GiB\n"
            "start-fast=y\n"
            "log-level-console=warn\n"
            "log-level-file=off\n"
            "[bench]\n"
            f"pg1-path={server.data_dir}\n"
            f"pg1-port={server.port}\n"
            f"pg1-socket-path={server.socket_dir}\n",
            encoding="utf-8",
        )
        chown_tree(self.root, self.user)

    def run(self, *args: str) -> None:
        result = subprocess.run(
            [self.binary, f"--config={self.conf}", "--stanza=bench", *args],
            capture_output=True,
            text=True,
            user=self.user.uid if self.user else None,
            group=self.user.gid if self.user else None,
            cwd=str(self.root),
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"pgbackrest {args[0]} failed: {result.stderr or result.stdout}")

    def push_wal(self, wal_root: Path, scratch: Path) -> None:
        """Every segment our archiver stored, into pgBackRest's repository (untimed)."""
        scratch.mkdir(exist_ok=True)
        chown_tree(scratch, self.user)
        for path in sorted(wal_root.rglob("*")):
            if not path.is_file() or ".history" in path.name:
                continue
            name, suffix = path.name, ""
            for known in SUFFIXES:
                if known and name.endswith(known):
                    name, suffix = name[: -len(known)], known
            if len(name) != 24 or (self.root / "pushed" / name).exists():
                continue
            target = scratch / name
            target.write_bytes(decompress(path.read_bytes(), SUFFIXES[suffix]))
            chown_tree(target, self.user)
            self.run("--archive-async=n", "archive-push", str(target))
            target.unlink()
            (self.root / "pushed").mkdir(exist_ok=True)
            (self.root / "pushed" / name).touch()

    def backup_size(self) -> int:
        backups = sorted((self.root / "repo" / "backup" / "bench").glob("*F"))
        return du(backups[-1]) if backups else 0


async def restore_anchor(anchor: Anchor, work: Path, target: datetime) -> float:
    instance = anchor.instance
    data = work / "anchor-restore" / "data"
    shutil.rmtree(data.parent, ignore_errors=True)
    data.parent.mkdir(parents=True)
    chown_tree(data.parent, instance.user)
    server = PostgresServer(
        binaries=instance.server.binaries,
        data_dir=data,
        port=pick_port(),
        password="x",
        user=instance.user,
        socket_dir=work / "anchor-restore" / "run",
        local_trust=True,
    )
    started = time.monotonic()
    data.mkdir(mode=0o700)
    chown_tree(data, instance.user)
    await asyncio.to_thread(
        anchor.run,
        f"--pg1-path={data}",
        "--type=time",
        f"--target={target.strftime('%Y-%m-%d %H:%M:%S.%f+00')}",
        "--target-action=promote",
        "restore",
    )
    server.write_conf({"archive_mode": "off", "port": str(server.port)})
    await asyncio.to_thread(server.start, wait=False)
    await wait_promoted(server)
    seconds = time.monotonic() - started
    await asyncio.to_thread(server.destroy)
    return seconds


def summary(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (40 ~ 0.6 GiB)")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument(
        "--wal-seconds",
        type=int,
        nargs=2,
        default=[15, 45],
        help="pgbench seconds before each of the two restore targets",
    )
    parser.add_argument(
        "--backups-only", action="store_true", help="time the base backups, no restores"
    )
    parser.add_argument(
        "--compression",
        choices=["gzip", "bzip2", "snappy", "lz4", "none"],
        help="our base backups' compression (default: the setting's default)",
    )
    args = parser.parse_args()
    binary = ensure_pgbackrest()

    work = Path(tempfile.mkdtemp(prefix="paas-pitr-anchor-"))
    work.chmod(0o755)
    make_traversable(work)
    engine, state = await local_stack(
        work, **({"base_backup_compression": args.compression} if args.compression else {})
    )
    rows: list[tuple[str, str, str, str]] = []
    restores: dict[str, list[tuple[float, float]]] = {"ours": [], "anchor": [], "floor": []}
    try:
        addon = await state.addons.create_addon_generic(CALLER, APP, plan="pro")
        addon_id = addon.addon_id

        async def ready() -> Any:
            view = await state.addons.view(await state.addons.get_cluster(CALLER, APP, addon_id))
            return view.ready and view

        view = await wait(ready, "the addon", interval=0.1)
        uri = view.connection["uri"]
        instance = engine.instances[addon_id]
        pgbench = instance.server.binaries.tool("pgbench")
        step(f"pgbench -i -s {args.scale}")
        await asyncio.to_thread(
            subprocess.run, [pgbench, "-i", "-s", str(args.scale), "-q", uri], check=True
        )
        anchor = Anchor(binary, work, instance)
        await asyncio.to_thread(anchor.run, "stanza-create")
        app_folder = engine.root / "s3" / "data" / engine.settings.bucket / CALLER.tenant / APP

        async def completed() -> list[Any]:
            listing = await state.backups.list_backups(CALLER, APP, addon_id, per_page=500)
            if any(b.status.value in ("pending", "running") for b in listing.items):
                return []
            return [b for b in listing.items if b.status.value == "completed"]

        await wait(completed, "the first backup", interval=0.5)
        # The addon's server folder (the only one until restores add theirs).
        (s3_server,) = [p.parent for p in app_folder.glob("*/base")]

        # Base backups.
        ours_backup: list[float] = []
        anchor_backup: list[float] = []
        for repetition in range(args.repetitions):
            count = len(await completed())
            step(f"base backup {repetition + 1}: ours")
            started = time.monotonic()
            await state.backups.create(CALLER, APP, addon_id)

            async def one_more(before: int = count) -> bool:
                return len(await completed()) > before

            await wait(one_more, "our backup", interval=0.1)
            ours_backup.append(time.monotonic() - started)
            step(f"base backup {repetition + 1}: pgBackRest")
            started = time.monotonic()
            await asyncio.to_thread(anchor.run, "--no-archive-check", "--type=full", "backup")
            anchor_backup.append(time.monotonic() - started)
        newest = sorted((s3_server / "base").iterdir())[-1]
        ours_size, anchor_size = du(newest), anchor.backup_size()
        rows.append(
            (
                "base backup (s)",
                summary(ours_backup),
                summary(anchor_backup),
                f"{statistics.median(ours_backup) / statistics.median(anchor_backup):.2f}x",
            )
        )
        rows.append(
            (
                "stored base backup (MiB)",
                f"{ours_size / 2**20:.0f}",
                f"{anchor_size / 2**20:.0f}",
                f"{ours_size / max(anchor_size, 1):.2f}x",
            )
        )

        # Restores at two WAL volumes, from the newest base backup.
        with instance.connect() as conn:
            start_lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert start_lsn is not None
        for seconds in [] if args.backups_only else args.wal_seconds:
            step(f"pgbench -T {seconds}")
            await asyncio.to_thread(
                subprocess.run,
                [pgbench, "-c", "2", "-j", "2", "-T", str(seconds), "-n", uri],
                check=True,
                capture_output=True,
            )
            target = datetime.now(UTC)
            with instance.connect() as conn:
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (start_lsn[0],)
                ).fetchone()
            volume = float(row[0]) / 2**30 if row else 0.0

            async def restorable(moment: datetime = target) -> bool:
                listing = await state.backups.list_backups(CALLER, APP, addon_id)
                return bool(listing.window.latest and listing.window.latest >= moment)

            await wait(restorable, "the target to be restorable", interval=0.5)
            step(f"{volume:.2f} GiB of WAL since the backup; pushing it to pgBackRest")
            await asyncio.to_thread(anchor.push_wal, s3_server / "wals", work / "push")
            step("plain copies of the base backup and the WAL for the untar floor")
            floor_tars = await asyncio.to_thread(plain_base_backup, newest, work / "floor-tar")
            wal_copy = await asyncio.to_thread(
                plain_wal_copy, s3_server / "wals", work / "floor-wal"
            )
            for repetition in range(args.repetitions):
                step(f"restore {volume:.2f} GiB, round {repetition + 1}: ours")
                started = time.monotonic()
                restore, _ = await state.restores.restore_addon_pitr(
                    CALLER, APP, addon_id, timestamp=target.isoformat()
                )

                async def restored(restore_id: str = restore.restore_id) -> Any:
                    view = await state.restores.get(CALLER, APP, addon_id, restore_id)
                    if view.status == "failed":
                        raise SystemExit(f"restore failed: {view.reason}")
                    return view.status == "ready"

                await wait(restored, "our restore", interval=0.05)
                restores["ours"].append((volume, time.monotonic() - started))
                await state.restores.delete(CALLER, APP, addon_id, restore.restore_id)
                step(f"restore {volume:.2f} GiB, round {repetition + 1}: pgBackRest")
                anchor_seconds = await restore_anchor(anchor, work, target)
                restores["anchor"].append((volume, anchor_seconds))
                step(f"restore {volume:.2f} GiB, round {repetition + 1}: untar floor")
                floor_seconds = await untar_floor(instance, floor_tars, wal_copy, work, target)
                restores["floor"].append((volume, floor_seconds))
            ours_now = [s for v, s in restores["ours"] if v == volume]
            anchor_now = [s for v, s in restores["anchor"] if v == volume]
            floor_now = [s for v, s in restores["floor"] if v == volume]
            rows.append(
                (
                    f"restore + replay {volume:.2f} GiB WAL + promote (s)",
                    summary(ours_now),
                    summary(anchor_now),
                    f"{statistics.median(ours_now) / statistics.median(anchor_now):.2f}x",
                )
            )
            rows.append(
                (
                    "  against the untar + local-copy floor (s)",
                    summary(ours_now),
                    summary(floor_now),
                    f"{statistics.median(ours_now) / statistics.median(floor_now):.2f}x",
                )
            )
        for kind in () if args.backups_only else ("ours", "anchor", "floor"):
            per_gib, fixed = fit(restores[kind])
            rows.append(
                (
                    f"  {kind}: restore s/GiB of WAL, fixed cost s",
                    f"{per_gib:.1f}",
                    f"{fixed:.1f}",
                    "",
                )
            )
    finally:
        await state.audit.stop()
        await engine.close()
        print()
        print(f"{'measure':<52} {'ours min/med':>14} {'pgBackRest':>14} {'ratio':>8}")
        for name, ours, theirs, ratio in rows:
            print(f"{name:<52} {ours:>14} {theirs:>14} {ratio:>8}")
        print("(min / median over the repetitions; ratio of medians, > 1: ours is slower)")
        shutil.rmtree(work, ignore_errors=True)


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Seconds per GiB and fixed seconds of the line through the medians at each volume."""
    volumes = sorted({v for v, _ in points})
    medians = [statistics.median([s for v, s in points if v == volume]) for volume in volumes]
    if len(volumes) < 2 or volumes[-1] == volumes[0]:
        return float("nan"), float("nan")
    slope = (medians[-1] - medians[0]) / (volumes[-1] - volumes[0])
    return slope, medians[0] - slope * volumes[0]


if __name__ == "__main__":
    os.environ.setdefault("PGCONNECT_TIMEOUT", "5")
    asyncio.run(main())
