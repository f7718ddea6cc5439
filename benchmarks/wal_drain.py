"""WAL archiving after a burst: drain rate and CPU per segment, ours against pgBackRest.

    .venv/bin/python benchmarks/wal_drain.py [--segments 24] [--repetitions 2] [--jobs 4]

One PostgreSQL server. Each round holds archiving (``archive_command`` fails), writes a
burst of WAL (``--segments`` 16 MiB segments of inserted rows), then points
``archive_command`` at the candidate and times until the last segment is archived:
- ours: the instance's WAL archiver (:mod:`paas_pitr.engines.local.walarchiver`, started at
  the beginning of the drain) writing into the folder the embedded S3 server serves, as the
  local engine does for the embedded server's archives, with the WAL compression we render
  (``--compression``, snappy by default);
- ours over HTTP (``--http``): the same archiver PUTting to the embedded S3 server on
  loopback, what it does for any other S3 endpoint;
- pgBackRest to local disk: pgBackRest 2.x ``archive-push`` with ``archive-async=y`` and
  ``process-max`` = ``--jobs`` into a repository on local disk (no HTTP, no S3 server: this
  favours it), ``compress-type`` = ``--anchor-compression`` (lz4 by default);
- pgBackRest to S3: the same, into a second embedded S3 server (the same ``rclone serve s3``
  and flags) serving HTTPS with a self-signed certificate made by ``openssl`` at run time
  (pgBackRest speaks S3 only over TLS; it does not verify the certificate here).

Rounds are interleaved (ours, anchor, anchor-s3, ours...) so that the noise of a shared
machine hits every side alike; min and median over the repetitions are printed with the
ratios of medians. CPU is read from cpuacct cgroups (when this runs as root on a cgroup v1
host, else "n/a"), per group of processes: ``archive_command`` = PostgreSQL's archiver
process and everything it starts (our script and its client; pgBackRest's archive-push and
its asynchronous process), ``archiver`` = our WAL archiver process, ``s3`` = the S3 server
the side writes to. Each side's CPU per segment is the sum of the groups it uses.
pgBackRest is installed with apt-get when missing.
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

from harness import ensure_pgbackrest, pgbackrest_s3_repository, self_signed_certificate

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.archivers import ArchiverSupervisor
from paas_pitr.engines.local.barman import Barman
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import OsUser, chown_tree, make_traversable
from paas_pitr.s3 import ensure_bucket

BUCKET = "bench-wal"
ANCHOR_BUCKET = "bench-pgbackrest"
CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")
GROUPS = ("archive_command", "archiver", "s3")
SIDES = ("ours", "anchor", "anchor-s3")
TITLES = {
    "ours": "ours",
    "ours-http": "ours over HTTP",
    "anchor": "pgBackRest, local disk",
    "anchor-s3": "pgBackRest, same S3 server (TLS)",
    "before": "previous path (process per segment)",
}


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
    cpu: dict[str, float] | None
    """CPU seconds per group of processes (see the module doc), None when not measurable."""

    @property
    def rate(self) -> float:
        return self.segments / self.seconds

    def cpu_ms_per_segment(self) -> float | None:
        return None if self.cpu is None else 1000 * sum(self.cpu.values()) / self.segments


@dataclass
class Side:
    """One way of archiving: its archive_command, and what runs beside PostgreSQL for it."""

    command: str
    start: Callable[[], dict[str, list[int]]] = lambda: {}
    """Start what the side needs; the pids to count, per group."""
    stop: Callable[[], None] = lambda: None


@dataclass
class Results:
    rounds: dict[str, list[Round]] = field(default_factory=dict)


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


def run_round(instance: Instance, segments: int, side: Side) -> Round:
    set_archive_command(instance, "/bin/false")
    last = burst(instance, segments)
    ready = pending(instance)
    meters = {group: CpuMeter() for group in GROUPS}
    try:
        meters["archive_command"].add(archiver_pid(instance))
        for group, pids in side.start().items():
            for pid in pids:
                meters[group].add(pid)
        before = {group: meter.seconds() for group, meter in meters.items()}
        started = time.monotonic()
        set_archive_command(instance, side.command)
        while not drained(instance, last):
            time.sleep(0.05)
        seconds = time.monotonic() - started
        after = {group: meter.seconds() for group, meter in meters.items()}
    finally:
        side.stop()
        for meter in meters.values():
            meter.release()
    cpu: dict[str, float] | None = {}
    for group in GROUPS:
        start_s, end_s = before[group], after[group]
        if start_s is None or end_s is None:
            cpu = None
            break
        assert cpu is not None
        cpu[group] = end_s - start_s
    return Round(ready, seconds, cpu)


def pgbackrest_config(
    folder: Path, instance: Instance, jobs: int, compression: str, repository: str
) -> Path:
    for sub in ("repo", "spool", "log", "lock"):
        (folder / sub).mkdir(parents=True)
    conf = folder / "pgbackrest.conf"
    conf.write_text(
        "[global]\n"
        f"{repository}"
        f"spool-path={folder / 'spool'}\n"
        f"log-path={folder / 'log'}\n"
        f"lock-path={folder / 'lock'}\n"
        "archive-async=y\n"
        f"process-max={jobs}\n"
        f"compress-type={compression}\n"
        "log-level-console=warn\n"
        "log-level-file=warn\n"
        "[bench]\n"
        f"pg1-path={instance.server.data_dir}\n"
        f"pg1-port={instance.server.port}\n"
        f"pg1-socket-path={instance.server.socket_dir}\n",
        encoding="utf-8",
    )
    conf.chmod(0o600)
    return conf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=24, help="16 MiB segments per burst")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=4, help="parallel uploads, every tool")
    parser.add_argument("--compression", default="snappy", help="our WAL compression")
    parser.add_argument("--anchor-compression", default="lz4", help="pgBackRest compress-type")
    parser.add_argument(
        "--before",
        action="store_true",
        help="also time the previous path: one barman-cloud-wal-archive process per segment",
    )
    parser.add_argument(
        "--http", action="store_true", help="also time our archiver over HTTP to the S3 server"
    )
    args = parser.parse_args()

    pgbackrest = ensure_pgbackrest()
    work = Path(tempfile.mkdtemp(prefix="paas-pitr-wal-bench-"))
    work.chmod(0o755)
    make_traversable(work)
    make_traversable(Path(sys.executable).parent)
    user = OsUser.for_servers()
    s3 = EmbeddedS3(work / "s3", user=OsUser.for_servers())
    s3.start()
    ensure_bucket(s3.url, s3.credentials, BUCKET)
    tls_s3 = EmbeddedS3(work / "s3-tls", tls=self_signed_certificate(work / "tls"))
    tls_s3.start()
    # The bucket is a folder of the served directory (boto3 would refuse the certificate).
    (tls_s3.data / ANCHOR_BUCKET).mkdir(mode=0o700)
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

        commands: dict[str, str] = {}
        for side, repository in (
            ("anchor", f"repo1-path={work / 'anchor' / 'repo'}\n"),
            ("anchor-s3", pgbackrest_s3_repository(tls_s3.url, tls_s3.credentials, ANCHOR_BUCKET)),
        ):
            folder = work / side
            conf = pgbackrest_config(
                folder, instance, args.jobs, args.anchor_compression, repository
            )
            chown_tree(folder, user)
            created = subprocess.run(
                [pgbackrest, f"--config={conf}", "--stanza=bench", "stanza-create"],
                capture_output=True,
                text=True,
                user=user.uid if user else None,
                group=user.gid if user else None,
                cwd=str(folder),
                check=False,
            )
            if created.returncode != 0:
                raise SystemExit(
                    f"pgbackrest stanza-create ({side}): {created.stdout}{created.stderr}"
                )
            commands[side] = f"{pgbackrest} --config={conf} --stanza=bench archive-push %p"
        ours_command = f"'{instance.scripts / 'archive.sh'}' \"%p\""

        served = s3.folder_of(config.destination, s3.credentials)

        def start_ours(*, over_http: bool = False) -> dict[str, list[int]]:
            archivers.ensure(
                instance.name,
                config,
                s3.credentials,
                pgdata=instance.server.data_dir,
                socket_path=instance.archiver_socket,
                log_path=instance.scripts / "walarchiver.log",
                served_folder=(
                    None if over_http or served is None else served.child(config.server_name)
                ),
            )
            pid = archivers.pid(instance.name)
            # Started once and kept in production: its start-up is not part of a drain.
            deadline = time.monotonic() + 30
            while not instance.archiver_socket.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return {"archiver": [pid] if pid else [], "s3": [s3.pid] if s3.pid else []}

        sides = {
            "ours": Side(ours_command, start_ours, lambda: archivers.stop(instance.name)),
            "ours-http": Side(
                ours_command,
                lambda: start_ours(over_http=True),
                lambda: archivers.stop(instance.name),
            ),
            "anchor": Side(commands["anchor"]),
            "anchor-s3": Side(
                commands["anchor-s3"], lambda: {"s3": [tls_s3.pid] if tls_s3.pid else []}
            ),
            # No archiver running: the script's fallback, barman-cloud-wal-archive.
            "before": Side(ours_command, lambda: {"s3": [s3.pid] if s3.pid else []}),
        }
        order = [
            *SIDES,
            *(["ours-http"] if args.http else []),
            *(["before"] if args.before else []),
        ]
        for repetition in range(args.repetitions):
            for kind in order:
                measured = run_round(instance, args.segments, sides[kind])
                results.rounds.setdefault(kind, []).append(measured)
                cpu = (
                    "CPU n/a"
                    if measured.cpu is None
                    else " + ".join(f"{g} {s:.2f}" for g, s in measured.cpu.items()) + " s CPU"
                )
                print(
                    f"round {repetition + 1} {kind:<9}: {measured.segments} segments in "
                    f"{measured.seconds:.1f} s ({measured.rate:.1f}/s), {cpu}",
                    flush=True,
                )
    finally:
        archivers.stop_all()
        instance.destroy()
        s3.stop()
        tls_s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results)


def _summary(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def _group_ms(rounds: list[Round], group: str) -> float:
    """Median CPU milliseconds per segment of one group of processes."""
    return statistics.median(1000 * (r.cpu or {})[group] / r.segments for r in rounds)


def report(results: Results) -> None:
    ours = results.rounds.get("ours", [])
    if not ours:
        return
    print()
    print(f"{'side':<38} {'seg/s min/med':>14} {'CPU ms/seg min/med':>19} {'CPU by group (med)'}")
    for kind, rounds in results.rounds.items():
        rate = _summary([r.rate for r in rounds])
        line = f"{TITLES[kind]:<38} {rate[0]:>6.1f} / {rate[1]:<5.1f}"
        cpus = [r.cpu_ms_per_segment() for r in rounds]
        if all(c is not None for c in cpus):
            cpu = _summary([c or 0.0 for c in cpus])
            groups = ", ".join(f"{group} {_group_ms(rounds, group):.0f}" for group in GROUPS)
            line += f" {cpu[0]:>9.0f} / {cpu[1]:<7.0f} {groups}"
        print(line)
    print()
    rate_o = statistics.median(r.rate for r in ours)
    cpu_o = [r.cpu_ms_per_segment() for r in ours]
    for kind in ("anchor", "anchor-s3", "ours-http", "before"):
        anchor = results.rounds.get(kind, [])
        if not anchor:
            continue
        rate_a = statistics.median(r.rate for r in anchor)
        line = f"ours / {TITLES[kind]:<38}: drain rate {rate_o / rate_a:.2f}x"
        cpu_a = [r.cpu_ms_per_segment() for r in anchor]
        if all(c is not None for c in cpu_o + cpu_a):
            ratio = statistics.median(c or 0.0 for c in cpu_o) / statistics.median(
                c or 0.0 for c in cpu_a
            )
            line += f", CPU per segment {ratio:.2f}x"
        print(line)
    print("(drain rate > 1: ours drains faster; CPU > 1: ours uses more)")


if __name__ == "__main__":
    main()
