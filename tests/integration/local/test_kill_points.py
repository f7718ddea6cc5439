"""The service is killed (SIGKILL, from itself: a crash point armed with
PAAS_PITR_TEST_CRASH_AT) at each state transition of a backup and of a restore, started
again, and ends in the right state: a backup completed, adopted or cleanly failed, never
left running; a restore ready (its rows exact) or failed, its request and outcome audited
exactly once. No helper process (the S3 server, barman-cloud) outlives the killed service.

One service (a real ``paas-pitr serve`` process) and one addon serve every case, in order.
The restore's points are one chain: armed at the next point, each start must carry the
same restore past the point the previous run died at, so one restore proves each
transition's recovery (the last run, unarmed, must finish it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from paas_pitr.postgres.server import PostgresServer
from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import audit_rows
from tests.integration.local.conftest import wait_for
from tests.integration.local.service import (
    ServiceProcess,
    process_alive,
    sessions_alive,
)
from tests.integration.local.test_pitr import instant_between_commits

APP = "app-1"


class Stage:
    """The shared service and addon."""

    def __init__(self, service: ServiceProcess, addon_id: str, uri: str) -> None:
        self.service = service
        self.addon_id = addon_id
        self.uri = uri
        self.marks = 0

    def backups(self) -> dict[str, dict[str, Any]]:
        listing = self.service.backups(APP, self.addon_id)
        return {b["name"]: b for b in listing["items"]}

    def crash(self, point: str) -> None:
        """Wait for the armed service to die at ``point``; then no helper of it may live:
        the S3 server dies with it; barman-cloud's sessions are reaped by the next start
        (checked by :meth:`restart_clean`)."""
        s3_pid = self.service.s3_server_pid()
        self.service.wait_crash(point)
        assert s3_pid is not None
        wait_for(lambda: not process_alive(s3_pid), timeout=10, what="the S3 server to die with it")

    def restart(self, crash_at: str | None = None) -> None:
        """Start after a crash; every helper session the dead run recorded is gone."""
        sessions = self.service.recorded_sessions()
        self.service.start(crash_at)
        assert sessions_alive(sessions) == [], sessions

    def mark(self) -> tuple[datetime, list[int]]:
        """Commit a new row, then an instant T; a later row comes after T. The rows at T."""
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS marks (n int PRIMARY KEY)")
            self.marks += 1
            conn.execute("INSERT INTO marks VALUES (%s)", (self.marks,))
            at = instant_between_commits()
            conn.execute("INSERT INTO marks VALUES (%s)", (-self.marks,))
            rows = [r[0] for r in conn.execute("SELECT n FROM marks WHERE n > 0 ORDER BY n")]
        with self.service.superuser(self.addon_id) as conn:
            conn.execute("SELECT pg_switch_wal()")
        return at, rows


@pytest.fixture(scope="module")
def stage(workdir: Path, pg: PostgresServer) -> Iterator[Stage]:
    pg.start()
    name = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    run = workdir / f"kill-{uuid.uuid4().hex[:8]}"
    service = ServiceProcess(run / "state", pg.dsn(name), log_dir=run / "logs")
    service.start()
    try:
        addon = service.create_addon("pro")
        addon_id = addon["addon_id"]
        wait_for(
            lambda: any(
                b["status"] == "completed" for b in service.backups(APP, addon_id)["items"]
            ),
            what="the first backup",
        )
        service.wait_current_range(APP, addon_id)
        yield Stage(service, addon_id, addon["connection"]["uri"])
    finally:
        # Gracefully: the servers are independent of a killed service (as pods are).
        service.terminate()


# What each backup transition must end as once the service is back.
BACKUP_OUTCOMES = {
    "backup.requested": "completed",  # nothing ran: it runs now
    "backup.barman_started": "failed",  # barman-cloud-backup died with the service
    "backup.barman_finished": "completed",  # DONE in the catalog: adopted
    "backup.status_written": "completed",
    "backup.retention": "completed",  # and the retention is finished at start
}


@pytest.mark.parametrize("point", list(BACKUP_OUTCOMES))
def test_a_backup_killed_at_each_transition(stage: Stage, point: str) -> None:
    service = stage.service
    before = set(stage.backups())
    service.restart(crash_at=point)
    response = service.client.post(f"/v1/apps/{APP}/addons/{stage.addon_id}/backups")
    assert response.status_code == 202, response.text
    name = response.json()["data"]["name"]
    stage.crash(point)
    if point == "backup.barman_started":
        sessions = service.recorded_sessions()
        assert sessions, "barman-cloud-backup's session was recorded"
        # The helper itself died with the service (PR_SET_PDEATHSIG); what it forked is
        # reaped by the next start (checked by Stage.restart).
        wait_for(
            lambda: not any(process_alive(s) for s in sessions),
            timeout=10,
            what="barman-cloud-backup to die with the service",
        )
    stage.restart()

    def settled() -> dict[str, Any] | None:
        backup = stage.backups().get(name)
        assert backup is not None, name
        return backup if backup["status"] not in ("pending", "running") else None

    backup = wait_for(settled, what=f"backup {name} to settle")
    assert backup["status"] == BACKUP_OUTCOMES[point], f"{backup}\n{service.log_tail()}"
    if backup["status"] == "failed":
        assert "interrupted by a restart" in str(backup["error"]), backup
    else:
        assert backup["backup_id"] and backup["end_wal"], backup
    # No other backup was made or lost on the way; the retention, if interrupted, finished.
    assert set(stage.backups()) - before == {name}
    wait_for(
        lambda: not list((service.root / "intents").glob("retention-*")),
        timeout=60,
        what="the interrupted retention to finish",
    )


RESTORE_CHAIN = [
    "restore.cluster_written",
    "restore.server_prepared",
    "restore.recovery_started",
    "restore.promoted",
    "restore.status_written",
]


def restore_ids(stage: Stage) -> set[str]:
    response = stage.service.client.get(f"/v1/apps/{APP}/addons/{stage.addon_id}/restores")
    assert response.status_code == 200, response.text
    return {r["restore_id"] for r in response.json()["data"]}


def audited(stage: Stage, action: str, restore_id: str) -> int:
    return sum(
        1 for row in audit_rows(stage.service.dsn, action) if row[2]["restore_id"] == restore_id
    )


def test_a_restore_killed_at_each_transition(stage: Stage) -> None:
    service = stage.service
    before = restore_ids(stage)
    service.restart(crash_at=RESTORE_CHAIN[0])
    target, rows = stage.mark()
    service.wait_restorable(APP, stage.addon_id, format_api_time(target))
    # The service dies before it answers: the request fails, the Cluster is stored.
    with pytest.raises(httpx.TransportError):
        service.restore(APP, stage.addon_id, format_api_time(target))
    stage.crash(RESTORE_CHAIN[0])
    for point in RESTORE_CHAIN[1:]:
        stage.restart(crash_at=point)
        stage.crash(point)
    stage.restart()
    (restore_id,) = restore_ids(stage) - before
    restore = service.wait_restore(APP, stage.addon_id, restore_id)
    assert restore["status"] == "ready", restore
    with psycopg.connect(restore["connection"]["uri"]) as conn:
        assert [r[0] for r in conn.execute("SELECT n FROM marks ORDER BY n")] == rows
    wait_for(
        lambda: audited(stage, "addon.restore_ready", restore_id) == 1,
        timeout=120,
        what="the restore's outcome in the audit trail",
    )
    assert audited(stage, "addon.restore_pitr", restore_id) == 1
    assert audited(stage, "addon.restore_failed", restore_id) == 0


def test_a_restore_killed_after_its_failure_is_recorded(stage: Stage) -> None:
    """The base backup's data is hidden, so its restore fails; the service dies
    right after recording the failure: the next start reports it, audited once."""
    service = stage.service
    before = restore_ids(stage)
    service.restart(crash_at="restore.failed")
    target, _ = stage.mark()
    service.wait_restorable(APP, stage.addon_id, format_api_time(target))
    bucket = service.root / "s3" / "data"
    hidden = [p for p in bucket.rglob("data.tar*") if p.is_file()]
    assert hidden
    for path in hidden:
        path.rename(path.with_name(path.name + ".hidden"))
    try:
        response = service.restore(APP, stage.addon_id, format_api_time(target))
        assert response.status_code == 202, response.text
        stage.crash("restore.failed")
    finally:
        for path in hidden:
            path.with_name(path.name + ".hidden").rename(path)
    stage.restart()
    (restore_id,) = restore_ids(stage) - before
    restore = service.wait_restore(APP, stage.addon_id, restore_id)
    assert restore["status"] == "failed", restore
    assert restore["reason"].startswith("base backup restore failed"), restore
    wait_for(
        lambda: audited(stage, "addon.restore_failed", restore_id) == 1,
        timeout=120,
        what="the failure in the audit trail",
    )
    assert audited(stage, "addon.restore_pitr", restore_id) == 1
