"""The local engine's recovery path without PostgreSQL: the base backup a restore starts
from, picked from a fake barman-cloud catalog, and the watch over a restoring server,
driven by a scripted server.

The script plays what postmaster.pid says at each poll; the engine must connect only once
the server accepts connections, wait through every transient state, and fail only once the
postmaster is gone, with the startup process's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.archiving import Archiving
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.recovery import Recovery
from paas_pitr.engines.local.serverlog import startup_failure
from paas_pitr.errors import RecoveryError
from paas_pitr.timestamps import render_target_time
from tests.unit.engines.local.fakes import T0, World, catalog_entry
from tests.unit.engines.local.test_serverlog import TARGET_NOT_REACHED_LOG

SOURCE = ArchiveConfig("s3://paas-pg-backups/acme/app-1", "db-acme-app-1", None, {})
RESTORE_ERROR = (
    "ERROR: Failure downloading WAL acme/app-1/db-acme-app-1/wals/0000000100000000/"
    "000000010000000000000003.gz to pg_wal/RECOVERYXLOG: Internal Error"
)
STARTING_UP_LOG = (
    "2026-01-01 00:00:00.000 UTC [10] FATAL:  the database system is starting up\n"
    "2026-01-01 00:00:00.500 UTC [11] FATAL:  the database system is not yet accepting "
    "connections\n"
    "2026-01-01 00:00:00.500 UTC [11] DETAIL:  Consistent recovery state has not been yet "
    "reached.\n"
)


class ScriptedServer:
    def __init__(self, owner: ScriptedInstance) -> None:
        self.owner = owner
        self.log_file = Path("/nonexistent/data.log")

    def start(self, *, wait: bool = True) -> None:
        assert not wait
        self.owner.events.append("start")


class ScriptedInstance:
    """Answers each postmaster.pid read with the next scripted status; ``(status, in
    recovery)`` pairs for ``"ready"``."""

    def __init__(self, script: list[Any], log: str = "", restore_error: str | None = None):
        self.script: Iterator[Any] = iter(script)
        self.current: Any = None
        self.log = log
        self.error = restore_error
        self.events: list[str] = []
        self.server = ScriptedServer(self)

    def postmaster_status(self) -> str | None:
        self.current = next(self.script)
        status = self.current[0] if isinstance(self.current, tuple) else self.current
        self.events.append(f"status:{status}")
        return cast(str | None, status)

    def recovery_signal_present(self) -> bool:
        # Absent: every "ready" poll asks the server, as the script expects.
        return False

    def in_recovery(self) -> bool:
        assert isinstance(self.current, tuple) and self.current[0] == "ready", self.current
        self.events.append("connect")
        return bool(self.current[1])

    def log_size(self) -> int:
        return 0

    def startup_failure(self, since: int = 0) -> str | None:
        return startup_failure(self.log[since:])

    def restore_error(self, newer_than: float) -> str | None:
        return self.error


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def sleep(_: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    created = World(tmp_path)
    yield created
    created.close()


class ScriptedRecovery(Recovery):
    """A recovery whose source archive does (or does not) hold WAL after a segment."""

    def __init__(self, world: World, timeout: int, later_wal: bool) -> None:
        super().__init__(
            world.barman,
            world.archives,
            Archiving(world.archives, world.status),
            None,
            restore_timeout_seconds=timeout,
            wal_max_parallel=4,
        )
        self.later_wal = later_wal

    def archive_has_wal_after(
        self, source: ArchiveConfig, credentials: dict[str, str], segment: str
    ) -> bool:
        return self.later_wal


def recovery(world: World, timeout: int = 3600, later_wal: bool = True) -> Recovery:
    return ScriptedRecovery(world, timeout, later_wal)


async def wait(recovery: Recovery, instance: ScriptedInstance) -> None:
    await recovery.wait_for_promotion(cast(Instance, instance), SOURCE, {})


# --- which base backup ----------------------------------------------------------------------


async def choose(world: World, target: dict[str, Any]) -> str:
    return await recovery(world).choose_backup(SOURCE, {}, target)


@pytest.fixture
def catalog(world: World) -> list[dict[str, Any]]:
    entries = world.barman.catalog(SOURCE.destination, SOURCE.server_name)
    entries.extend(
        [
            catalog_entry("20260501T020000", T0 - timedelta(hours=1)),
            catalog_entry("20260501T030000", T0),
            catalog_entry("20260501T033000", T0 + timedelta(minutes=30), status="FAILED"),
            catalog_entry("20260501T040000", T0 + timedelta(hours=1)),
        ]
    )
    return entries


# --- waiting for promotion -------------------------------------------------------------------


async def test_no_connection_before_the_server_accepts_them(world: World) -> None:
    instance = ScriptedInstance(
        [
            None,  # the initial check for a server still stopping
            None,  # launched, postmaster.pid not written yet
            "starting",
            "starting",
            "standby",  # hot_standby off: in recovery, no connections
            ("ready", True),  # hot standby: consistent, still replaying
            ("ready", False),  # promoted
        ],
        log=STARTING_UP_LOG,
    )
    await wait(recovery(world), instance)
    assert instance.events == [
        "status:None",
        "start",
        "status:None",
        "status:starting",
        "status:starting",
        "status:standby",
        "status:ready",
        "connect",
        "status:ready",
        "connect",
    ]


class SignalledInstance(ScriptedInstance):
    """recovery.signal stays while ``signal_polls`` postmaster.pid reads last."""

    def __init__(self, script: list[Any], signal_polls: int) -> None:
        super().__init__(script)
        self.signal_polls = signal_polls

    def recovery_signal_present(self) -> bool:
        return self.events.count("status:ready") <= self.signal_polls


async def test_while_recovery_signal_is_there_the_server_is_asked_once_a_second(
    world: World,
) -> None:
    # asyncio.sleep is instant here: the four polls with the signal present fall within one
    # second, so the server is asked on the first only; once it is gone, at once.
    instance = SignalledInstance([None, *[("ready", True)] * 4, ("ready", False)], 4)
    await wait(recovery(world), instance)
    assert instance.events == [
        "status:None",
        "start",
        "status:ready",
        "connect",
        "status:ready",
        "status:ready",
        "status:ready",
        "status:ready",
        "connect",
    ]


async def test_a_resumed_restore_waits_for_the_previous_server_to_stop(world: World) -> None:
    instance = ScriptedInstance(["stopping", "stopping", None, "starting", ("ready", False)])
    await wait(recovery(world), instance)
    assert instance.events.index("start") == 3
    assert instance.events[:3] == ["status:stopping", "status:stopping", "status:None"]


async def test_a_failed_recovery_reports_the_startup_process_reason_and_the_gap(
    world: World,
) -> None:
    instance = ScriptedInstance(
        [None, "starting", ("ready", True), "stopping", None],
        log=STARTING_UP_LOG + TARGET_NOT_REACHED_LOG,
        restore_error=RESTORE_ERROR,
    )
    with pytest.raises(RecoveryError) as caught:
        await wait(recovery(world), instance)
    assert caught.value.message == (
        "recovery ended before configured recovery target was reached: WAL segment "
        "000000010000000000000003 is missing from the archive, which holds later segments: "
        f"the archive has a gap (restore_command: {RESTORE_ERROR})"
    )


async def test_wal_after_the_archive_s_end(world: World) -> None:
    instance = ScriptedInstance(
        [None, "starting", None], log=TARGET_NOT_REACHED_LOG, restore_error=RESTORE_ERROR
    )
    with pytest.raises(RecoveryError) as caught:
        await wait(recovery(world, later_wal=False), instance)
    assert "000000010000000000000003 is not in the archive, which holds no newer WAL" in (
        caught.value.message
    )


async def test_a_reason_without_a_wal_shortage_is_reported_alone(world: World) -> None:
    log = (
        "2026-01-01 00:00:01.000 UTC [100] FATAL:  requested recovery stop point is before "
        "consistent recovery point\n"
        "2026-01-01 00:00:01.200 UTC [1] LOG:  startup process (PID 100) exited with exit code 1\n"
    )
    instance = ScriptedInstance([None, None], log=log, restore_error=RESTORE_ERROR)
    with pytest.raises(RecoveryError) as caught:
        await wait(recovery(world), instance)
    assert caught.value.message == (
        "requested recovery stop point is before consistent recovery point"
    )


async def test_the_restore_timeout(world: World) -> None:
    instance = ScriptedInstance([None, "starting"], log=STARTING_UP_LOG)
    with pytest.raises(RecoveryError, match="recovery did not finish within 0s"):
        await wait(recovery(world, timeout=0), instance)


def at(moment: Any) -> dict[str, Any]:
    return {"targetTime": render_target_time(moment)}


@pytest.mark.usefixtures("catalog")
async def test_the_newest_backup_consistent_at_or_before_the_target(world: World) -> None:
    assert await choose(world, at(T0 + timedelta(minutes=45))) == "20260501T030000"  # not FAILED
    # Consistent two seconds after its whole-second end (inclusive): barman records the end
    # a moment before the end-of-backup record, truncated to the second.
    assert await choose(world, at(T0 + timedelta(seconds=2))) == "20260501T030000"
    assert await choose(world, at(T0 + timedelta(seconds=1))) == "20260501T020000"
    assert await choose(world, at(T0)) == "20260501T020000"
    assert await choose(world, at(T0 + timedelta(days=1))) == "20260501T040000"
    assert await choose(world, {}) == "20260501T040000"  # no target time: the newest


@pytest.mark.usefixtures("catalog")
async def test_a_named_backup_is_taken_as_named(world: World) -> None:
    target = {"backupID": "20260501T040000", "targetImmediate": True}
    assert await choose(world, target) == "20260501T040000"
    at_time = {"backupID": "20260501T030000", **at(T0 + timedelta(hours=2))}
    assert await choose(world, at_time) == "20260501T030000"  # as named, not the newest
    # Its own backup.info answered: the catalog was not listed.
    assert world.barman.ran("barman-cloud-backup-list") == []
    with pytest.raises(RecoveryError, match="backup '20260501T033000' not found in "):
        await choose(world, {"backupID": "20260501T033000"})  # FAILED: not a backup to restore


@pytest.mark.usefixtures("catalog")
async def test_no_backup_before_the_target_is_an_error(world: World) -> None:
    with pytest.raises(RecoveryError, match="no target backup found in s3://"):
        await choose(world, at(T0 - timedelta(hours=2)))


async def test_a_backup_without_an_exact_end_is_never_chosen(world: World) -> None:
    entry = catalog_entry("20260501T030000", T0)
    entry["end_time"] = entry.pop("end_time_iso")  # a text without offset only
    world.barman.catalog(SOURCE.destination, SOURCE.server_name).append(entry)
    with pytest.raises(RecoveryError, match="no target backup found"):
        await choose(world, at(T0 + timedelta(hours=1)))
