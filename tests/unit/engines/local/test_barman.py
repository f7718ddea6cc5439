"""Backup times read from barman-cloud-backup-list's JSON: exact UTC instants, or nothing.

The plain ``begin_time`` / ``end_time`` texts have no offset (wall-clock time of the
database session's zone); taking them as UTC shifted backups by the host's offset.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.engines.local.barman import (
    BASE_ENV,
    Barman,
    backup_info_entry,
    barman_time,
    env_file_text,
)
from paas_pitr.engines.local.instance import Instance
from paas_pitr.postgres.binaries import PostgresBinaries

LOS_ANGELES_WINTER = timezone(timedelta(hours=-8))
KATHMANDU = timezone(timedelta(hours=5, minutes=45))


def entry(**fields: Any) -> dict[str, Any]:
    return {"backup_id": "20261129T074754", "status": "DONE", **fields}


@pytest.mark.parametrize(
    ("iso", "expected"),
    [
        ("2026-11-29T07:47:54.123456-08:00", datetime(2026, 11, 29, 15, 47, 54, 123456, UTC)),
        ("2026-11-29T21:32:54+05:45", datetime(2026, 11, 29, 15, 47, 54, tzinfo=UTC)),
        ("2026-11-29T15:47:54.5+00:00", datetime(2026, 11, 29, 15, 47, 54, 500000, UTC)),
    ],
)
def test_the_iso_field_gives_the_exact_utc_instant(iso: str, expected: datetime) -> None:
    # The ctime text next to it names the same wall-clock time without an offset: ignored.
    wall = datetime.fromisoformat(iso).strftime("%a %b %d %H:%M:%S %Y")
    found = barman_time(entry(end_time=wall, end_time_iso=iso), "end")
    assert found == expected
    assert found is not None and found.utcoffset() == timedelta(0)


def test_begin_and_end_read_their_own_field() -> None:
    backup = entry(
        begin_time_iso="2026-11-29T07:47:54-08:00", end_time_iso="2026-11-29T07:48:10-08:00"
    )
    assert barman_time(backup, "begin") == datetime(2026, 11, 29, 15, 47, 54, tzinfo=UTC)
    assert barman_time(backup, "end") == datetime(2026, 11, 29, 15, 48, 10, tzinfo=UTC)


def test_a_text_without_an_offset_is_never_taken_as_utc(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "paas_pitr.engines.local.barman")
    only_text = entry(begin_time="Sun Nov 29 07:47:54 2026", end_time="Sun Nov 29 07:48:10 2026")
    assert barman_time(only_text, "begin") is None
    assert barman_time(only_text, "end") is None
    assert "end_time_iso" in caplog.text and "20261129T074754" in caplog.text


def test_an_iso_field_without_an_offset_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "paas_pitr.engines.local.barman")
    naive = entry(end_time_iso="2026-11-29T07:48:10.000001")
    assert barman_time(naive, "end") is None
    assert "no UTC offset" in caplog.text


@pytest.mark.parametrize("value", [None, "", "yesterday", 1764430090])
def test_absent_or_garbled_fields_give_nothing(value: object) -> None:
    assert barman_time(entry(end_time_iso=value), "end") is None


def test_what_the_installed_barman_prints_is_read_exactly() -> None:
    """The field names and spelling of the pinned barman, from its own serializer."""
    # barman ships no type information; barman.infofile imports cleanly only after
    # barman.output (a circular import of theirs).
    import barman.output  # type: ignore[import-untyped]  # noqa: F401
    from barman.infofile import BackupInfo  # type: ignore[import-untyped]

    begin = datetime(2026, 11, 29, 7, 47, 54, 123456, LOS_ANGELES_WINTER)
    end = datetime(2026, 11, 29, 21, 33, 2, 7, KATHMANDU)
    listed = BackupInfo(
        backup_id="20261129T074754", begin_time=begin, end_time=end, status="DONE"
    ).to_json()
    assert listed["end_time"] == "Sun Nov 29 21:33:02 2026"  # no offset: must not be used
    assert barman_time(listed, "begin") == datetime(2026, 11, 29, 15, 47, 54, 123456, UTC)
    assert barman_time(listed, "end") == datetime(2026, 11, 29, 15, 48, 2, 7, UTC)


def test_barman_runs_in_utc_whatever_the_host_zone() -> None:
    # backup ids are barman's local wall-clock time: UTC keeps them host-independent.
    assert BASE_ENV["TZ"] == "UTC"
    assert "TZ=UTC" in env_file_text({"AWS_ACCESS_KEY_ID": "k"}).splitlines()


def test_every_instance_runs_in_utc_and_no_parameter_changes_that(tmp_path: Path) -> None:
    instance = Instance(
        "db-acme-app-1",
        tmp_path / "instance",
        tmp_path / "sockets",
        PostgresBinaries(tmp_path / "bin", 15),
        None,
        Barman(None),
    )
    settings = instance.server_settings(
        {"timezone": "America/Los_Angeles", "log_timezone": "Asia/Kathmandu", "work_mem": "8MB"},
        None,
    )
    assert settings["timezone"] == "UTC"
    assert settings["log_timezone"] == "UTC"
    assert settings["work_mem"] == "8MB"


BACKUP_INFO = """backup_id=20261129T200000
backup_name=db-manual-1
begin_time=2026-11-29 20:00:00.123456+00:00
begin_wal=000000010000000000000002
begin_xlog=0/2000028
end_time=2026-11-29 20:00:05.654321+00:00
end_wal=000000010000000000000003
end_xlog=0/3000100
error=None
status=DONE
version=150004
"""


def test_a_backup_info_reads_as_the_catalog_entry_a_backup_status_takes() -> None:
    found = backup_info_entry(BACKUP_INFO, "20261129T200000")
    assert {k: found[k] for k in ("backup_id", "backup_name", "status", "error")} == {
        "backup_id": "20261129T200000",
        "backup_name": "db-manual-1",
        "status": "DONE",
        "error": None,
    }
    assert barman_time(found, "begin") == datetime(2026, 11, 29, 20, 0, 0, 123456, tzinfo=UTC)
    assert barman_time(found, "end") == datetime(2026, 11, 29, 20, 0, 5, 654321, tzinfo=UTC)
    assert (found["begin_wal"], found["end_wal"]) == (
        "000000010000000000000002",
        "000000010000000000000003",
    )
    assert (found["begin_xlog"], found["end_xlog"]) == ("0/2000028", "0/3000100")


def test_a_backup_info_time_without_an_offset_gives_no_time() -> None:
    text = BACKUP_INFO.replace("20:00:05.654321+00:00", "20:00:05.654321")
    assert barman_time(backup_info_entry(text, "20261129T200000"), "end") is None
