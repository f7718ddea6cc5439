"""Reading a restoring server's state without connecting to it: its log and postmaster.pid.

The log samples are PostgreSQL 15's own lines from real failed restores of the local
engine, the clients' "starting up" FATALs included.
"""

from __future__ import annotations

import pytest

from paas_pitr.engines.local.serverlog import (
    is_transient,
    is_wal_shortage,
    missing_segment,
    postmaster_status_of,
    startup_failure,
)

TARGET_NOT_REACHED_LOG = """\
2026-11-29 15:49:29.189 UTC [10658] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1)
2026-11-29 15:49:29.195 UTC [10669] LOG:  database system was interrupted; last known up at 2026-11-29 15:49:22 UTC
2026-11-29 15:49:29.621 UTC [10669] LOG:  starting point-in-time recovery to 2026-11-29 15:49:26.568809+00
2026-11-29 15:49:29.675 UTC [10816] FATAL:  the database system is starting up
2026-11-29 15:49:29.992 UTC [10669] LOG:  restored log file "000000010000000000000002" from archive
2026-11-29 15:49:30.003 UTC [10669] LOG:  redo starts at 0/2000028
2026-11-29 15:49:30.179 UTC [10985] FATAL:  the database system is not yet accepting connections
2026-11-29 15:49:30.179 UTC [10985] DETAIL:  Consistent recovery state has not been yet reached.
2026-11-29 15:49:30.694 UTC [10669] LOG:  consistent recovery state reached at 0/2000100
2026-11-29 15:49:30.694 UTC [10658] LOG:  database system is ready to accept read-only connections
2026-11-29 15:49:31.279 UTC [10669] LOG:  redo done at 0/2000100 system usage: CPU: user: 0.00 s
2026-11-29 15:49:31.279 UTC [10669] FATAL:  recovery ended before configured recovery target was reached
2026-11-29 15:49:31.280 UTC [11201] FATAL:  the database system is shutting down
2026-11-29 15:49:31.283 UTC [10658] LOG:  startup process (PID 10669) exited with exit code 1
2026-11-29 15:49:31.283 UTC [10658] LOG:  terminating any other active server processes
2026-11-29 15:49:31.284 UTC [10658] LOG:  shutting down due to startup process failure
2026-11-29 15:49:31.287 UTC [10658] LOG:  database system is shut down
"""  # noqa: E501 - the server's own lines, unwrapped

CHECKPOINT_MISSING_LOG = """\
2026-11-29 15:49:53.300 UTC [17143] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1)
2026-11-29 15:49:53.732 UTC [17157] LOG:  starting backup recovery with redo LSN 0/2000028, checkpoint LSN 0/2000060, on timeline ID 1
2026-11-29 15:49:53.791 UTC [17307] FATAL:  the database system is starting up
2026-11-29 15:49:54.204 UTC [17157] LOG:  invalid checkpoint record
2026-11-29 15:49:54.205 UTC [17157] FATAL:  could not locate required checkpoint record
2026-11-29 15:49:54.205 UTC [17157] HINT:  If you are restoring from a backup, touch "/data/recovery.signal" and add required recovery options.
\tIf you are not restoring from a backup, try removing the file "/data/backup_label".
2026-11-29 15:49:54.206 UTC [17143] LOG:  startup process (PID 17157) exited with exit code 1
2026-11-29 15:49:54.208 UTC [17143] LOG:  shutting down due to startup process failure
2026-11-29 15:49:54.212 UTC [17143] LOG:  database system is shut down
"""  # noqa: E501 - the server's own lines, unwrapped


def test_the_startup_process_error_wins_over_the_clients_starting_up() -> None:
    assert (
        startup_failure(TARGET_NOT_REACHED_LOG)
        == "recovery ended before configured recovery target was reached"
    )
    assert startup_failure(CHECKPOINT_MISSING_LOG) == "could not locate required checkpoint record"


def test_transient_states_alone_are_no_failure() -> None:
    log = "\n".join(
        line
        for line in TARGET_NOT_REACHED_LOG.splitlines()
        if "recovery ended" not in line and "startup process (PID" not in line
    )
    assert startup_failure(log) is None
    assert startup_failure("") is None


def test_a_client_fatal_is_not_the_startup_process_reason() -> None:
    log = (
        '2026-01-01 00:00:00.000 UTC [200] FATAL:  password authentication failed for user "x"\n'
        "2026-01-01 00:00:01.000 UTC [100] FATAL:  requested recovery stop point is before "
        "consistent recovery point\n"
        '2026-01-01 00:00:01.100 UTC [300] FATAL:  role "y" does not exist\n'
        "2026-01-01 00:00:01.200 UTC [1] LOG:  startup process (PID 100) exited with exit code 1\n"
    )
    assert startup_failure(log) == (
        "requested recovery stop point is before consistent recovery point"
    )


def test_a_known_recovery_failure_is_preferred_to_a_generic_one() -> None:
    log = (
        '2026-01-01 00:00:00.000 UTC [100] FATAL:  could not open file "x": No such file\n'
        "2026-01-01 00:00:00.100 UTC [100] FATAL:  recovery ended before configured recovery "
        "target was reached\n"
        "2026-01-01 00:00:00.200 UTC [100] FATAL:  something else entirely\n"
    )
    assert startup_failure(log) == "recovery ended before configured recovery target was reached"


def test_a_panic_and_its_detail() -> None:
    log = (
        "2026-01-01 00:00:00.000 UTC [100] PANIC:  could not locate a valid checkpoint record\n"
        "2026-01-01 00:00:00.000 UTC [100] DETAIL:  Could not open file.\n"
        "2026-01-01 00:00:00.100 UTC [1] LOG:  startup process (PID 100) was terminated by "
        "signal 6: Aborted\n"
    )
    assert startup_failure(log) == (
        "could not locate a valid checkpoint record (Could not open file.)"
    )


def test_a_startup_process_killed_without_an_error_is_named() -> None:
    log = (
        "2026-01-01 00:00:00.000 UTC [101] FATAL:  the database system is starting up\n"
        "2026-01-01 00:00:00.100 UTC [1] LOG:  startup process (PID 100) was terminated by "
        "signal 9: Killed\n"
    )
    assert startup_failure(log) == "startup process (PID 100) was terminated by signal 9: Killed"


def test_a_postmaster_that_cannot_start_says_why() -> None:
    log = (
        '2026-01-01 00:00:00.000 UTC [1] FATAL:  lock file "postmaster.pid" already exists\n'
        "2026-01-01 00:00:00.000 UTC [1] HINT:  Is another postmaster running?\n"
    )
    assert startup_failure(log) == 'lock file "postmaster.pid" already exists'


@pytest.mark.parametrize(
    "message",
    [
        "the database system is starting up",
        "the database system is not yet accepting connections",
        "Consistent recovery state has not been yet reached.",
        "the database system is shutting down",
        "the database system is not accepting connections",
        "terminating connection due to administrator command",
    ],
)
def test_transient_states(message: str) -> None:
    assert is_transient(message)


def test_wal_shortage_and_the_missing_segment() -> None:
    assert is_wal_shortage("recovery ended before configured recovery target was reached")
    assert is_wal_shortage("could not locate required checkpoint record")
    assert not is_wal_shortage("requested recovery stop point is before consistent recovery point")
    error = (
        "ERROR: Failure downloading WAL acme/app-1/db/wals/0000000100000000/"
        "000000010000000000000003.gz to pg_wal/RECOVERYXLOG: Internal Error"
    )
    assert missing_segment(error) == "000000010000000000000003"
    assert missing_segment("ERROR: WAL file 00000002.history not found") is None


PID_FILE = "4242\n/data\n1764431369\n5432\n/run/sock\n127.0.0.1\n  1234567    98304\n{}\n"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (PID_FILE.format("starting"), "starting"),
        (PID_FILE.format("ready   "), "ready"),
        (PID_FILE.format("standby "), "standby"),
        (PID_FILE.format("stopping"), "stopping"),
        # Written in stages: PID first, status last.
        ("4242\n/data\n", "starting"),
        ("", "starting"),
    ],
)
def test_postmaster_status(text: str, status: str) -> None:
    assert postmaster_status_of(text) == status


def test_a_detail_belongs_to_the_entry_just_before_it() -> None:
    log = (
        "2026-01-01 00:00:00.000 UTC [100] FATAL:  recovery ended before configured recovery "
        "target was reached\n"
        "2026-01-01 00:00:00.001 UTC [100] LOG:  something else\n"
        "2026-01-01 00:00:00.002 UTC [100] DETAIL:  about something else\n"
    )
    assert startup_failure(log) == "recovery ended before configured recovery target was reached"
