"""The in-process base backup restore against an in-memory bucket: barman's layout
(``backup.info``, ``data.tar[.<ext>]`` and its ``_NNNN`` parts, one tar per tablespace),
every compression barman-cloud-backup writes, and each way a backup can be unusable."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from paas_pitr.engines.local.basebackup import TAR_PARTS_KEY
from paas_pitr.engines.local.baserestore import (
    BaseBackupRestore,
    ObjectMissing,
    UnsupportedLayout,
)
from paas_pitr.errors import ObjectStoreError, RecoveryError

BACKUP = "20260501T030000"
FOLDER = f"backups/db/base/{BACKUP}"
EXTENSIONS = {None: "", "gzip": ".gz", "bzip2": ".bz2", "lz4": ".lz4", "snappy": ".snappy"}


class MemoryObjects:
    """A bucket in memory; ``broken`` keys fail mid-read as a dropped connection does."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.broken: set[str] = set()
        self.opened: list[str] = []

    def sizes(self, prefix: str) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.objects.items()) if k.startswith(prefix)}

    def read(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def open(self, key: str) -> Any:
        if key not in self.objects:
            raise ObjectMissing(key)
        self.opened.append(key)
        body = self.objects[key]
        if key in self.broken:
            return BrokenStream(body[: len(body) // 2])
        return io.BytesIO(body)


class BrokenStream(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data:
            raise ObjectStoreError("connection reset by peer")
        return data


def compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "bzip2":
        return bz2.compress(data)
    if compression == "lz4":
        import lz4.frame  # type: ignore[import-untyped]

        return bytes(lz4.frame.compress(data))
    if compression == "snappy":
        import snappy  # type: ignore[import-untyped]

        return bytes(snappy.StreamCompressor().add_chunk(data))
    return data


def tar_of(entries: list[tuple[str, bytes | None]], mode: int = 0o600) -> bytes:
    """A tar of ``entries`` (name, content; ``None`` for a folder)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o700
                archive.addfile(info)
            else:
                info.size = len(content)
                info.mode = mode
                archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def backup_info(
    status: str = "DONE",
    *,
    tablespace: str | None = None,
    snapshots: bool = False,
    tar_parts: dict[str, int] | None = None,
) -> bytes:
    import barman.cloud  # type: ignore[import-untyped]  # noqa: F401  (breaks an import cycle)
    from barman.infofile import BackupInfo, Tablespace  # type: ignore[import-untyped]

    info = BackupInfo(
        BACKUP,
        status=status,
        version=150004,
        tablespaces=[Tablespace("space", 16384, tablespace)] if tablespace else None,
    )
    if tar_parts is not None:
        # As the parallel producer records them.
        info.set_attribute("copy_stats", {"total_time": 1.0, TAR_PARTS_KEY: tar_parts})
    out = io.BytesIO()
    info.save(file_object=out)
    text = out.getvalue()
    if snapshots:
        text += b"snapshots_info={'provider': 'aws', 'snapshots': []}\n"
    return text


# The data directory's files, split over three parts; a tablespace of one.
DATA_PARTS: list[list[tuple[str, bytes | None]]] = [
    [("base", None), ("base/1", None), ("base/1/1259", b"a" * 70_000), ("PG_VERSION", b"15\n")],
    [("base/1/2608", bytes(range(256)) * 4000), ("global", None), ("pg_tblspc", None)],
    [("global/pg_control", b"c" * 8192), ("backup_label", b"START WAL LOCATION: 0/2\n")],
]
SPACE = [
    ("PG_15_202209061", None),
    ("PG_15_202209061/5", None),
    ("PG_15_202209061/5/16390", b"t" * 9000),
]


def store_backup(
    objects: MemoryObjects, compression: str | None, *, tablespace: Path | None = None
) -> None:
    ext = EXTENSIONS[compression]
    objects.objects[f"{FOLDER}/backup.info"] = backup_info(
        tablespace=str(tablespace) if tablespace else None
    )
    for number, entries in enumerate(DATA_PARTS):
        name = "data" if number == 0 else f"data_{number:04d}"
        objects.objects[f"{FOLDER}/{name}.tar{ext}"] = compress(tar_of(entries), compression)
    if tablespace:
        objects.objects[f"{FOLDER}/16384.tar{ext}"] = compress(tar_of(SPACE), compression)


def restorer(objects: MemoryObjects, parallel: int = 4) -> BaseBackupRestore:
    return BaseBackupRestore(objects, "backups", "db", parallel=parallel, user=None)


def files(root: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(root)): (
            p.read_bytes() if p.is_file() and not p.is_symlink() else f"dir {p.is_symlink()}"
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("compression", list(EXTENSIONS))
@pytest.mark.parametrize("parallel", [1, 4])
def test_every_part_of_every_tar_is_extracted(
    tmp_path: Path, compression: str | None, parallel: int
) -> None:
    objects = MemoryObjects()
    store_backup(objects, compression, tablespace=tmp_path / "recorded")
    data, space = tmp_path / "data", tmp_path / "space"

    result = restorer(objects, parallel).restore(BACKUP, data, tablespaces={"space": space})

    expected = {name: content for part in DATA_PARTS for name, content in part if content}
    restored = files(data)
    assert {k: v for k, v in restored.items() if isinstance(v, bytes)} == expected
    assert sorted(k for k, v in restored.items() if not isinstance(v, bytes)) == [
        "base",
        "base/1",
        "global",
        "pg_tblspc",
        "pg_tblspc/16384",
        "pg_wal",
    ]
    assert (data / "pg_tblspc" / "16384").readlink() == space
    assert files(space)["PG_15_202209061/5/16390"] == b"t" * 9000
    assert not (tmp_path / "recorded").exists()
    assert stat.S_IMODE((data / "base" / "1" / "1259").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "base").stat().st_mode) == 0o700
    assert (data / "base" / "1" / "1259").stat().st_mtime == 1_700_000_000
    assert result.parts == 4
    assert result.bytes_extracted == sum(len(v) for v in expected.values()) + 9000
    assert result.bytes_stored == sum(len(v) for k, v in objects.objects.items() if ".tar" in k)
    if parallel == 1:
        # The largest object first: the pool ends when its longest part does.
        sizes = {k: len(v) for k, v in objects.objects.items() if ".tar" in k}
        assert objects.opened == sorted(sizes, key=lambda k: -sizes[k])


def test_a_gap_in_the_parts_is_named_before_anything_is_written(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, "gzip")
    del objects.objects[f"{FOLDER}/data_0001.tar.gz"]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: {FOLDER}/data_0001.tar.gz is missing (the backup "
        "holds part 0002 after it)"
    )
    assert not (tmp_path / "data").exists()
    assert objects.opened == []


def test_a_missing_last_part_leaves_no_backup_label(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    del objects.objects[f"{FOLDER}/data_0002.tar"]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: backup {BACKUP!r} restored without backup_label, "
        "global/pg_control: a part of its data tar is missing"
    )


def test_a_missing_data_tar_is_named(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, "lz4")
    del objects.objects[f"{FOLDER}/data.tar.lz4"]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: {FOLDER}/data.tar* is missing from the backup {BACKUP!r}"
    )


def test_a_part_of_unknown_compression_is_named(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, "gzip")
    objects.objects[f"{FOLDER}/data_0003.tar.zst"] = b"?"

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: {FOLDER}/data_0003.tar.zst: not a tar part of a known "
        "compression"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            "FAILED",
            f"base backup restore failed: backup {BACKUP!r} in backups/db is FAILED, not DONE",
        ),
        (
            "STARTED",
            f"base backup restore failed: backup {BACKUP!r} in backups/db is STARTED, not DONE",
        ),
        (None, f"base backup restore failed: backup {BACKUP!r} not found in backups/db"),
    ],
)
def test_only_a_done_backup_is_restored(tmp_path: Path, status: str | None, expected: str) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    if status is None:
        del objects.objects[f"{FOLDER}/backup.info"]
    else:
        objects.objects[f"{FOLDER}/backup.info"] = backup_info(status)

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == expected
    assert objects.opened == []


def test_a_non_empty_target_is_refused(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None, tablespace=tmp_path / "space")
    (tmp_path / "space").mkdir()
    (tmp_path / "space" / "old").write_bytes(b"x")

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: destination {tmp_path / 'space'} already exists and "
        "is not empty"
    )
    assert not (tmp_path / "data").exists()


def test_a_snapshot_backup_is_left_to_barman_cloud_restore(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    objects.objects[f"{FOLDER}/backup.info"] = backup_info(snapshots=True)

    with pytest.raises(UnsupportedLayout):
        restorer(objects).restore(BACKUP, tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "lz4", "snappy"])
def test_a_truncated_compressed_part_is_named(tmp_path: Path, compression: str) -> None:
    objects = MemoryObjects()
    store_backup(objects, compression)
    key = f"{FOLDER}/data_0001.tar{EXTENSIONS[compression]}"
    objects.objects[key] = objects.objects[key][:-40]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message.startswith(f"base backup restore failed: cannot read {key}: ")


def test_a_part_without_its_end_of_archive_block_is_named(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    key = f"{FOLDER}/data_0001.tar"
    whole = objects.objects[key]
    # Its first member: a header and 1 MiB of data; what follows is the second header.
    first = 512 + len(bytes(range(256)) * 4000) + 512 - len(bytes(range(256)) * 4000) % 512
    objects.objects[key] = whole[:first]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message.startswith(
        f"base backup restore failed: {key} is damaged or truncated at byte {first} of its tar"
    ), raised.value.message


def test_data_after_a_zero_block_is_a_damaged_part_not_its_end(tmp_path: Path) -> None:
    """A stream that decompresses out of step can put a block of zeros (a page of a
    relation) where a header is expected: tar's end marker, with the rest of the data
    after it."""
    objects = MemoryObjects()
    store_backup(objects, None)
    key = f"{FOLDER}/data_0001.tar"
    whole = objects.objects[key]
    first = 512 + len(bytes(range(256)) * 4000) + 512 - len(bytes(range(256)) * 4000) % 512
    objects.objects[key] = whole[:first] + bytes(512) + whole[first:]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: {key} is damaged: its tar ends at byte {first} "
        f"but data follows at byte {first + 512}"
    )


def test_a_download_failing_midway_is_named_and_stops_the_others(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    key = f"{FOLDER}/data_0001.tar"
    objects.broken.add(key)

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: cannot read {key}: ObjectStoreError: connection reset by peer"
    )
    assert isinstance(raised.value.__cause__, ObjectStoreError)


def test_a_member_outside_the_target_is_refused(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    key = f"{FOLDER}/data_0001.tar"
    objects.objects[key] = tar_of([("../escaped", b"x")])

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == (
        f"base backup restore failed: {key} holds '../escaped', outside the target directory"
    )
    assert not (tmp_path / "escaped").exists()


def tar_with_links(entries: list[tuple[str, str, str]]) -> bytes:
    """A tar of (kind, name, link or content) entries, kind ``sym``, ``hard``, ``dir``
    or ``file``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for kind, name, value in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size = len(value)
                info.mode = 0o600
                archive.addfile(info, io.BytesIO(value.encode()))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o777
                archive.addfile(info)
                continue
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = value
            archive.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize(
    ("entries", "beneath"),
    [
        # A file written through a symbolic link to an absolute folder outside.
        ([("sym", "evil", "{outside}"), ("file", "evil/pwned", "x")], "evil"),
        # The same through a relative link that climbs out of the target.
        ([("sym", "up", "../../outside"), ("file", "up/pwned", "x")], "up"),
        # A hard link whose source is reached through a symbolic link.
        ([("sym", "ev", "{outside}"), ("hard", "h", "ev/victim"), ("file", "h", "x")], "ev"),
        # A folder member where a symbolic link of that name already stands.
        ([("sym", "spool", "{outside}"), ("dir", "spool", ""), ("file", "spool/x", "x")], "spool"),
    ],
)
def test_a_member_beneath_a_symbolic_link_is_refused_and_nothing_outside_changes(
    tmp_path: Path, entries: list[tuple[str, str, str]], beneath: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("ORIGINAL")
    mode = outside.stat().st_mode
    objects = MemoryObjects()
    store_backup(objects, None)
    key = f"{FOLDER}/data_0001.tar"
    objects.objects[key] = tar_with_links(
        [(kind, name, value.format(outside=outside)) for kind, name, value in entries]
    )
    target = tmp_path / "restore" / "data"

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, target)

    assert raised.value.message.startswith(
        f"base backup restore failed: {key} holds a member beneath {beneath!r}, which is not "
        "a folder of the target directory"
    ), raised.value.message
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "ORIGINAL"
    assert outside.stat().st_mode == mode


def test_a_symbolic_link_member_itself_is_restored_as_a_link(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    key = f"{FOLDER}/data_0001.tar"
    objects.objects[key] = tar_with_links(
        [
            ("file", "conf/a.conf", "a"),
            ("sym", "conf/b.conf", "a.conf"),
            ("hard", "c", "conf/a.conf"),
        ]
    )
    target = tmp_path / "data"

    restorer(objects).restore(BACKUP, target)

    assert os.readlink(target / "conf" / "b.conf") == "a.conf"
    assert (target / "c").read_text() == "a"
    assert (target / "c").stat().st_ino == (target / "conf" / "a.conf").stat().st_ino


@pytest.mark.parametrize(
    ("lost", "expected"),
    [
        # A tablespace's last part: no gap is left and it holds no pg_control.
        (
            "16384_0001.tar",
            "16384_0001.tar is missing (backup.info records 2 parts of 16384.tar, 1 found)",
        ),
        (
            "data_0002.tar",
            "data_0002.tar is missing (backup.info records 3 parts of data.tar, 2 found)",
        ),
    ],
)
def test_a_lost_last_part_is_found_from_the_recorded_part_counts(
    tmp_path: Path, lost: str, expected: str
) -> None:
    objects = MemoryObjects()
    store_backup(objects, None, tablespace=tmp_path / "space")
    objects.objects[f"{FOLDER}/16384_0001.tar"] = tar_of([("PG_15_202209061/5/16391", b"u")])
    objects.objects[f"{FOLDER}/backup.info"] = backup_info(
        tablespace=str(tmp_path / "space"), tar_parts={"data": 3, "16384": 2}
    )
    del objects.objects[f"{FOLDER}/{lost}"]

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert raised.value.message == f"base backup restore failed: {FOLDER}/{expected}"
    assert objects.opened == []


def test_recorded_part_counts_that_match_restore(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None, tablespace=tmp_path / "space")
    objects.objects[f"{FOLDER}/backup.info"] = backup_info(
        tablespace=str(tmp_path / "space"), tar_parts={"data": 3, "16384": 1}
    )

    result = restorer(objects).restore(BACKUP, tmp_path / "data")

    assert result.parts == 4
    assert (tmp_path / "space" / "PG_15_202209061" / "5" / "16390").read_bytes() == b"t" * 9000


def test_a_pg_tblspc_link_member_cannot_send_the_tablespace_link_outside(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    objects = MemoryObjects()
    store_backup(objects, None, tablespace=tmp_path / "space")
    # The data tar's folder "pg_tblspc" replaced by a link to a folder outside.
    objects.objects[f"{FOLDER}/data_0001.tar"] = tar_with_links(
        [("file", "base/1/2608", "x"), ("sym", "pg_tblspc", str(outside))]
    )

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data")

    assert "beneath 'pg_tblspc', which is not a folder of the target directory" in (
        raised.value.message
    ), raised.value.message
    assert list(outside.iterdir()) == []


def test_a_stopped_restore_ends_with_an_error(tmp_path: Path) -> None:
    objects = MemoryObjects()
    store_backup(objects, None)
    stop = threading.Event()
    stop.set()

    with pytest.raises(RecoveryError) as raised:
        restorer(objects).restore(BACKUP, tmp_path / "data", stop=stop)

    assert raised.value.message == f"base backup restore of {BACKUP!r} stopped before its end"
    assert objects.opened == []
