"""Faults survived and data or events lost, with real processes: the reliability table.

    .venv/bin/python benchmarks/reliability.py [--s3-kills 5] [--pg-kills 3] [--events 30]
                                               [--no-crash-points]

One ``paas-pitr serve`` process (local engine, embedded S3 server, a PostgreSQL of its own
for the audit trail) and one pro addon; then, in turn:

- the embedded S3 server is killed (SIGKILL) ``--s3-kills`` times while a writer commits
  rows; the addon is restored to an instant after the last acknowledged commit: rows lost
  are acknowledged rows missing from the restore;
- the addon's PostgreSQL is killed ``--pg-kills`` times during acknowledged commits: rows
  lost are acknowledged rows missing once it is back (the engine restarts it);
- the audit database is stopped, ``--events`` audited requests are made, the service is
  killed with -9, the database started, the service started: events lost are the requests'
  events missing from the audit trail;
- the service kills itself at each crash point (``PAAS_PITR_TEST_CRASH_AT``) of a backup
  and of a restore and is started again: end states correct (backup completed, adopted or
  cleanly failed; restore ready with exact rows or failed, audited exactly once).

Run from the repository root (it uses the test suite's service harness).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.local.service import ServiceProcess
from tests.integration.local.test_kill_points import (
    APP,
    BACKUP_OUTCOMES,
    RESTORE_CHAIN,
    Stage,
    audited,
    restore_ids,
)

from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import (
    OsUser,
    PostgresServer,
    make_traversable,
    pick_port,
)
from paas_pitr.timestamps import format_api_time


class Writer:
    """Commits one row at a time (autocommit), reconnecting after failures; remembers
    which rows were acknowledged (the COMMIT returned)."""

    def __init__(self, uri: str, table: str) -> None:
        self.uri = uri
        self.table = table
        self.acked: list[int] = []
        self.failures = 0
        self.last_ack_at: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (n int PRIMARY KEY)")

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.uri, autocommit=True, connect_timeout=3) as conn:
                    while not self._stop.is_set():
                        conn.execute(f"INSERT INTO {self.table} VALUES (%s)", (n + 1,))
                        n += 1
                        self.acked.append(n)
                        self.last_ack_at = datetime.now(UTC)
                        time.sleep(0.005)
            except psycopg.Error:
                self.failures += 1
                # The row whose COMMIT failed may or may not be there: not counted, and
                # the next row takes the next number.
                n += 1
                time.sleep(0.2)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def rows_of(uri: str, table: str) -> set[int]:
    with psycopg.connect(uri, connect_timeout=5) as conn:
        return {r[0] for r in conn.execute(f"SELECT n FROM {table}")}


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            found = check()
            if found:
                return found
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


def s3_kills(stage: Stage, kills: int) -> tuple[int, int, int]:
    """(kills, rows lost, rows acknowledged)."""
    service = stage.service
    writer = Writer(stage.uri, "s3_faults")
    writer.start()
    for _ in range(kills):
        time.sleep(3)
        pid = service.s3_server_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait(lambda p=pid: service.s3_server_pid() not in (None, p), 60, "the S3 server back")
    time.sleep(3)
    writer.stop()
    assert writer.last_ack_at is not None
    time.sleep(0.3)
    with service.superuser(stage.addon_id) as conn:
        conn.execute("SELECT pg_switch_wal()")
    target = format_api_time(datetime.now(UTC))
    restore = service.restore_when_restorable(APP, stage.addon_id, target)
    present = rows_of(restore["connection"]["uri"], "s3_faults")
    return kills, len(set(writer.acked) - present), len(writer.acked)


def pg_kills(stage: Stage, kills: int) -> tuple[int, int, int]:
    service = stage.service
    writer = Writer(stage.uri, "pg_faults")
    writer.start()
    data = service.root / "instances" / stage.addon_id / "data"
    for _ in range(kills):
        time.sleep(3)
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGKILL)
        wait(
            lambda p=pid: (
                (data / "postmaster.pid").exists()
                and int((data / "postmaster.pid").read_text().split("\n", 1)[0]) != p
            ),
            120,
            "the addon's PostgreSQL back",
        )
        count = len(writer.acked)

        def resumed(count: int = count) -> bool:
            return len(writer.acked) > count + 10

        wait(resumed, 60, "commits again")
    writer.stop()
    present = rows_of(stage.uri, "pg_faults")
    return kills, len(set(writer.acked) - present), len(writer.acked)


def audit_outage(stage: Stage, audit_pg: PostgresServer, events: int) -> tuple[int, int]:
    """(events lost, events made) across an audit database outage and a kill -9."""
    service = stage.service
    audit_pg.stop(mode="immediate")
    ids = set()
    for _ in range(events):
        # A plan change to the same plan: audited, and no work queued behind it.
        request_id = uuid.uuid4().hex
        response = service.client.patch(
            f"/v1/apps/{APP}/addons/{stage.addon_id}",
            json={"plan": "pro"},
            headers={"X-Request-ID": request_id},
        )
        assert response.status_code == 200, response.text
        ids.add(response.headers.get("X-Request-ID", request_id))
    service.kill()
    audit_pg.start()
    service.start()

    def delivered() -> set[str]:
        return {row[3] for row in plan_changes(service.dsn)}

    with contextlib.suppress(SystemExit):
        wait(lambda: ids <= delivered(), 120, "the events delivered")
    return len(ids - delivered()), len(ids)


def plan_changes(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, target_id, details_jsonb, request_id FROM paas_audit_events "
            "WHERE action = 'addon.plan_change'"
        ).fetchall()


def crash_points(stage: Stage) -> tuple[int, int, list[str]]:
    """(end states correct, crash points, what was wrong)."""
    service = stage.service
    wrong: list[str] = []
    for point, expected in BACKUP_OUTCOMES.items():
        service.restart(crash_at=point)
        name = service.client.post(f"/v1/apps/{APP}/addons/{stage.addon_id}/backups").json()[
            "data"
        ]["name"]
        stage.crash(point)
        stage.restart()
        backup = wait(
            lambda n=name: (b := stage.backups()[n])["status"] not in ("pending", "running") and b,
            300,
            f"backup {name}",
        )
        if backup["status"] != expected:
            wrong.append(f"{point}: backup {backup['status']}, expected {expected}")
    # One restore carried through every transition of a successful restore.
    before = restore_ids(stage)
    service.restart(crash_at=RESTORE_CHAIN[0])
    target, rows = stage.mark()
    service.wait_restorable(APP, stage.addon_id, format_api_time(target))
    with contextlib.suppress(Exception):
        service.restore(APP, stage.addon_id, format_api_time(target))
    stage.crash(RESTORE_CHAIN[0])
    for point in RESTORE_CHAIN[1:]:
        stage.restart(crash_at=point)
        stage.crash(point)
    stage.restart()
    (restore_id,) = restore_ids(stage) - before
    restore = service.wait_restore(APP, stage.addon_id, restore_id)
    ok = restore["status"] == "ready"
    if ok:
        with psycopg.connect(restore["connection"]["uri"]) as conn:
            ok = [r[0] for r in conn.execute("SELECT n FROM marks ORDER BY n")] == rows
        with contextlib.suppress(SystemExit):
            wait(lambda: audited(stage, "addon.restore_ready", restore_id) == 1, 30, "audit")
        ok = ok and audited(stage, "addon.restore_ready", restore_id) == 1
        ok = ok and audited(stage, "addon.restore_pitr", restore_id) == 1
    correct = len(BACKUP_OUTCOMES) - len(wrong) + (len(RESTORE_CHAIN) if ok else 0)
    if not ok:
        wrong.append(f"restore chain: {restore['status']}")
    return correct, len(BACKUP_OUTCOMES) + len(RESTORE_CHAIN), wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s3-kills", type=int, default=5)
    parser.add_argument("--pg-kills", type=int, default=3)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--no-crash-points", action="store_true")
    args = parser.parse_args()
    # Stopped with SIGTERM (a timeout): clean up as on any other exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="paas-pitr-reliability-"))
    workdir.chmod(0o755)
    make_traversable(workdir)
    make_traversable(Path(sys.executable).parent)
    audit_pg = PostgresServer(
        binaries=find_binaries(None),
        data_dir=workdir / "audit" / "data",
        port=pick_port(),
        password=uuid.uuid4().hex,
        user=OsUser.for_servers(os.environ.get("PAAS_PITR_PG_OS_USER", "postgres")),
    )
    audit_pg.initdb()
    audit_pg.start()
    service = ServiceProcess(workdir / "state", audit_pg.dsn(), log_dir=workdir / "logs")
    table: list[tuple[str, str, str]] = []
    started = time.monotonic()
    try:
        service.start()
        addon = service.create_addon("pro")
        stage = Stage(service, addon["addon_id"], addon["connection"]["uri"])
        wait(
            lambda: any(
                b["status"] == "completed" for b in service.backups(APP, stage.addon_id)["items"]
            ),
            300,
            "the first backup",
        )
        service.wait_current_range(APP, stage.addon_id)
        kills, lost, acked = s3_kills(stage, args.s3_kills)
        table.append(("embedded S3 server killed while writing", f"{kills}", f"{lost} of {acked}"))
        kills, lost, acked = pg_kills(stage, args.pg_kills)
        table.append(("addon PostgreSQL killed during commits", f"{kills}", f"{lost} of {acked}"))
        lost, made = audit_outage(stage, audit_pg, args.events)
        table.append(("audit DB down, then service kill -9", "1 + 1", f"{lost} of {made}"))
        if not args.no_crash_points:
            correct, points, wrong = crash_points(stage)
            table.append(
                ("service kill -9 at each crash point", f"{points}", f"{correct} of {points} right")
            )
            for problem in wrong:
                print("wrong end state:", problem)
    finally:
        service.terminate()
        audit_pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n| fault | injected | lost (or end states right) |  ({time.monotonic() - started:.0f} s)"
    )
    print("| --- | --- | --- |")
    for fault, count, lost_text in table:
        print(f"| {fault} | {count} | {lost_text} |")


if __name__ == "__main__":
    main()
