"""Which archives local writers may put straight into the embedded S3 server's folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from paas_pitr.engines.local.objectstorage import EmbeddedS3, tidy_store
from paas_pitr.postgres.server import OsUser
from paas_pitr.s3 import ACCESS_KEY, SECRET_KEY


@pytest.fixture
def s3(tmp_path: Path) -> EmbeddedS3:
    server = EmbeddedS3(tmp_path / "s3")
    (server.data / "backups").mkdir(parents=True)
    return server


def keys(server: EmbeddedS3) -> dict[str, str]:
    server.credentials  # noqa: B018  (makes the key pair on first use)
    meta = json.loads((server.root / "server.json").read_text(encoding="utf-8"))
    return {ACCESS_KEY: meta["access_key"], SECRET_KEY: meta["secret_key"]}


def test_the_servers_own_keys_on_an_existing_bucket_get_its_folder(s3: EmbeddedS3) -> None:
    for destination, path in [
        ("s3://backups/acme/app-1", "backups/acme/app-1"),
        ("s3://backups/acme/app-1/", "backups/acme/app-1"),
        ("s3://backups", "backups"),
    ]:
        folder = s3.folder_of(destination, keys(s3))
        assert folder is not None
        assert (folder.root, folder.path) == (s3.data, s3.data / path)


def test_other_keys_get_no_folder(s3: EmbeddedS3) -> None:
    # Over S3 they are refused: writing the folder would archive where S3 says no.
    other = {**keys(s3), SECRET_KEY: "not-the-servers"}
    assert s3.folder_of("s3://backups/acme", other) is None
    assert s3.folder_of("s3://backups/acme", {}) is None


@pytest.mark.parametrize(
    "destination",
    [
        "s3://missing/acme",  # S3 answers NoSuchBucket, never makes one
        "s3://backups/../other",
        "s3://backups/acme/.hidden",
        "s3://../etc",
        "s3://Backups/acme",
        "s3:///acme",
        "s3://backups/a//b",  # barman keeps the empty component: another key
        "s3://backups/p?x",  # barman's URL parsing drops the query: another key
        "s3://backups/q#f",
        "s3://backups/tenant one",
        "backups/acme",
    ],
)
def test_destinations_that_could_leave_the_bucket_or_have_none_get_no_folder(
    s3: EmbeddedS3, destination: str
) -> None:
    assert s3.folder_of(destination, keys(s3)) is None


def test_a_bucket_that_is_a_symbolic_link_gets_no_folder(s3: EmbeddedS3, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (s3.data / "linked").symlink_to(tmp_path / "elsewhere")
    assert s3.folder_of("s3://linked/acme", keys(s3)) is None


def test_tidying_removes_cut_uploads_and_survives_a_folder_named_like_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "backups/acme/wals/0000000100000000").mkdir(parents=True)
    kept = data / "backups/acme/wals/0000000100000000/000000010000000000000003.snappy"
    kept.write_bytes(b"segment")
    cut = data / "backups/acme/wals/0000000100000000/.rclone_temp_put_1f2e"
    cut.write_bytes(b"partial")
    (data / "backups/.rclone_temp_folder").mkdir()  # a folder: left alone, no failure

    tidy_store(data, None)

    assert not cut.exists()
    assert kept.read_bytes() == b"segment"
    assert (data / "backups/.rclone_temp_folder").is_dir()


def test_tidying_never_follows_a_link_out_of_the_store(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("handing files to another user needs root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".rclone_temp_precious").write_bytes(b"not the store's")
    (outside / "file").write_bytes(b"x")
    data = tmp_path / "data"
    (data / "backups").mkdir(parents=True)
    (data / "backups" / "link").symlink_to(outside)
    owner = (outside / "file").stat().st_uid
    someone = OsUser("someone", owner + 4242, owner + 4242)

    tidy_store(data, someone)

    assert (outside / ".rclone_temp_precious").read_bytes() == b"not the store's"
    assert (outside / "file").stat().st_uid == owner
    assert os.stat(outside).st_uid == owner
    # What is the store's went over, data/ itself included.
    assert (data / "backups").stat().st_uid == someone.uid
    assert data.stat().st_uid == someone.uid
