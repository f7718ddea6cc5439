"""The restore prefetcher with an in-memory S3: barman's layout and decompressors, markers
for files in flight and files the archive does not hold, the history list, and a window
that follows replay for the whole recovery."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from paas_pitr.engines.local import walfetch
from paas_pitr.engines.local.walfetch import Fetcher, Prefetcher, following

PREFIX = "acme/app-1/db/wals/"


def test_following_rolls_over_the_log_file() -> None:
    assert following("0000000100000000000000FE", 3) == [
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]


class FakeS3:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.gets: list[str] = []
        self.lists = 0

    def list_objects_v2(self, Bucket: str, Prefix: str, **kw: Any) -> dict[str, Any]:  # noqa: N803
        self.lists += 1
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        if kw.get("Delimiter") == "/":
            keys = [k for k in keys if "/" not in k[len(Prefix) :]]
        return {"Contents": [{"Key": k} for k in keys]}

    def get_paginator(self, operation: str) -> Any:
        outer = self

        class Pages:
            def paginate(self, **kw: Any) -> list[dict[str, Any]]:
                return [outer.list_objects_v2(**kw)]

        return Pages()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        self.gets.append(Key)
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def _key(name: str, suffix: str = ".gz") -> str:
    return f"{PREFIX}{name[:16]}/{name}{suffix}"


def test_fetch_decompresses_into_the_spool_and_reuses_the_suffix(tmp_path: Path) -> None:
    first, second = "000000010000000000000003", "000000010000000000000004"
    client = FakeS3({_key(first): gzip.compress(b"one"), _key(second): gzip.compress(b"two")})
    fetcher = Fetcher(client, "b", PREFIX, tmp_path)
    assert fetcher.fetch(first)
    assert fetcher.fetch(second)
    assert (tmp_path / first).read_bytes() == b"one"
    assert (tmp_path / second).read_bytes() == b"two"
    # The first needed a LIST to learn the suffix; the second went straight to its key.
    assert client.lists == 1
    assert client.gets == [_key(first), _key(second)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first, second]


@pytest.mark.parametrize("compression", ["snappy", "lz4", "bzip2"])
def test_fetch_reads_every_barman_compression(tmp_path: Path, compression: str) -> None:
    from barman.clients.cloud_compression import compress  # type: ignore[import-untyped]

    name = "000000010000000000000005"
    suffix = {"snappy": ".snappy", "lz4": ".lz4", "bzip2": ".bz2"}[compression]
    body = compress(io.BytesIO(b"wal bytes" * 1000), compression, None).getvalue()
    fetcher = Fetcher(FakeS3({_key(name, suffix): body}), "b", PREFIX, tmp_path)
    assert fetcher.fetch(name)
    assert (tmp_path / name).read_bytes() == b"wal bytes" * 1000


def test_a_file_the_archive_lacks_is_marked_missing(tmp_path: Path) -> None:
    name = "000000010000000000000006"
    fetcher = Fetcher(FakeS3({_key(name, ".unknown"): b"?"}), "b", PREFIX, tmp_path)
    assert not fetcher.fetch(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".missing-{name}"]


def test_fetch_skips_what_another_fetch_holds(tmp_path: Path) -> None:
    name = "000000010000000000000007"
    (tmp_path / f".inflight-{name}").mkdir()
    client = FakeS3({_key(name): gzip.compress(b"x")})
    assert Fetcher(client, "b", PREFIX, tmp_path).fetch(name)
    assert client.gets == []
    assert (tmp_path / f".inflight-{name}").exists()


def test_histories_are_listed_from_the_top_of_the_wal_folder(tmp_path: Path) -> None:
    client = FakeS3(
        {
            f"{PREFIX}00000002.history.gz": b"",
            f"{PREFIX}00000003.history": b"",
            _key("000000020000000000000001"): b"",
        }
    )
    assert Fetcher(client, "b", PREFIX, tmp_path).histories() == [
        "00000002.history",
        "00000003.history",
    ]


def test_the_prefetcher_follows_replay_and_stops_with_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walfetch, "POLL_SECONDS", 0.005)
    spool, pgdata = tmp_path / "spool", tmp_path / "data"
    spool.mkdir()
    pgdata.mkdir()
    (pgdata / "recovery.signal").touch()
    (spool / ".prefetcher").mkdir()
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 12)]
    objects = {_key(n): gzip.compress(n.encode()) for n in names}
    objects[f"{PREFIX}00000002.history.gz"] = gzip.compress(b"1\t0/3000000\tno reason\n")
    client = FakeS3(objects)
    prefetcher = Prefetcher(Fetcher(client, "b", PREFIX, spool), pgdata, depth=3, jobs=2)
    thread = threading.Thread(target=prefetcher.run)
    thread.start()

    def spooled() -> set[str]:
        return {p.name for p in spool.iterdir() if not p.name.startswith(".")}

    def settle(expected: set[str]) -> None:
        deadline = time.monotonic() + 5
        while spooled() != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert spooled() == expected

    settle({"00000002.history"})
    deadline = time.monotonic() + 5
    while not (spool / ".histories").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (spool / ".histories").read_text() == "00000002.history\n"
    assert (spool / ".prefetcher" / "pid").exists()
    (spool / ".wanted").write_text(names[0])
    settle({"00000002.history", *names[0:4]})
    # Replay consumes them and asks further: the one asked and the window after it are
    # fetched, consumed ones are not fetched again.
    for name in names[0:4]:
        (spool / name).unlink()
    (spool / ".wanted").write_text(names[4])
    settle({"00000002.history", *names[4:8]})
    assert client.gets.count(_key(names[1])) == 1
    (pgdata / "recovery.signal").unlink()
    thread.join(5)
    assert not thread.is_alive()
    assert not (spool / ".prefetcher").exists()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_prefetcher_ends_once_its_postmaster_is_gone_past_a_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock.monotonic)
    spool, pgdata = tmp_path / "spool", tmp_path / "data"
    (spool / ".prefetcher").mkdir(parents=True)
    pgdata.mkdir()
    (pgdata / "recovery.signal").touch()
    (spool / ".prefetcher" / "pid").write_text(str(os.getpid()))
    prefetcher = Prefetcher(Fetcher(FakeS3({}), "b", PREFIX, spool), pgdata, depth=1, jobs=1)
    asked = time.time()

    # Started before the server: no postmaster.pid yet, within the grace.
    clock.now += walfetch.POSTMASTER_GRACE_SECONDS
    assert prefetcher.still_needed(asked)
    # The server runs (this test's own PID stands for the postmaster).
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n")
    clock.now += walfetch.POSTMASTER_GRACE_SECONDS
    assert prefetcher.still_needed(asked)
    # It died without removing its file: a PID no process has.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (pgdata / "postmaster.pid").write_text(f"{dead.pid}\n{pgdata}\n")
    clock.now += walfetch.POSTMASTER_GRACE_SECONDS
    assert prefetcher.still_needed(asked)
    clock.now += walfetch.POSTMASTER_CHECK_SECONDS
    assert not prefetcher.still_needed(asked)


def test_postmaster_alive_reads_the_pid_file(tmp_path: Path) -> None:
    assert not walfetch.postmaster_alive(tmp_path)
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert not walfetch.postmaster_alive(tmp_path)
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n/data\n")
    assert walfetch.postmaster_alive(tmp_path)


def test_stopping_takes_the_lock_and_spares_a_reused_pid(tmp_path: Path) -> None:
    lock = tmp_path / ".prefetcher"
    assert walfetch.stop_prefetcher(tmp_path) is None
    other = subprocess.Popen(["sleep", "30"])
    try:
        lock.mkdir()
        (lock / "pid").write_text(str(other.pid))
        assert walfetch.stop_prefetcher(tmp_path) is None
        assert not lock.exists()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# --- reading the folder the embedded S3 server serves ----------------------------------------


@pytest.fixture
def archive_objects() -> dict[str, bytes]:
    return {
        _key("000000010000000000000003"): gzip.compress(b"three"),
        _key("000000010000000000000004"): gzip.compress(b"four"),
        _key("000000020000000100000000"): gzip.compress(b"next log"),
        f"{PREFIX}00000002.history.gz": gzip.compress(b"1\t0/3000000\tno reason\n"),
        f"{PREFIX}00000003.history": b"2\t0/4000000\tno reason\n",
    }


@pytest.fixture
def folder_archive(
    tmp_path: Path, archive_objects: dict[str, bytes]
) -> Iterator[walfetch.FolderArchive]:
    wals = tmp_path / "wals"
    for key, body in archive_objects.items():
        path = wals / key.removeprefix(PREFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    # An upload under way in the S3 server: never an object.
    (wals / "0000000100000000" / ".rclone_temp_put_0000000100000000000000005.gz").write_bytes(b"")
    fd = os.open(wals, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield walfetch.FolderArchive(fd, PREFIX, FakeS3({}))
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "prefix",
    [
        f"{PREFIX}0000000100000000/000000010000000000000003",
        f"{PREFIX}0000000100000000/00000001000000000000000",
        f"{PREFIX}0000000100000000/000000010000000000000009",
        f"{PREFIX}0000000900000000/000000090000000000000001",
    ],
)
def test_the_folder_lists_as_the_s3_server_does(
    folder_archive: walfetch.FolderArchive, archive_objects: dict[str, bytes], prefix: str
) -> None:
    assert folder_archive.list_objects_v2(Bucket="b", Prefix=prefix) == FakeS3(
        archive_objects
    ).list_objects_v2(Bucket="b", Prefix=prefix)


def test_the_folder_serves_objects_and_says_what_it_lacks(
    folder_archive: walfetch.FolderArchive, archive_objects: dict[str, bytes]
) -> None:
    for key, body in archive_objects.items():
        assert folder_archive.get_object(Bucket="b", Key=key)["Body"].read() == body
    with pytest.raises(ClientError) as missing:
        folder_archive.get_object(Bucket="b", Key=_key("000000010000000000000009"))
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ValueError, match="is not a WAL file of this archive"):
        folder_archive.get_object(Bucket="b", Key=f"{PREFIX}../../elsewhere/secret")


def test_a_fetcher_reads_segments_and_histories_from_the_folder(
    folder_archive: walfetch.FolderArchive, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    fetcher = Fetcher(folder_archive, "b", PREFIX, spool)
    assert fetcher.histories() == ["00000002.history", "00000003.history"]
    assert fetcher.fetch("000000010000000000000003")
    assert fetcher.fetch("000000020000000100000000")
    assert not fetcher.fetch("000000010000000000000005")  # only an upload under way
    assert (spool / "000000010000000000000003").read_bytes() == b"three"
    assert (spool / "000000020000000100000000").read_bytes() == b"next log"
    assert (spool / ".missing-000000010000000000000005").exists()
    assert folder_archive.s3.gets == []


def test_an_object_this_process_may_not_read_is_asked_of_the_s3_server(
    folder_archive: walfetch.FolderArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key("000000010000000000000004")
    folder_archive.s3 = FakeS3({key: b"over http"})
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".gz"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)

    assert folder_archive.get_object(Bucket="b", Key=key)["Body"].read() == b"over http"
    assert folder_archive.s3.gets == [key]


def test_folders_this_process_may_not_enter_are_listed_by_the_s3_server(
    folder_archive: walfetch.FolderArchive,
    archive_objects: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Folders the server made as the service's user (an archive written over HTTP).
    folder_archive.s3 = FakeS3(archive_objects)

    def refusing_scandir(path: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    spool = tmp_path / "spool"
    spool.mkdir()
    fetcher = Fetcher(folder_archive, "b", PREFIX, spool)

    assert fetcher.histories() == ["00000002.history", "00000003.history"]
    assert fetcher.fetch("000000010000000000000004")
    assert (spool / "000000010000000000000004").read_bytes() == b"four"
    assert folder_archive.s3.lists == 2
