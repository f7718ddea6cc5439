"""The bucket interface: barman's catalog read exactly, offsets required, prefixes guarded;
the in-memory fake behaves as the S3 implementation (both share the catalog logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from paas_pitr.bucket import InMemoryBucket, destination_prefix
from paas_pitr.catalog import CatalogBackup, parse_backup_info, render_backup_info
from paas_pitr.errors import ObjectStoreError

DESTINATION = "s3://paas-pg-backups/acme/app-1"
SERVER = "db-acme-app-1-0a1b2c3d"

# What barman-cloud-backup 3.19 uploads (BackupInfo.save): str() of aware datetimes, no
# ``_iso`` fields, ``None`` for anything unset.
BARMAN_CLOUD_BACKUP_INFO = """\
backup_id=20260504T100000
backup_label='START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\n'
backup_name=None
begin_time=2026-05-04 10:00:00.123456+00:00
begin_wal=000000010000000000000002
end_time=2026-05-04 12:00:05+02:00
end_wal=000000010000000000000002
error=None
server_name=db-acme-app-1-0a1b2c3d
status=DONE
systemid=7370000000000000000
timeline=1
version=150004
xlog_segment_size=16777216
"""


def test_barman_cloud_backup_info_is_read_with_its_offsets() -> None:
    info = parse_backup_info(BARMAN_CLOUD_BACKUP_INFO, "20260504T100000")
    assert info == CatalogBackup(
        backup_id="20260504T100000",
        status="DONE",
        begin_time=datetime(2026, 5, 4, 10, 0, 0, 123456, tzinfo=UTC),
        # 12:00:05+02:00 is 10:00:05 UTC: never the wall-clock figure read as UTC.
        end_time=datetime(2026, 5, 4, 10, 0, 5, tzinfo=UTC),
        pg_major=15,
    )


def test_iso_fields_win_and_a_time_without_offset_is_never_utc() -> None:
    text = (
        "status=DONE\n"
        "begin_time=Mon May  4 10:00:00 2026\n"
        "begin_time_iso=2026-05-04T10:00:00-03:00\n"
        "end_time=2026-05-04 10:05:00\n"
        "version=160002\n"
    )
    info = parse_backup_info(text, "20260504T130000")
    assert info.backup_id == "20260504T130000"  # from the folder when the file has none
    assert info.begin_time == datetime(2026, 5, 4, 13, 0, tzinfo=UTC)
    assert info.end_time is None  # naive: unusable, not guessed
    assert info.pg_major == 16


def test_render_round_trips_in_barmans_spelling() -> None:
    backup = CatalogBackup(
        "20260504T100000",
        "DONE",
        datetime(2026, 5, 4, 10, 0, tzinfo=UTC),
        datetime(2026, 5, 4, 10, 1, 2, 345678, tzinfo=UTC),
        17,
    )
    text = render_backup_info(backup)
    assert "end_time=2026-05-04 10:01:02.345678+00:00\n" in text
    assert parse_backup_info(text, backup.backup_id) == backup


def test_destination_prefix_refuses_another_bucket() -> None:
    assert destination_prefix(DESTINATION, "paas-pg-backups") == "acme/app-1"
    for wrong in ("s3://other/acme/app-1", "s3://paas-pg-backups", "paas-pg-backups/acme"):
        with pytest.raises(ObjectStoreError):
            destination_prefix(wrong, "paas-pg-backups")


async def test_catalog_lists_completed_backups_oldest_first() -> None:
    bucket = InMemoryBucket()
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    second = bucket.add_backup(
        DESTINATION, SERVER, t0 + timedelta(days=1), t0 + timedelta(days=1, minutes=3)
    )
    first = bucket.add_backup(DESTINATION, SERVER, t0, t0 + timedelta(minutes=2))
    bucket.add_backup(
        DESTINATION, SERVER, t0 + timedelta(days=2), t0 + timedelta(days=2), status="FAILED"
    )
    # A backup still running has no backup.info yet, only data.
    bucket.put_object(f"acme/app-1/{SERVER}/base/20260504T000000/data.tar", b"x")
    # Another server's backups are not this server's.
    bucket.add_backup(DESTINATION, "db-acme-app-1-ffffffff", t0, t0 + timedelta(minutes=1))

    backups = await bucket.base_backups("acme/app-1", SERVER)
    assert [b.backup_id for b in backups] == [first, second]
    assert backups[0].end_time == t0 + timedelta(minutes=2)
    assert backups[0].pg_major == 16


async def test_server_folders_and_newest_wal() -> None:
    bucket = InMemoryBucket()
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    bucket.add_wal(DESTINATION, SERVER, "000000010000000000000001", t0)
    bucket.add_wal(DESTINATION, SERVER, "000000010000000100000000", t0 + timedelta(hours=2))
    # Parallel archiving: the tail of the previous folder uploaded after the next began.
    bucket.add_wal(DESTINATION, SERVER, "0000000100000000000000FF", t0 + timedelta(hours=3))
    bucket.add_wal(DESTINATION, "db-acme-app-1-ffffffff", "000000010000000000000009", t0)
    bucket.put_object("acme/app-2/db-acme-app-2-00000000/wals/x", b"x")
    bucket.put_object("acme/app-1/loose-object", b"x")

    assert await bucket.server_folders("acme/app-1") == [
        "db-acme-app-1-0a1b2c3d",
        "db-acme-app-1-ffffffff",
    ]
    assert await bucket.newest_wal("acme/app-1", SERVER) == t0 + timedelta(hours=3)
    assert await bucket.newest_wal("acme/app-1", "db-acme-app-1-00000000") is None


async def test_newest_wal_is_in_utc() -> None:
    bucket = InMemoryBucket()
    written = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    bucket.add_wal(DESTINATION, SERVER, "000000010000000000000001", written)
    newest = await bucket.newest_wal("acme/app-1", SERVER)
    assert newest == written and newest is not None and newest.tzinfo is UTC


async def test_json_objects() -> None:
    bucket = InMemoryBucket()
    await bucket.put_json("_paas-pitr/deleted/acme/app-1/x.json", {"a": 1})
    assert await bucket.get_json("_paas-pitr/deleted/acme/app-1/x.json") == {"a": 1}
    assert await bucket.get_json("_paas-pitr/deleted/acme/app-1/missing.json") is None
    bucket.put_object("_paas-pitr/deleted/acme/app-1/garbled.json", b"{not json")
    assert await bucket.get_json("_paas-pitr/deleted/acme/app-1/garbled.json") is None
    assert await bucket.list_keys("_paas-pitr/") == [
        "_paas-pitr/deleted/acme/app-1/garbled.json",
        "_paas-pitr/deleted/acme/app-1/x.json",
    ]
    await bucket.delete("_paas-pitr/deleted/acme/app-1/x.json")
    assert await bucket.get_json("_paas-pitr/deleted/acme/app-1/x.json") is None


async def test_delete_prefix_deletes_one_server_folder_and_nothing_wider() -> None:
    bucket = InMemoryBucket()
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    bucket.add_backup(DESTINATION, SERVER, t0, t0 + timedelta(minutes=2))
    bucket.add_wal(DESTINATION, SERVER, "000000010000000000000001", t0)
    # A folder whose name starts with the same characters must survive.
    bucket.add_wal(DESTINATION, SERVER + "0", "000000010000000000000001", t0)
    for too_wide in ("", "acme/", "acme/app-1/", f"acme/app-1/{SERVER}", "acme//x/"):
        with pytest.raises(ObjectStoreError):
            await bucket.delete_prefix(too_wide)
    assert await bucket.delete_prefix(f"acme/app-1/{SERVER}/") == 3
    assert bucket.keys() == [
        f"acme/app-1/{SERVER}0/wals/0000000100000000/000000010000000000000001.gz"
    ]


async def test_an_unreachable_bucket_raises_object_store_errors() -> None:
    bucket = InMemoryBucket()
    bucket.down = True
    with pytest.raises(ObjectStoreError) as raised:
        await bucket.server_folders("acme/app-1")
    assert raised.value.code == "object_store_unavailable"
    assert raised.value.http_status == 503
