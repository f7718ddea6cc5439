"""The in-process base backup restore with real processes: PostgreSQL backed up by stock
``barman-cloud-backup`` into the embedded S3 server, restored by
:class:`~paas_pitr.engines.local.baserestore.BaseBackupRestore` and, for reference, by
``barman-cloud-restore``: both must write the same files, byte for byte, whether the backup
is one tar or several parts, with a tablespace.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paas_pitr.engines.local.archive import ArchiveConfig
from paas_pitr.engines.local.barman import Barman
from paas_pitr.engines.local.baserestore import BaseBackupRestore, S3BackupObjects
from paas_pitr.engines.local.instance import Instance
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.errors import RecoveryError
from paas_pitr.postgres.server import OsUser, chown_tree
from paas_pitr.s3 import s3_client
from tests.integration.local.instances import archived_instance

pytestmark = pytest.mark.integration

BUCKET = "base-bucket"
PREFIX = "restore-test"
SERVER = "db"


@dataclass
class Rig:
    root: Path
    s3: EmbeddedS3
    instance: Instance
    barman: Barman
    config: ArchiveConfig
    credentials: dict[str, str]
    user: OsUser | None
    tablespace: Path

    def backup(self, *extra: str) -> str:
        """A stock barman-cloud-backup of the server (``extra``: more flags); its id."""
        import asyncio

        before = set(self.backup_ids())
        server = self.instance.server
        result = asyncio.run(
            self.barman.run(
                [
                    self.barman.tool("barman-cloud-backup"),
                    "--immediate-checkpoint",
                    *extra,
                    "--endpoint-url",
                    self.s3.url,
                    "-h",
                    str(server.socket_dir),
                    "-p",
                    str(server.port),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    self.config.destination,
                    SERVER,
                ],
                self.credentials,
                timeout=300,
            )
        )
        assert result.returncode == 0, result.error_text
        (new,) = set(self.backup_ids()) - before
        return new

    def backup_ids(self) -> list[str]:
        base = self.base_folder()
        return sorted(p.name for p in base.iterdir()) if base.exists() else []

    def base_folder(self) -> Path:
        return self.s3.data / BUCKET / PREFIX / SERVER / "base"

    def objects_of(self, backup_id: str) -> list[str]:
        return sorted(p.name for p in (self.base_folder() / backup_id).iterdir())

    @contextlib.contextmanager
    def replaced(self, backup_id: str, name: str, body: bytes | None) -> Iterator[bytes]:
        """Object ``name`` of ``backup_id`` deleted (``body`` None) or overwritten through
        the S3 API (the server's listings stay true), put back afterwards; yields its
        original bytes."""
        client = s3_client(self.s3.url, self.credentials)
        key = f"{PREFIX}/{SERVER}/base/{backup_id}/{name}"
        original = bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        if body is None:
            client.delete_object(Bucket=BUCKET, Key=key)
        else:
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        try:
            yield original
        finally:
            client.put_object(Bucket=BUCKET, Key=key, Body=original)

    def restorer(self, parallel: int = 4) -> BaseBackupRestore:
        objects = S3BackupObjects(s3_client(self.s3.url, self.credentials), BUCKET)
        return BaseBackupRestore(objects, PREFIX, SERVER, parallel=parallel, user=self.user)

    def fresh(self, name: str) -> tuple[Path, Path]:
        """An absent data directory and an absent tablespace directory, the server user
        able to create them."""
        folder = self.root / f"{name}-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        chown_tree(folder, self.user)
        return folder / "data", folder / "space"

    def restore(self, backup_id: str, name: str) -> tuple[Path, Path]:
        """Restore ``backup_id`` with :class:`BaseBackupRestore` into fresh folders."""
        data, space = self.fresh(name)
        self.restorer().restore(backup_id, data, tablespaces={"space": space})
        return data, space

    def barman_restore(self, backup_id: str) -> tuple[Path, Path]:
        import asyncio

        data, space = self.fresh("barman")
        result = asyncio.run(
            self.barman.run(
                [
                    self.barman.tool("barman-cloud-restore"),
                    "--endpoint-url",
                    self.s3.url,
                    "--tablespace",
                    f"space:{space}",
                    self.config.destination,
                    SERVER,
                    backup_id,
                    str(data),
                ],
                self.credentials,
                timeout=300,
            )
        )
        assert result.returncode == 0, result.error_text
        return data, space


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``: relative path -> (kind, permission bits, content hash or
    link target)."""
    found: dict[str, tuple[str, int, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        name = str(path.relative_to(root))
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            found[name] = ("link", 0, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[name] = ("dir", mode, "")
        else:
            found[name] = ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def owners(root: Path) -> set[int]:
    return {p.lstat().st_uid for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def rig(workdir: Path) -> Iterator[Rig]:
    with archived_instance(
        workdir,
        "baserestore",
        bucket=BUCKET,
        prefix=PREFIX,
        server=SERVER,
        wal_compression="gzip",
    ) as made:
        instance, user = made.instance, made.user
        tablespace = made.root / "tablespace"
        tablespace.mkdir(mode=0o700)
        chown_tree(tablespace, user)
        instance.server.start()
        with instance.connect() as conn:
            conn.execute(f"CREATE TABLESPACE space LOCATION '{tablespace}'")
            conn.execute("CREATE TABLE kept (n int, pad text)")
            conn.execute("CREATE TABLE spaced (n int, pad text) TABLESPACE space")
            for table in ("kept", "spaced"):
                conn.execute(
                    f"INSERT INTO {table} SELECT n, md5(n::text) || repeat('x', 200) "
                    "FROM generate_series(1, 30000) n"
                )
        yield Rig(
            made.root,
            made.s3,
            instance,
            made.barman,
            made.config,
            made.credentials,
            user,
            tablespace,
        )


@pytest.mark.parametrize(
    ("flags", "several"),
    [([], False), (["--snappy", "--max-archive-size", "2MB"], True), (["--gzip"], False)],
    ids=["one-part-uncompressed", "several-parts-snappy", "one-part-gzip"],
)
def test_restores_the_same_files_as_barman_cloud_restore(
    rig: Rig, flags: list[str], several: bool
) -> None:
    backup_id = rig.backup(*flags)
    objects = rig.objects_of(backup_id)
    data_parts = [name for name in objects if name.startswith("data")]
    assert (len(data_parts) > 2) is several, objects
    assert any(name.split(".")[0].split("_")[0].isdigit() for name in objects), objects

    data, space = rig.fresh("ours")
    result = rig.restorer().restore(backup_id, data, tablespaces={"space": space})

    reference_data, reference_space = rig.barman_restore(backup_id)
    assert tree(data) == {
        **tree(reference_data),
        # The link is where each restore put the tablespace.
        **{
            name: ("link", 0, str(space))
            for name, kind in tree(reference_data).items()
            if kind[0] == "link"
        },
    }
    assert tree(space) == tree(reference_space)
    assert (data / "backup_label").is_file() and (data / "global" / "pg_control").is_file()
    assert result.backup_id == backup_id
    assert result.parts == len([o for o in objects if ".tar" in o])
    expected_owner = {rig.user.uid} if rig.user else {os.geteuid()}
    assert owners(data) == expected_owner
    assert owners(space) == expected_owner


def test_a_missing_middle_part_fails_with_its_name(rig: Rig) -> None:
    backup_id = rig.backup("--max-archive-size", "1MB")
    parts = [name for name in rig.objects_of(backup_id) if name.startswith("data_")]
    assert len(parts) >= 2, rig.objects_of(backup_id)
    with rig.replaced(backup_id, parts[0], None), pytest.raises(RecoveryError) as raised:
        rig.restore(backup_id, "gap")
    assert raised.value.message == (
        f"base backup restore failed: {PREFIX}/{SERVER}/base/{backup_id}/{parts[0]} is "
        f"missing (the backup holds part {parts[1][5:9]} after it)"
    )
    # Refused before anything was written.
    assert not list(rig.root.glob("gap-*/data"))


def test_a_missing_last_part_fails_for_want_of_the_backup_label(rig: Rig) -> None:
    backup_id = rig.backup("--max-archive-size", "1MB")
    last = [name for name in rig.objects_of(backup_id) if name.startswith("data_")][-1]
    with rig.replaced(backup_id, last, None), pytest.raises(RecoveryError) as raised:
        rig.restore(backup_id, "lastgone")
    assert raised.value.message == (
        f"base backup restore failed: backup {backup_id!r} restored without backup_label, "
        "global/pg_control: a part of its data tar is missing"
    )


def test_a_missing_data_tar_and_a_damaged_part_fail_with_the_object_name(rig: Rig) -> None:
    backup_id = rig.backup("--snappy", "--max-archive-size", "2MB")
    key = f"{PREFIX}/{SERVER}/base/{backup_id}/data.tar.snappy"
    with (
        rig.replaced(backup_id, "data.tar.snappy", None) as original,
        pytest.raises(RecoveryError) as raised,
    ):
        rig.restore(backup_id, "nodata")
    assert raised.value.message == (
        f"base backup restore failed: {PREFIX}/{SERVER}/base/{backup_id}/data.tar* is "
        f"missing from the backup {backup_id!r}"
    )

    damaged = bytearray(original)
    middle = len(damaged) // 2
    damaged[middle : middle + 4096] = b"\xa5" * 4096
    with (
        rig.replaced(backup_id, "data.tar.snappy", bytes(damaged)),
        pytest.raises(RecoveryError) as raised,
    ):
        rig.restore(backup_id, "damaged")
    assert raised.value.message.startswith(f"base backup restore failed: cannot read {key}: ")

    with (
        rig.replaced(backup_id, "data.tar.snappy", original[: len(original) // 3]),
        pytest.raises(RecoveryError) as raised,
    ):
        rig.restore(backup_id, "truncated")
    assert raised.value.message.startswith(f"base backup restore failed: cannot read {key}: ")


def test_an_uncompressed_part_cut_between_two_members_fails(rig: Rig) -> None:
    backup_id = rig.backup("--max-archive-size", "1MB")
    name = next(n for n in rig.objects_of(backup_id) if n.startswith("data_"))
    key = f"{PREFIX}/{SERVER}/base/{backup_id}/{name}"
    with tarfile.open(rig.base_folder() / backup_id / name) as archive:
        second = archive.getmembers()[1]
    original = (rig.base_folder() / backup_id / name).read_bytes()
    # The first member ends on a block boundary: its header and data only, no end block.
    with (
        rig.replaced(backup_id, name, original[: second.offset]),
        pytest.raises(RecoveryError) as raised,
    ):
        rig.restore(backup_id, "cut")
    assert raised.value.message.startswith(
        f"base backup restore failed: {key} is damaged or truncated at byte {second.offset}"
    ), raised.value.message


def test_refuses_a_backup_that_is_absent_or_not_done_and_a_non_empty_target(rig: Rig) -> None:
    backup_id = rig.backup()
    restorer = rig.restorer()
    data, _ = rig.fresh("absent")
    with pytest.raises(RecoveryError) as raised:
        restorer.restore("20000101T000000", data)
    assert raised.value.message == (
        f"base backup restore failed: backup '20000101T000000' not found in {PREFIX}/{SERVER}"
    )

    data.mkdir()
    (data / "leftover").write_text("x")
    with pytest.raises(RecoveryError) as raised:
        restorer.restore(backup_id, data, tablespaces={"space": rig.root / "unused"})
    assert raised.value.message == (
        f"base backup restore failed: destination {data} already exists and is not empty"
    )
    assert sorted(p.name for p in data.iterdir()) == ["leftover"]

    info = rig.base_folder() / backup_id / "backup.info"
    text = info.read_text()
    info.write_text(text.replace("status=DONE", "status=FAILED"))
    try:
        fresh, _ = rig.fresh("failed")
        with pytest.raises(RecoveryError) as raised:
            restorer.restore(backup_id, fresh, tablespaces={"space": rig.root / "unused"})
        assert raised.value.message == (
            f"base backup restore failed: backup {backup_id!r} in {PREFIX}/{SERVER} is "
            "FAILED, not DONE"
        )
    finally:
        info.write_text(text)
