"""The WAL archiver's bookkeeping, with an in-memory uploader: a segment is answered
``stored`` only after its upload returned, a read-ahead never uploads a segment whose
``.ready`` vanished, and a failed upload is reported, never remembered as stored."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from paas_pitr.engines.local.walarchiver import (
    Archiver,
    FolderStore,
    Uploader,
    is_segment,
    unsigned_payload_is_safe,
)

SEGMENT = "000000010000000000000003"


class MemoryUploader:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def read(self, handle: BinaryIO) -> BinaryIO:
        return io.BytesIO(handle.read())

    def store(self, path: str, body: BinaryIO) -> None:
        self.started.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.objects[Path(path).name] = body.read()


def _pgdata(tmp_path: Path, *names: str, ready: bool = True) -> Path:
    status = tmp_path / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    for name in names:
        (tmp_path / "pg_wal" / name).write_bytes(name.encode())
        if ready:
            (status / f"{name}.ready").touch()
    return tmp_path


def test_is_segment() -> None:
    assert is_segment(SEGMENT)
    assert not is_segment("00000002.history")
    assert not is_segment(f"{SEGMENT}.partial")
    assert not is_segment("00000001000000000000000a")


def test_archive_returns_only_once_the_upload_returned(tmp_path: Path) -> None:
    uploader = MemoryUploader()
    uploader.gate.clear()
    archiver = Archiver(_pgdata(tmp_path, SEGMENT), uploader, jobs=2)
    answered = threading.Event()

    def ask() -> None:
        archiver.archive(str(tmp_path / "pg_wal" / SEGMENT))
        answered.set()

    thread = threading.Thread(target=ask)
    thread.start()
    assert uploader.started.wait(5)
    assert not answered.wait(0.3)
    assert uploader.objects == {}
    uploader.gate.set()
    thread.join(5)
    assert answered.is_set()
    assert uploader.objects == {SEGMENT: SEGMENT.encode()}
    archiver.close()


def test_a_failed_upload_is_reported_and_not_remembered(tmp_path: Path) -> None:
    uploader = MemoryUploader()
    uploader.fail = OSError("bucket unreachable")
    archiver = Archiver(_pgdata(tmp_path, SEGMENT), uploader, jobs=1)
    with pytest.raises(OSError, match="bucket unreachable"):
        archiver.archive(str(tmp_path / "pg_wal" / SEGMENT))
    assert SEGMENT not in archiver.stored
    uploader.fail = None
    archiver.archive(str(tmp_path / "pg_wal" / SEGMENT))
    assert uploader.objects == {SEGMENT: SEGMENT.encode()}
    archiver.close()


def test_read_ahead_skips_a_segment_whose_ready_file_vanished(tmp_path: Path) -> None:
    uploader = MemoryUploader()
    archiver = Archiver(_pgdata(tmp_path, SEGMENT, ready=False), uploader, jobs=1)
    assert archiver._upload(SEGMENT, ahead=True) is False
    assert uploader.objects == {}
    assert SEGMENT not in archiver.stored
    # Asked for by PostgreSQL, it is uploaded whatever the status files say.
    archiver.archive(str(tmp_path / "pg_wal" / SEGMENT))
    assert uploader.objects == {SEGMENT: SEGMENT.encode()}
    archiver.close()


def test_read_ahead_uploads_ready_segments_then_answers_from_memory(tmp_path: Path) -> None:
    names = [f"0000000100000000000000{n:02X}" for n in range(3, 7)]
    uploader = MemoryUploader()
    archiver = Archiver(_pgdata(tmp_path, *names), uploader, jobs=2)
    thread = threading.Thread(target=archiver.read_ahead, daemon=True)
    thread.start()
    archiver.wakeup.set()
    deadline = threading.Event()
    for _ in range(100):
        if len(uploader.objects) == len(names):
            break
        deadline.wait(0.05)
    assert sorted(uploader.objects) == names
    uploader.fail = OSError("must not upload again")
    for name in names:
        archiver.archive(str(tmp_path / "pg_wal" / name))
    archiver.close()


def test_a_path_outside_pg_wal_is_refused(tmp_path: Path) -> None:
    archiver = Archiver(_pgdata(tmp_path, SEGMENT), MemoryUploader(), jobs=1)
    (tmp_path / SEGMENT).write_bytes(b"x")
    with pytest.raises(ValueError, match="is not in"):
        archiver.archive(str(tmp_path / SEGMENT))
    archiver.close()


def test_a_stored_name_whose_file_changed_is_uploaded_again(tmp_path: Path) -> None:
    uploader = MemoryUploader()
    archiver = Archiver(_pgdata(tmp_path, SEGMENT), uploader, jobs=1)
    assert archiver._upload(SEGMENT, ahead=True) is True
    # Another file under the same name: "stored" is not answered from memory.
    path = tmp_path / "pg_wal" / SEGMENT
    path.unlink()
    path.write_bytes(b"other bytes, other inode")
    archiver.archive(str(path))
    assert uploader.objects == {SEGMENT: b"other bytes, other inode"}
    archiver.close()


def test_a_name_that_is_no_wal_file_is_refused(tmp_path: Path) -> None:
    archiver = Archiver(_pgdata(tmp_path), MemoryUploader(), jobs=1)
    (tmp_path / "pg_wal" / "postgresql.conf").write_bytes(b"x")
    with pytest.raises(ValueError, match="invalid name for a WAL file"):
        archiver.archive(str(tmp_path / "pg_wal" / "postgresql.conf"))
    archiver.close()


def test_only_plain_http_to_this_machine_sends_bodies_unsigned() -> None:
    assert unsigned_payload_is_safe("http://127.0.0.1:9000")
    assert unsigned_payload_is_safe("http://localhost:9000/")
    assert unsigned_payload_is_safe("http://[::1]:9000")
    assert not unsigned_payload_is_safe("https://127.0.0.1:9000")
    assert not unsigned_payload_is_safe("http://10.0.0.5:9000")
    assert not unsigned_payload_is_safe("http://s3.example.test")
    assert not unsigned_payload_is_safe("http://")


@pytest.mark.parametrize("compression", ["snappy", "gzip", "lz4", None])
def test_the_body_read_from_the_file_is_what_barman_writes_and_reads_back(
    tmp_path: Path, compression: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from barman.clients.cloud_compression import (  # type: ignore[import-untyped]
        compress,
        decompress_to_file,
    )

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    uploader = Uploader("s3://bucket/wal", "db", "http://127.0.0.1:9", compression)
    segment = tmp_path / SEGMENT
    data = bytes(range(256)) * 4096 + b"\0" * 2**20
    segment.write_bytes(data)
    with segment.open("rb") as handle:
        body = uploader.read(handle).read()
    if compression is None:
        assert body == data
        return
    if compression != "gzip":  # gzip's header carries the time of writing
        assert body == compress(io.BytesIO(data), compression, None).getvalue()
    restored = io.BytesIO()
    decompress_to_file(io.BytesIO(body), restored, compression)
    assert restored.getvalue() == data


# --- writing into the served folder ---------------------------------------------------------


class KeyedMemoryUploader(MemoryUploader):
    """Segments in ``<first 16 characters>/<name>.gz``, as barman keys them."""

    def key_in_wals(self, path: str) -> tuple[str, str]:
        name = Path(path).name
        return (name[:16], f"{name}.gz") if is_segment(name) else ("", name)


@pytest.fixture
def wals(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    folder = tmp_path / "wals"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield folder, fd
    finally:
        os.close(fd)


def test_a_segment_is_written_at_its_key_and_nothing_else_is_left(
    wals: tuple[Path, int],
) -> None:
    folder, fd = wals
    fallback = KeyedMemoryUploader()
    store = FolderStore(fd, fallback)

    store.store(f"/pg_wal/{SEGMENT}", io.BytesIO(b"compressed segment"))
    store.store("/pg_wal/00000002.history", io.BytesIO(b"1\t0/3000000\tbefore\n"))

    assert {
        str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    } == {
        f"{SEGMENT[:16]}/{SEGMENT}.gz": b"compressed segment",
        "00000002.history": b"1\t0/3000000\tbefore\n",
    }
    assert stat.S_IMODE((folder / SEGMENT[:16] / f"{SEGMENT}.gz").stat().st_mode) == 0o600
    assert fallback.objects == {}


def test_a_failed_write_leaves_no_temporary_file_and_goes_over_http(
    wals: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, fd = wals
    fallback = KeyedMemoryUploader()
    store = FolderStore(fd, fallback)
    real_fsync = os.fsync

    def failing_fsync(descriptor: int) -> None:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing_fsync)

    store.store(f"/pg_wal/{SEGMENT}", io.BytesIO(b"compressed segment"))

    assert [p.name for p in (folder / SEGMENT[:16]).iterdir()] == []
    assert fallback.objects == {SEGMENT: b"compressed segment"}


def test_a_folder_it_cannot_write_into_sends_the_segment_over_http(
    wals: tuple[Path, int],
) -> None:
    folder, fd = wals
    # Where the segment folder should be, something that is not a folder.
    (folder / SEGMENT[:16]).write_bytes(b"")
    fallback = KeyedMemoryUploader()

    FolderStore(fd, fallback).store(f"/pg_wal/{SEGMENT}", io.BytesIO(b"segment"))

    assert fallback.objects == {SEGMENT: b"segment"}


def test_a_stored_object_is_replaced_whole(wals: tuple[Path, int]) -> None:
    folder, fd = wals
    store = FolderStore(fd, KeyedMemoryUploader())
    store.store(f"/pg_wal/{SEGMENT}", io.BytesIO(b"first"))
    store.store(f"/pg_wal/{SEGMENT}", io.BytesIO(b"second, longer"))
    assert (folder / SEGMENT[:16] / f"{SEGMENT}.gz").read_bytes() == b"second, longer"
    assert len(list((folder / SEGMENT[:16]).iterdir())) == 1


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 3 * 4096 + 5, (16 << 20) + 12_345])
@pytest.mark.parametrize("direct", [True, False])
def test_a_segment_of_any_size_is_written_whole_with_or_without_direct_io(
    wals: tuple[Path, int], monkeypatch: pytest.MonkeyPatch, size: int, direct: bool
) -> None:
    folder, fd = wals
    if not direct:
        real_fcntl = fcntl.fcntl

        def no_direct_io(descriptor: int, command: int, arg: int = 0) -> int:
            if command == fcntl.F_SETFL and arg & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return int(real_fcntl(descriptor, command, arg))

        monkeypatch.setattr(fcntl, "fcntl", no_direct_io)
    body = os.urandom(size)
    store = FolderStore(fd, KeyedMemoryUploader())

    store.store(f"/pg_wal/{SEGMENT}", io.BytesIO(body))
    store.store(f"/pg_wal/{SEGMENT}", io.BytesIO(body[::-1]))  # the thread's buffer again

    assert (folder / SEGMENT[:16] / f"{SEGMENT}.gz").read_bytes() == body[::-1]


def test_an_earlier_archivers_temporary_files_are_removed_and_the_servers_are_not(
    wals: tuple[Path, int],
) -> None:
    folder, fd = wals
    (folder / SEGMENT[:16]).mkdir()
    ours = [
        folder / SEGMENT[:16] / f".rclone_temp_put_{SEGMENT}.gz.0123456789abcdef",
        folder / ".rclone_temp_put_00000002.history.fedcba9876543210",
    ]
    servers = folder / SEGMENT[:16] / ".rclone_temp_put_7cb653a0-46a0-4bd9-a06e-99558a10c842"
    stored = folder / SEGMENT[:16] / f"{SEGMENT}.gz"
    for path in [*ours, servers, stored]:
        path.write_bytes(b"x")

    assert FolderStore(fd, KeyedMemoryUploader()).remove_leftovers() == 2

    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == sorted(
        [servers.name, stored.name]
    )
