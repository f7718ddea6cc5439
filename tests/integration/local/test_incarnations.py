"""A deleted addon's archive, for real (PostgreSQL, barman-cloud, the embedded S3 server):
kept byte for byte while a re-created addon archives beside it, listed, restored exactly
into a new cluster, and deleted with its record once its retention has passed."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError

from paas_pitr.bucket import S3Bucket
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.errors import ObjectStoreError
from paas_pitr.postgres.server import pick_port
from paas_pitr.s3 import ensure_bucket
from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import wait_for_rows
from tests.integration.api.test_incarnations import on_api_loop
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import s3_root, snapshot, written_then_damaged

Objects = dict[str, bytes]


def objects(folder: Path) -> Objects:
    """Every object of a server folder, by key, with its bytes."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".rclone_temp_")
    }


def processes_naming(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (an archive upload of the
    deleted server can outlive its killed postmaster for a moment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and "pytest" not in cmdline:
            found.append(cmdline)
    return found


def test_a_deleted_incarnation_is_kept_listed_restored_and_expired(local_api: LocalApi) -> None:
    addon_id, _, target, expected = written_then_damaged(local_api)
    at = format_api_time(target)
    local_api.wait_restorable("app-1", addon_id, at)
    old = local_api.addon("app-1", addon_id)["backups"]["server_name"]
    root = s3_root(local_api)
    old_folder = root / old

    deleted = local_api.client.delete(f"/v1/apps/app-1/addons/{addon_id}")
    assert deleted.status_code == 204, deleted.text
    instance_root = local_api.engine.root / "instances" / addon_id
    wait_for(lambda: not instance_root.exists(), what="the deleted server gone")
    wait_for(lambda: not processes_naming(old), what="no upload of the deleted server running")
    kept = objects(old_folder)
    assert any(key.startswith("wals/") for key in kept)
    assert any(key.endswith("backup.info") for key in kept)

    # Re-created under the same id: a new folder, and the old one stays byte for byte.
    again = local_api.create_addon("pro")
    assert again["addon_id"] == addon_id
    new = again["backups"]["server_name"]
    assert new != old
    local_api.wait_backups_completed("app-1", addon_id)
    wait_for(lambda: any(k.startswith("wals/") for k in objects(root / new)), what="new WAL")
    assert objects(old_folder) == kept

    listed = local_api.client.get(f"/v1/apps/app-1/addons/{addon_id}/incarnations")
    assert listed.status_code == 200, listed.text
    current, previous = listed.json()["data"]
    assert (current["server_name"], current["current"]) == (new, True)
    assert (previous["server_name"], previous["current"]) == (old, False)
    deleted_at = datetime.fromisoformat(previous["deleted_at"])
    retained_until = datetime.fromisoformat(previous["retained_until"])
    assert retained_until - deleted_at == timedelta(days=35)
    # barman-cloud's own catalog, read with its offsets.
    assert previous["base_backups"] and all(b["stopped_at"] for b in previous["base_backups"])
    assert {b["major_version"] for b in previous["base_backups"]} == {int(again["version"])}
    assert datetime.fromisoformat(previous["earliest"]) <= target
    assert target <= datetime.fromisoformat(previous["latest"]) <= deleted_at + timedelta(minutes=1)

    response = local_api.client.post(
        f"/v1/apps/app-1/addons/{addon_id}/restore", json={"timestamp": at, "incarnation": old}
    )
    assert response.status_code == 202, response.text
    restore = local_api.wait_restore("app-1", addon_id, response.json()["data"]["restore_id"])
    assert restore["status"] == "ready", restore
    assert restore["incarnation"] == old
    assert snapshot(restore["connection"]["uri"]) == expected
    (row,) = wait_for_rows(local_api.dsn, 1)
    assert row[2]["incarnation"] == old
    assert objects(old_folder) == kept  # a restore only reads

    # Retention: nothing before it has passed, everything of the old incarnation after.
    state = local_api.running.state
    assert on_api_loop(state, state.archives.sweep(now=retained_until)) == []
    assert objects(old_folder) == kept
    current_before = objects(root / new)
    (expired,) = on_api_loop(state, state.archives.sweep(now=retained_until + timedelta(seconds=1)))
    assert expired.server_name == old
    assert objects(old_folder) == {}
    assert objects(root.parents[1] / "_paas-pitr") == {}
    current_after = objects(root / new)
    assert {k: current_after.get(k) for k in current_before} == current_before
    (audited,) = wait_for_rows(local_api.dsn, 1, "addon.archive_expired")
    assert audited[1] == addon_id
    assert audited[2]["server_name"] == old
    assert audited[2]["objects_deleted"] == len(kept)
    (only,) = local_api.client.get(f"/v1/apps/app-1/addons/{addon_id}/incarnations").json()["data"]
    assert only["server_name"] == new
    # The restored cluster, which archives under its own folder, lives on.
    assert snapshot(restore["connection"]["uri"]) == expected


@pytest.fixture(scope="module")
def embedded_s3() -> Iterator[EmbeddedS3]:
    root = Path(tempfile.mkdtemp(prefix="paas-pitr-s3-"))
    s3 = EmbeddedS3(root)
    s3.start()
    try:
        ensure_bucket(s3.url, s3.credentials, "paas-pg-backups")
        yield s3
    finally:
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_s3_bucket_on_a_real_server(embedded_s3: EmbeddedS3) -> None:
    bucket = S3Bucket("paas-pg-backups", embedded_s3.url, embedded_s3.credentials)
    client = boto3.client(
        "s3",
        endpoint_url=embedded_s3.url,
        aws_access_key_id=embedded_s3.credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=embedded_s3.credentials["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    server = "db-acme-app-1-0a1b2c3d"
    info = (
        "backup_id=20260504T100000\nstatus=DONE\n"
        "begin_time=2026-05-04 10:00:00.5+00:00\nend_time=2026-05-04 12:01:00+02:00\n"
        "version=160004\n"
    )
    client.put_object(
        Bucket="paas-pg-backups",
        Key=f"acme/app-1/{server}/base/20260504T100000/backup.info",
        Body=info.encode(),
    )
    # More than one delete batch (1000 keys).
    for index in range(1005):
        client.put_object(
            Bucket="paas-pg-backups",
            Key=f"acme/app-1/{server}/wals/0000000100000000/{index:024X}.gz",
            Body=b"w",
        )

    async def exercise() -> None:
        assert await bucket.server_folders("acme/app-1") == [server]
        (backup,) = await bucket.base_backups("acme/app-1", server)
        assert backup.end_time == datetime(2026, 5, 4, 10, 1, tzinfo=UTC)
        assert backup.pg_major == 16
        newest = await bucket.newest_wal("acme/app-1", server)
        assert newest is not None and newest.tzinfo is UTC
        await bucket.put_json("_paas-pitr/deleted/acme/app-1/x.json", {"a": [1]})
        assert await bucket.get_json("_paas-pitr/deleted/acme/app-1/x.json") == {"a": [1]}
        assert await bucket.get_json("_paas-pitr/deleted/acme/app-1/y.json") is None
        assert await bucket.list_keys("_paas-pitr/") == ["_paas-pitr/deleted/acme/app-1/x.json"]
        assert await bucket.delete_prefix(f"acme/app-1/{server}/") == 1006
        assert await bucket.server_folders("acme/app-1") == []
        await bucket.delete("_paas-pitr/deleted/acme/app-1/x.json")
        assert await bucket.list_keys("_paas-pitr/") == []

        wrong = S3Bucket(
            "paas-pg-backups",
            embedded_s3.url,
            {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong"},
        )
        with pytest.raises(ObjectStoreError) as refused:
            await wrong.list_keys("acme/")
        assert isinstance(refused.value.__cause__, ClientError)
        closed = S3Bucket("paas-pg-backups", f"http://127.0.0.1:{pick_port()}", {})
        with pytest.raises(ObjectStoreError) as unreachable:
            await closed.server_folders("acme/app-1")
        assert isinstance(unreachable.value.__cause__, BotoCoreError)

    asyncio.run(exercise())
