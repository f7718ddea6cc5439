"""An instance's state read from its files, never by connecting: postmaster.pid, the log
from an offset, the restore_command's error of this attempt."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from paas_pitr.engines.local.instance import Instance
from tests.unit.engines.local.test_serverlog import PID_FILE, TARGET_NOT_REACHED_LOG


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    # Only files are read here: no binaries, no server, no barman.
    return Instance(
        "db-x", tmp_path / "db-x", tmp_path / "run", cast(Any, None), None, cast(Any, None)
    )


def test_no_postmaster_no_status(instance: Instance) -> None:
    assert instance.postmaster_status() is None
    pid_file = instance.server.data_dir / "postmaster.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(PID_FILE.replace("4242", str(os.getpid())).format("ready   "))
    assert instance.postmaster_status() == "ready"


def test_the_restore_error_of_this_attempt_only(instance: Instance) -> None:
    instance.restore_error_file.parent.mkdir(parents=True)
    instance.restore_error_file.write_text(
        "2026-11-29 15:49:31,179 [11107] ERROR: Failure downloading WAL "
        "w/000000010000000000000003.gz\n"
        "2026-11-29 15:49:31,179 [11107] ERROR: Barman cloud WAL restore exception: "
        "Internal Error\n"
    )
    assert instance.restore_error(0) == (
        "ERROR: Failure downloading WAL w/000000010000000000000003.gz | "
        "ERROR: Barman cloud WAL restore exception: Internal Error"
    )
    # Written before the attempt started: a previous attempt's, not this one's.
    assert instance.restore_error(time.time() + 60) is None


def test_the_log_is_read_from_an_offset(instance: Instance) -> None:
    log = instance.server.log_file
    log.parent.mkdir(parents=True, exist_ok=True)
    earlier = (
        "2026-01-01 00:00:00.000 UTC [9] FATAL:  could not locate required checkpoint record\n"
    )
    log.write_text(earlier + TARGET_NOT_REACHED_LOG)
    assert instance.startup_failure(len(earlier)) == (
        "recovery ended before configured recovery target was reached"
    )
    assert instance.startup_failure(log.stat().st_size) is None
