"""The parallel base backup producer's pieces: barman's path rules, the tar parts and their
uploads (against an in-memory object store), the WAL segments a backup needs and the wait
for them to be archived."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from barman.clients import cloud_compression  # type: ignore[import-untyped]
from barman.fs import path_allowed as barman_path_allowed  # type: ignore[import-untyped]
from barman.postgres_plumbing import (  # type: ignore[import-untyped]
    EXCLUDE_LIST,
    PGDATA_EXCLUDE_LIST,
)

from paas_pitr.engines.local import basebackup
from paas_pitr.engines.local.basebackup import Part, Rules, backup_segments, wait_for_wal


class MemoryStore:
    """The part of barman's cloud interface a :class:`Part` uses, in memory: a completed
    upload becomes ``objects[key]``, its chunks joined in part-number order."""

    MIN_CHUNK_SIZE = 64 << 10

    def __init__(self, fail_chunk: int | None = None) -> None:
        self.fail_chunk = fail_chunk
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.objects: dict[str, bytes] = {}
        self.aborted: list[str] = []
        self.lock = threading.Lock()

    def create_multipart_upload(self, key: str) -> dict[str, str]:
        with self.lock:
            upload_id = f"upload-{len(self.uploads)}"
            self.uploads[upload_id] = {}
        return {"UploadId": upload_id}

    def _upload_part(
        self, upload: dict[str, str], key: str, body: bytes, number: int
    ) -> dict[str, Any]:
        if number == self.fail_chunk:
            raise OSError("the store is down")
        with self.lock:
            self.uploads[upload["UploadId"]][number] = bytes(body)
        return {"PartNumber": number, "ETag": f"etag-{number}"}

    def _complete_multipart_upload(
        self, upload: dict[str, str], key: str, parts: list[dict[str, Any]]
    ) -> None:
        chunks = self.uploads.pop(upload["UploadId"])
        assert [p["PartNumber"] for p in parts] == sorted(chunks) == list(range(1, len(parts) + 1))
        self.objects[key] = b"".join(chunks[n] for n in sorted(chunks))

    def _abort_multipart_upload(self, upload: dict[str, str], key: str) -> None:
        self.uploads.pop(upload["UploadId"], None)
        self.aborted.append(key)


def _decompress(data: bytes, compression: str | None) -> bytes:
    if compression in ("snappy", "lz4"):
        return bytes(cloud_compression.get_compressor(compression).decompress(data))
    if compression == "gz":
        return gzip.decompress(data)
    if compression == "bz2":
        return bz2.decompress(data)
    return data


def _members(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        found: dict[str, bytes | None] = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isreg() else None
            found[member.name] = handle.read() if handle else None
        return found


@pytest.fixture
def uploads() -> Any:
    with ThreadPoolExecutor(2) as pool:
        yield pool


# --- barman's path rules ----------------------------------------------------------------


PATHS = [
    (".", True),
    ("PG_VERSION", False),
    ("./PG_VERSION", False),
    ("postmaster.pid", False),
    ("./postmaster.pid", False),
    ("pg_wal", True),
    ("pg_wal/000000010000000000000003", False),
    ("pg_wal/archive_status", True),
    ("pg_wal/archive_status/000000010000000000000003.ready", False),
    ("global/pg_control", False),
    ("global/pg_internal.init", False),
    ("base/16384/16385", False),
    ("base/16384/t3_16390", False),
    ("base/pgsql_tmp", True),
    ("base/pgsql_tmp/pgsql_tmp123.0", False),
    ("pg_stat_tmp", True),
    ("pg_stat_tmp/global.stat", False),
    ("log", True),
    ("log/postgresql.log", False),
    ("pg_tblspc/16400", False),
    ("PG_15_202209061", True),
    ("PG_15_202209061/16384/16385", False),
    ("PG_14_202107181", True),
    ("other", True),
]
RULE_SETS = [
    (PGDATA_EXCLUDE_LIST + EXCLUDE_LIST + ["/pg_tblspc/16400"], None),
    (["/*", *EXCLUDE_LIST], ["/PG_15_*"]),
    (["pg_wal/", "?og/*", "**/t*"], ["base/**"]),
]


@pytest.mark.parametrize(("exclude", "include"), RULE_SETS)
def test_compiled_rules_decide_as_barman_does(
    exclude: list[str], include: list[str] | None
) -> None:
    compiled_exclude, compiled_include = Rules(exclude), Rules(include)
    ours = [
        basebackup.path_allowed(compiled_exclude, compiled_include, path, is_dir)
        for path, is_dir in PATHS
    ]
    assert ours == [barman_path_allowed(exclude, include, path, is_dir) for path, is_dir in PATHS]


def test_the_data_directory_rules_keep_data_and_drop_what_postgresql_rebuilds() -> None:
    exclude, none = Rules(PGDATA_EXCLUDE_LIST + EXCLUDE_LIST), Rules(None)
    kept = [p for p, d in PATHS if basebackup.path_allowed(exclude, none, p, d)]
    assert "base/16384/16385" in kept
    assert "pg_wal" in kept  # the directory, not its segments
    assert "pg_wal/000000010000000000000003" not in kept
    assert "global/pg_control" not in kept  # copied last, on its own
    assert "postmaster.pid" not in kept


# --- tar parts ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["lz4", "snappy", "gz", "bz2", None])
def test_a_part_is_a_tar_barman_restores(
    tmp_path: Path, uploads: ThreadPoolExecutor, compression: str | None
) -> None:
    (tmp_path / "base").mkdir()
    big = os.urandom(300_000) * 5  # several reads and upload chunks
    (tmp_path / "base" / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(b"small file")
    (tmp_path / "empty").write_bytes(b"")
    store = MemoryStore()
    part = Part(store, "base/x/data.tar", compression, 1 << 20, uploads)

    assert part.add(str(tmp_path / "base"), "base")
    assert part.add(str(tmp_path / "base" / "big"), "base/big")
    assert part.add(str(tmp_path / "small"), "./small")
    assert part.add(str(tmp_path / "empty"), "./empty")
    assert not part.add(str(tmp_path / "vanished"), "./vanished")
    part.add_bytes("backup_label", b"START WAL LOCATION: 0/3000028\n", 70, 71)
    part.close()

    raw = _decompress(store.objects["base/x/data.tar"], compression)
    assert _members(raw) == {
        "base": None,
        "base/big": big,
        "./small": b"small file",
        "./empty": b"",
        "backup_label": b"START WAL LOCATION: 0/3000028\n",
    }
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        label = tar.getmember("backup_label")
        assert (label.uid, label.gid, label.mode) == (70, 71, 0o644)
        assert tar.getmember("base").isdir()
    # tarfile's own record padding: a whole number of 10 KiB records.
    assert len(raw) % tarfile.RECORDSIZE == 0


def test_a_part_is_uploaded_in_chunks_while_it_is_written(
    tmp_path: Path, uploads: ThreadPoolExecutor
) -> None:
    data = os.urandom(3 << 20)  # incompressible: ~3 MiB of lz4 output, 1 MiB per read
    (tmp_path / "f").write_bytes(data)
    store = MemoryStore()
    part = Part(store, "k", "lz4", 1 << 20, uploads)
    part.add(str(tmp_path / "f"), "f")
    # Every compressed read exceeds the store's smallest chunk: each went out already.
    assert len(part.chunks) == 3
    part.close()
    assert _members(_decompress(store.objects["k"], "lz4")) == {"f": data}
    assert part.size == len(store.objects["k"])


def test_an_lz4_part_carries_checksums_that_catch_a_damaged_byte(
    tmp_path: Path, uploads: ThreadPoolExecutor
) -> None:
    import lz4.frame  # type: ignore[import-untyped]

    (tmp_path / "f").write_bytes(bytes(range(256)) * 8192)
    store = MemoryStore()
    part = Part(store, "k", "lz4", 1 << 20, uploads)
    part.add(str(tmp_path / "f"), "f")
    part.close()
    data = store.objects["k"]

    info = lz4.frame.get_frame_info(data)
    assert (info["block_checksum"], info["content_checksum"]) == (True, True)
    # barman's own reader still reads it.
    assert _members(_decompress(data, "lz4")) == {"f": bytes(range(256)) * 8192}
    for where in (len(data) // 3, len(data) // 2, len(data) - 12):
        damaged = bytearray(data)
        damaged[where] ^= 0x5A
        with pytest.raises(RuntimeError, match="Checksum_invalid"):
            lz4.frame.decompress(bytes(damaged))


def test_a_file_that_changes_size_while_read_keeps_its_first_size(
    uploads: ThreadPoolExecutor,
) -> None:
    store = MemoryStore()
    part = Part(store, "k", None, 1 << 20, uploads)
    shrunk = tarfile.TarInfo("shrunk")
    shrunk.size = 10
    part.tar.addfile(shrunk, io.BytesIO(b"abc"))
    grown = tarfile.TarInfo("grown")
    grown.size = 3
    part.tar.addfile(grown, io.BytesIO(b"abcdef"))
    part.close()
    assert _members(store.objects["k"]) == {"shrunk": b"abc" + bytes(7), "grown": b"abc"}


def test_a_failed_chunk_fails_the_part_and_aborting_drops_its_upload(
    tmp_path: Path, uploads: ThreadPoolExecutor
) -> None:
    (tmp_path / "f").write_bytes(os.urandom(300_000))
    store = MemoryStore(fail_chunk=2)
    part = Part(store, "k", None, 1 << 20, uploads)
    part.add(str(tmp_path / "f"), "f")
    with pytest.raises(OSError, match="the store is down"):
        part.close()
    part.abort()
    assert store.aborted == ["k"]
    assert store.objects == {}


# --- the backup's WAL --------------------------------------------------------------------


def _info(begin_wal: str, end_xlog: str) -> SimpleNamespace:
    return SimpleNamespace(
        begin_wal=begin_wal,
        end_xlog=end_xlog,
        timeline=int(begin_wal[:8], 16),
        version=150000,
        xlog_segment_size=16 << 20,
    )


def test_a_backup_needs_its_segments_up_to_the_byte_before_its_end() -> None:
    begin = "000000010000000000000003"
    assert backup_segments(_info(begin, "0/5000100")) == [
        "000000010000000000000003",
        "000000010000000000000004",
        "000000010000000000000005",
    ]
    # An end at the very start of segment 6 needs nothing of it.
    assert backup_segments(_info(begin, "0/6000000")) == [
        "000000010000000000000003",
        "000000010000000000000004",
        "000000010000000000000005",
    ]
    assert backup_segments(_info("0000000200000001000000FF", "2/1000028")) == [
        "0000000200000001000000FF",
        "000000020000000200000000",
        "000000020000000200000001",
    ]


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    (tmp_path / "archive_status").mkdir(parents=True)
    return tmp_path


def _segment(wal_dir: Path, name: str, status: str | None) -> None:
    (wal_dir / name).write_bytes(b"wal")
    if status:
        (wal_dir / "archive_status" / f"{name}.{status}").touch()


def _recording(
    asked: list[tuple[str, str]], answer: tuple[int, str]
) -> Callable[[str, str], tuple[int, str]]:
    def request(socket: str, path: str) -> tuple[int, str]:
        asked.append((socket, path))
        return answer

    return request


def test_archived_segments_are_not_asked_for(wal_dir: Path) -> None:
    _segment(wal_dir, "000000010000000000000003", "done")
    asked: list[tuple[str, str]] = []
    # Segment 4 is gone from pg_wal: PostgreSQL removes only archived segments.
    wait_for_wal(
        wal_dir,
        ["000000010000000000000003", "000000010000000000000004"],
        "/run/archiver.sock",
        request=_recording(asked, (1, "unexpected")),
    )
    assert asked == []


def test_a_ready_segment_is_asked_of_the_archiver_until_it_is_stored(wal_dir: Path) -> None:
    _segment(wal_dir, "000000010000000000000003", "ready")
    answers = [(1, "S3 is down"), (0, "")]
    asked: list[tuple[str, str]] = []
    now = [0.0]

    def request(socket: str, path: str) -> tuple[int, str]:
        asked.append((socket, path))
        return answers.pop(0)

    def clock() -> float:
        now[0] += 0.25
        return now[0]

    wait_for_wal(
        wal_dir, ["000000010000000000000003"], "/run/a.sock", request=request, poll=0, clock=clock
    )
    path = str(wal_dir / "000000010000000000000003")
    assert asked == [("/run/a.sock", path), ("/run/a.sock", path)]
    assert answers == []


def test_without_an_archiver_the_wait_lasts_until_postgresql_archived(wal_dir: Path) -> None:
    name = "000000010000000000000003"
    _segment(wal_dir, name, "ready")
    status = wal_dir / "archive_status"

    def archive() -> None:
        time.sleep(0.3)
        (status / f"{name}.ready").rename(status / f"{name}.done")

    archiver = threading.Thread(target=archive)
    started = time.monotonic()
    archiver.start()
    wait_for_wal(wal_dir, [name], None, poll=0.01)
    archiver.join()
    assert time.monotonic() - started >= 0.3
    assert (status / f"{name}.done").exists()


def test_a_segment_not_yet_complete_is_never_sent_to_the_archiver(wal_dir: Path) -> None:
    name = "000000010000000000000003"
    _segment(wal_dir, name, None)  # being written: neither .ready nor .done yet
    asked: list[tuple[str, str]] = []

    def complete() -> None:
        time.sleep(0.2)
        (wal_dir / "archive_status" / f"{name}.done").touch()

    writer = threading.Thread(target=complete)
    writer.start()
    wait_for_wal(wal_dir, [name], "/run/a.sock", request=_recording(asked, (0, "")), poll=0.01)
    writer.join()
    assert asked == []
