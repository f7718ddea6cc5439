"""WAL archiving after a burst: drain rate and CPU per segment, ours against pgBackRest.

    .venv/bin/python benchmarks/wal_drain.py [--segments 24] [--repetitions 2] [--jobs 4]

One PostgreSQL server. Each round holds archiving (``archive_command`` fails), writes a
burst of WAL (``--segments`` 16 MiB segments of inserted rows), then points
``archive_command`` at the candidate and times until the last segment is archived:
- ours: the instance's WAL archiver (:mod:`paas_pitr.engines.local.walarchiver`, started at
  the beginning of the drain) into the embedded S3 server, the WAL compression we render
  (``--compression``, gzip by default);
- anchor: pgBackRest 2.x ``archive-push`` with ``archive-async=y`` and ``process-max``
  = ``--jobs``, into a repository on local disk (pgBackRest speaks S3 only over TLS, which
  the embedded S3 server does not serve: the anchor skips HTTP altogether, which favours it),
  ``compress-type`` = ``--anchor-compression`` (gz by default, as ours).

Rounds are interleaved (ours, anchor, ours, anchor...) so that the noise of a shared machine
hits both alike; min and median over the repetitions are printed with their ratio. CPU is
the CPU time of every process that archived (PostgreSQL's archiver and its children, our
archiver process, pgBackRest's asynchronous process), read from a cpuacct cgroup when this
runs as root on a cgroup v1 host (else "n/a"). pgBackRest is installed with apt-get when
missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import ensure_pgbackrest

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.archivers import ArchiverSupervisor
from paas_pitr.engines.local.barman import Barman
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import OsUser, chown_tree, make_traversable
from paas_pitr.s3 import ensure_bucket

BUCKET = "bench-wal"
CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")


class CpuMeter:
    """CPU seconds of the processes put in a cpuacct cgroup (and of their children)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        if os.geteuid() == 0 and CGROUP_ROOT.is_dir():
            path = CGROUP_ROOT / f"paas-pitr-bench-{uuid.uuid4().hex[:8]}"
            try:
                path.mkdir()
                self.path = path
            except OSError:
                self.path = None

    def add(self, pid: int) -> None:
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid))

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def release(self) -> None:
        if self.path is None:
            return
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.procs").write_text(pid)
        self.path.rmdir()


@dataclass
class Round:
    segments: int
    seconds: float
    cpu: float | None


@dataclass
class Results:
    rounds: dict[str, list[Round]] = field(
        default_factory=lambda: {"ours": [], "anchor": [], "before": []}
    )


def archiver_pid(instance: Instance) -> int:
    with instance.connect() as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'"
        ).fetchone()
    if row is None:
        raise SystemExit("no archiver process (archive_mode off?)")
    return int(row[0])


def set_archive_command(instance: Instance, command: str) -> None:
    quoted = command.replace("'", "''")
    with instance.connect() as conn:
        conn.execute(f"ALTER SYSTEM SET archive_command = '{quoted}'")
        conn.execute("SELECT pg_reload_conf()")


def burst(instance: Instance, segments: int) -> str:
    """Write at least ``segments`` segments of WAL; the name of the last complete one."""
    with instance.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS burst (id bigint, body text)")
        start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert start is not None
        while True:
            conn.execute(
                "INSERT INTO burst SELECT g, md5(g::text) || md5(random()::text) "
                "FROM generate_series(1, 50000) g"
            )
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (start[0],)
            ).fetchone()
            if row and float(row[0]) >= segments * 16 * 2**20:
                break
        conn.execute("TRUNCATE burst")
        switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert switched is not None
        return str(switched[0])


def pending(instance: Instance) -> int:
    status = instance.server.data_dir / "pg_wal" / "archive_status"
    return sum(1 for p in status.glob("*.ready"))


def drained(instance: Instance, last: str) -> bool:
    with instance.connect() as conn:
        row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
    return bool(row and row[0] and row[0] >= last)


def run_round(
    instance: Instance,
    segments: int,
    start: Callable[[], list[int]],
    command: str,
    stop: Callable[[], None],
) -> Round:
    set_archive_command(instance, "/bin/false")
    last = burst(instance, segments)
    ready = pending(instance)
    meter = CpuMeter()
    try:
        meter.add(archiver_pid(instance))
        for pid in start():
            meter.add(pid)
        cpu_before = meter.seconds()
        started = time.monotonic()
        set_archive_command(instance, command)
        while not drained(instance, last):
            time.sleep(0.05)
        seconds = time.monotonic() - started
        cpu_after = meter.seconds()
    finally:
        stop()
        meter.release()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Round(ready, seconds, cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=24, help="16 MiB segments per burst")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=4, help="parallel uploads, both tools")
    parser.add_argument("--compression", default="gzip", help="our WAL compression")
    parser.add_argument("--anchor-compression", default="gz", help="pgBackRest compress-type")
    parser.add_argument(
        "--before",
        action="store_true",
        help="also time the previous path: one barman-cloud-wal-archive process per segment",
    )
    args = parser.parse_args()

    pgbackrest = ensure_pgbackrest()
    work = Path(tempfile.mkdtemp(prefix="paas-pitr-wal-bench-"))
    work.chmod(0o755)
    make_traversable(work)
    make_traversable(Path(sys.executable).parent)
    user = OsUser.for_servers()
    s3 = EmbeddedS3(work / "s3")
    s3.start()
    ensure_bucket(s3.url, s3.credentials, BUCKET)
    barman = Barman(user)
    (work / "run").mkdir(mode=0o711)
    instance = Instance("bench", work / "instance", work / "run", find_binaries(None), user, barman)
    config = ArchiveConfig(
        destination=f"s3://{BUCKET}/wal",
        server_name="bench",
        endpoint_url=s3.url,
        secret_refs={},
        wal_compression=args.compression or None,
        wal_max_parallel=args.jobs,
    )
    archivers = ArchiverSupervisor(barman, user)
    results = Results()
    try:
        instance.prepare_root()
        instance.server.initdb()
        instance.write_archive_script(config, s3.credentials, None)
        instance.write_config(
            instance.server_settings({"max_wal_size": "4GB", "checkpoint_timeout": "30min"})
        )
        instance.server.start()

        pgbr = work / "pgbackrest"
        for folder in ("repo", "spool", "log", "lock"):
            (pgbr / folder).mkdir(parents=True)
        conf = pgbr / "pgbackrest.conf"
        conf.write_text(
            "[global]\n"
            f"repo1-path={pgbr / 'repo'}\n"
            f"spool-path={pgbr / 'spool'}\n"
            f"log-path={pgbr / 'log'}\n"
            f"lock-path={pgbr / 'lock'}\n"
            "archive-async=y\n"
            f"process-max={args.jobs}\n"
            f"compress-type={args.anchor_compression}\n"
            "log-level-console=warn\n"
            "log-level-file=warn\n"
            "[bench]\n"
            f"pg1-path={instance.server.data_dir}\n"
            f"pg1-port={instance.server.port}\n"
            f"pg1-socket-path={instance.server.socket_dir}\n",
            encoding="utf-8",
        )
        chown_tree(pgbr, user)
        subprocess.run(
            [pgbackrest, f"--config={conf}", "--stanza=bench", "stanza-create"],
            check=True,
            capture_output=True,
            user=user.uid if user else None,
            group=user.gid if user else None,
            cwd=str(pgbr),
        )
        anchor_command = f"{pgbackrest} --config={conf} --stanza=bench archive-push %p"
        ours_command = f"'{instance.scripts / 'archive.sh'}' \"%p\""

        def start_ours() -> list[int]:
            archivers.ensure(
                instance.name,
                config,
                s3.credentials,
                pgdata=instance.server.data_dir,
                socket_path=instance.archiver_socket,
                log_path=instance.scripts / "walarchiver.log",
            )
            pid = archivers.pid(instance.name)
            # Started once and kept in production: its start-up is not part of a drain.
            deadline = time.monotonic() + 30
            while not instance.archiver_socket.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return [pid] if pid else []

        def stop_ours() -> None:
            archivers.stop(instance.name)

        for repetition in range(args.repetitions):
            for kind in ("ours", "anchor", *(["before"] if args.before else [])):
                if kind == "ours":
                    measured = run_round(
                        instance, args.segments, start_ours, ours_command, stop_ours
                    )
                elif kind == "before":
                    # No archiver running: the script's fallback, barman-cloud-wal-archive.
                    measured = run_round(
                        instance, args.segments, lambda: [], ours_command, lambda: None
                    )
                else:
                    measured = run_round(
                        instance, args.segments, lambda: [], anchor_command, lambda: None
                    )
                results.rounds[kind].append(measured)
                cpu = f"{measured.cpu:.1f} s CPU" if measured.cpu is not None else "CPU n/a"
                print(
                    f"round {repetition + 1} {kind:<6}: {measured.segments} segments in "
                    f"{measured.seconds:.1f} s ({measured.segments / measured.seconds:.1f}/s), "
                    f"{cpu}",
                    flush=True,
                )
    finally:
        archivers.stop_all()
        instance.destroy()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results)


def _summary(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def report(results: Results) -> None:
    ours, anchor = results.rounds["ours"], results.rounds["anchor"]
    if not ours or not anchor:
        return
    print()
    print(f"{'measure':<40} {'ours min/med':>16} {'pgBackRest min/med':>20} {'ratio (med)':>12}")
    rate_o = _summary([r.segments / r.seconds for r in ours])
    rate_a = _summary([r.segments / r.seconds for r in anchor])
    print(
        f"{'WAL drain after a burst (segments/s)':<40} "
        f"{rate_o[0]:>7.1f} / {rate_o[1]:<6.1f} {rate_a[0]:>9.1f} / {rate_a[1]:<8.1f} "
        f"{rate_o[1] / rate_a[1]:>10.2f}x"
    )
    if all(r.cpu is not None for r in ours + anchor):
        cpu_o = _summary([1000 * (r.cpu or 0) / r.segments for r in ours])
        cpu_a = _summary([1000 * (r.cpu or 0) / r.segments for r in anchor])
        print(
            f"{'CPU per 16 MiB segment (ms)':<40} "
            f"{cpu_o[0]:>7.0f} / {cpu_o[1]:<6.0f} {cpu_a[0]:>9.0f} / {cpu_a[1]:<8.0f} "
            f"{cpu_o[1] / cpu_a[1]:>10.2f}x"
        )
    before = results.rounds["before"]
    if before:
        rate_b = _summary([r.segments / r.seconds for r in before])
        print(
            f"{'  previous path (process per segment)':<40} "
            f"{rate_b[0]:>7.1f} / {rate_b[1]:<6.1f} {'':>20} {rate_o[1] / rate_b[1]:>10.2f}x"
        )
    print("(ratio > 1: ours drains faster; for CPU, ratio > 1: ours uses more)")


if __name__ == "__main__":
    main()
