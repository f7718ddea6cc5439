"""Prefetch WAL from a barman-cloud archive into a local spool, for the whole recovery.

    python -m paas_pitr.engines.local.walfetch DESTINATION SERVER SPOOL PGDATA DEPTH JOBS

Started in the background by restore_command (one at a time: the ``.prefetcher`` folder is
its lock, with its pid inside). It keeps the ``DEPTH`` segments after the newest one
PostgreSQL asked for (``SPOOL/.wanted``, written by restore_command) downloaded or in flight,
``JOBS`` at a time, with one S3 client, decompressed as barman stored them (barman's own
decompressors), each renamed into the spool when complete; restore_command then only moves
files. A segment being fetched is marked by ``.inflight-<name>``, one the archive does not
hold by ``.missing-<name>`` (restore_command then asks barman-cloud-wal-restore, the
authority on a missing file).

Timeline history files are listed once at start (they sit at the top of the server's
``wals/`` folder) and fetched; the list is written to ``.histories``, so restore_command
answers PostgreSQL's probes for history files that do not exist at once. No new history
file can appear in the source folder meanwhile: a cluster archiving there would have to
share its server name, which the empty-archive check refuses.

It exits when recovery is over (``PGDATA/recovery.signal`` gone), when no postmaster has run
on ``PGDATA`` for ``POSTMASTER_GRACE_SECONDS`` (the server failed or was stopped: a server
started again runs restore_command, which starts a prefetcher again), when nothing was asked
for ``IDLE_SECONDS``, or when its lock was taken away (:func:`stop_prefetcher`).

barman-cloud-wal-restore starts a Python interpreter and boto3 for every segment (~0.5 s
each on a 2-core machine): fetching here is what keeps replay close to the speed of a local
copy. Credentials and the endpoint come from the environment (AWS_*, PAAS_PITR_WALFETCH_ENDPOINT).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from barman.cloud import ALLOWED_COMPRESSIONS  # type: ignore[import-untyped]

# barman's own suffixes, uncompressed first: the same objects barman-cloud-wal-restore would
# read, in the order it tries them.
SUFFIXES: dict[str, str | None] = {"": None, **ALLOWED_COMPRESSIONS}
IDLE_SECONDS = 120.0
POLL_SECONDS = 0.02
MISSING_RETRY_SECONDS = 2.0
# The prefetcher starts before the server: the postmaster has this long to appear, and a
# running one this long to come back, before the prefetcher deems its recovery over.
POSTMASTER_GRACE_SECONDS = 5.0
POSTMASTER_CHECK_SECONDS = 0.5
LOCK = ".prefetcher"


def postmaster_alive(pgdata: Path) -> bool:
    """Whether the process named by ``pgdata/postmaster.pid`` (its first line: the PID the
    postmaster writes at start; the file is removed as it exits) is alive."""
    try:
        first = (pgdata / "postmaster.pid").read_text(encoding="utf-8", errors="replace")
        pid = int(first.split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def stop_prefetcher(spool: Path) -> int | None:
    """Stop the prefetcher that holds ``spool``'s lock; its PID, or ``None`` when none held
    it. The lock is taken away first (a prefetcher checks it every ``POLL_SECONDS``), then
    the process is sent SIGTERM, so one waiting on S3 ends too; a PID reused by another
    program since (its command line does not name this module) is left alone."""
    lock = spool / LOCK
    try:
        pid = int((lock / "pid").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        pid = None
    with contextlib.suppress(OSError):
        (lock / "pid").unlink()
    with contextlib.suppress(OSError):
        lock.rmdir()
    if pid is None or pid <= 0:
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # gone already
    if Path(__file__).name.encode() not in command:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return pid


def following(name: str, count: int) -> list[str]:
    timeline, log, segment = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    names = []
    for _ in range(count):
        segment += 1
        if segment > 0xFF:  # 16 MiB segments: 256 per log file
            segment, log = 0, log + 1
        names.append(f"{timeline}{log:08X}{segment:08X}")
    return names


def is_segment(name: str) -> bool:
    return len(name) == 24 and all(c in "0123456789ABCDEF" for c in name)


def decompress(body: bytes, compression: str | None) -> bytes:
    if compression is None:
        return body
    from barman.clients.cloud_compression import (  # type: ignore[import-untyped]
        decompress_to_file,
    )

    out = io.BytesIO()
    decompress_to_file(io.BytesIO(body), out, compression)
    return out.getvalue()


# rclone's prefix for an upload under way (never a WAL file of the archive).
_SERVER_TEMPORARY_PREFIX = ".rclone_temp_"
WALS_FD_VARIABLE = "PAAS_PITR_WALFETCH_WALS_FD"


class FolderArchive:
    """The calls :class:`Fetcher` makes of an S3 client (``get_object``,
    ``list_objects_v2``, the ``list_objects_v2`` paginator), answered from the folder the
    embedded S3 server serves the archive's ``wals/`` from, given as a descriptor (opened by
    the service, which alone reaches it by path): no HTTP, no S3 server work per segment.
    Keys are the S3 keys (``prefix`` + the path under ``wals/``). An object this process may
    not read (stored over HTTP by the server, as the service's user) is asked of ``s3``."""

    def __init__(self, wals_fd: int, prefix: str, s3: Any) -> None:
        self.wals_fd = wals_fd
        self.prefix = prefix
        self.s3 = s3

    def _parts(self, key: str) -> tuple[str, str]:
        relative = key[len(self.prefix) :] if key.startswith(self.prefix) else key
        folder, _, name = relative.rpartition("/")
        if "/" in folder or folder.startswith(".") or name.startswith("."):
            raise ValueError(f"{key!r} is not a WAL file of this archive")
        return folder, name

    def _open_folder(self, folder: str) -> int:
        if not folder:
            return os.dup(self.wals_fd)
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.wals_fd)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803  (boto3's)
        from botocore.exceptions import ClientError

        folder_name, name = self._parts(Key)
        try:
            folder = self._open_folder(folder_name)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
            finally:
                os.close(folder)
        except FileNotFoundError as exc:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject") from exc
        except PermissionError:
            return dict(self.s3.get_object(Bucket=Bucket, Key=Key))
        with os.fdopen(fd, "rb") as handle:
            return {"Body": io.BytesIO(handle.read())}

    def _names(self, folder_name: str) -> list[str]:
        """The object names in ``folder_name``; raises PermissionError for a folder this
        process may not enter (made by the server, as the service's user)."""
        try:
            folder = self._open_folder(folder_name)
        except FileNotFoundError:
            return []
        try:
            return [
                entry.name
                for entry in os.scandir(folder)
                if entry.is_file(follow_symlinks=False)
                and not entry.name.startswith(_SERVER_TEMPORARY_PREFIX)
            ]
        finally:
            os.close(folder)

    def list_objects_v2(self, Bucket: str, Prefix: str, **options: Any) -> dict[str, Any]:  # noqa: N803
        folder_name, start = self._parts(Prefix)
        base = f"{self.prefix}{folder_name}/" if folder_name else self.prefix
        try:
            found = self._names(folder_name)
        except PermissionError:
            return dict(self.s3.list_objects_v2(Bucket=Bucket, Prefix=Prefix, **options))
        names = sorted(name for name in found if name.startswith(start))
        return {"Contents": [{"Key": f"{base}{name}"} for name in names]}

    def get_paginator(self, operation: str) -> Any:
        archive = self

        class _TopLevel:
            # Files at the top of wals/ (history files), as a listing with Delimiter="/".
            def paginate(self, Bucket: str, **options: Any) -> list[dict[str, Any]]:  # noqa: N803
                try:
                    names = archive._names("")
                except PermissionError:
                    pages = archive.s3.get_paginator(operation).paginate(Bucket=Bucket, **options)
                    return list(pages)
                return [{"Contents": [{"Key": f"{archive.prefix}{n}"} for n in sorted(names)]}]

        assert operation == "list_objects_v2"
        return _TopLevel()


class Fetcher:
    """Fetches named WAL files of one server's ``wals/`` folder into ``spool``."""

    def __init__(self, client: Any, bucket: str, prefix: str, spool: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix  # ".../<server>/wals/"
        self.spool = spool
        self.suffix: str | None = None  # the last one seen: tried first, saves a LIST

    def key(self, name: str) -> str:
        folder = f"{name[:16]}/" if is_segment(name) else ""
        return f"{self.prefix}{folder}{name}"

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return None
            raise

    def _find(self, name: str) -> tuple[bytes, str | None] | None:
        base = self.key(name)
        if self.suffix is not None:
            body = self._get(base + self.suffix)
            if body is not None:
                return body, SUFFIXES[self.suffix]
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base)
        for item in listing.get("Contents", []):
            suffix = str(item["Key"])[len(base) :]
            if suffix in SUFFIXES:
                body = self._get(str(item["Key"]))
                if body is not None:
                    self.suffix = suffix
                    return body, SUFFIXES[suffix]
        return None

    def claim(self, name: str) -> bool:
        """Mark ``name`` in flight; False when another fetch holds it."""
        try:
            (self.spool / f".inflight-{name}").mkdir()
        except FileExistsError:
            return False
        return True

    def fetch(self, name: str, *, claimed: bool = False) -> bool:
        """True once ``name`` is in the spool; False when the archive does not hold it
        (marked ``.missing-<name>``) or it could not be fetched (left to restore_command).
        ``claimed``: the caller marked it in flight already (:meth:`claim`)."""
        target = self.spool / name
        marker = self.spool / f".inflight-{name}"
        if not claimed:
            if target.exists():
                return True
            if not self.claim(name):
                return True  # another fetch holds it
        try:
            found = self._find(name)
            if found is None:
                (self.spool / f".missing-{name}").touch()
                return False
            body, compression = found
            partial = self.spool / f".part-{name}"
            partial.write_bytes(decompress(body, compression))
            partial.rename(target)
            return True
        except Exception:  # a prefetch never fails recovery: restore_command fetches itself
            return False
        finally:
            marker.rmdir()

    def histories(self) -> list[str]:
        """Names of the timeline history files in the archive (one LIST request)."""
        names: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = str(item["Key"])[len(self.prefix) :]
                for suffix in SUFFIXES:
                    if suffix and name.endswith(suffix):
                        name = name[: -len(suffix)]
                        break
                if name.endswith(".history"):
                    names.append(name)
        return sorted(set(names))


class Prefetcher:
    """Keeps the window after the newest requested segment fetched (see module doc)."""

    def __init__(self, fetcher: Fetcher, pgdata: Path, depth: int, jobs: int) -> None:
        self.fetcher = fetcher
        self.spool = fetcher.spool
        self.pgdata = pgdata
        self.depth = max(1, depth)
        self.jobs = max(1, jobs)
        self.lock = self.spool / LOCK
        self.postmaster_seen = time.monotonic()
        self.postmaster_checked = float("-inf")

    def wanted(self) -> tuple[str | None, float]:
        path = self.spool / ".wanted"
        try:
            return path.read_text(encoding="utf-8").strip() or None, path.stat().st_mtime
        except OSError:
            return None, 0.0

    def publish_histories(self) -> None:
        names = self.fetcher.histories()
        for name in names:
            self.fetcher.fetch(name)
        self._publish(".histories", "".join(f"{n}\n" for n in names))

    def still_needed(self, last_asked: float) -> bool:
        if not (self.pgdata / "recovery.signal").exists():
            return False
        if time.time() - last_asked > IDLE_SECONDS:
            return False
        now = time.monotonic()
        if now - self.postmaster_checked >= POSTMASTER_CHECK_SECONDS:
            self.postmaster_checked = now
            if postmaster_alive(self.pgdata):
                self.postmaster_seen = now
            elif now - self.postmaster_seen > POSTMASTER_GRACE_SECONDS:
                return False
        try:
            return (self.lock / "pid").read_text().strip() == str(os.getpid())
        except OSError:
            return False

    def _recently_missing(self, name: str) -> bool:
        # Not in the archive a moment ago: it may be archived since (the source may still
        # be running), so asked again after a while.
        marker = self.spool / f".missing-{name}"
        try:
            if time.time() - marker.stat().st_mtime < MISSING_RETRY_SECONDS:
                return True
            marker.unlink()
        except OSError:
            pass
        return False

    def run(self) -> None:
        with contextlib.suppress(OSError):
            (self.lock / "pid").write_text(str(os.getpid()), encoding="utf-8")
        try:
            self.publish_histories()
        except Exception:
            # Unknown: restore_command asks barman-cloud-wal-restore for every history file.
            with contextlib.suppress(OSError):
                (self.spool / ".histories-unknown").touch()
        inflight: dict[str, Future[bool]] = {}
        fetched: set[str] = set()
        last_asked = time.time()
        seen: str | None = None
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while self.still_needed(last_asked):
                token, asked_at = self.wanted()
                last_asked = max(last_asked, asked_at)
                for name, future in list(inflight.items()):
                    if future.done():
                        del inflight[name]
                        if not future.exception() and future.result():
                            fetched.add(name)
                wanted = token.split()[0] if token else None
                if token is not None and token != seen and wanted and is_segment(wanted):
                    # A new request: the file asked for comes first, even one fetched
                    # before (PostgreSQL asks for some segments twice).
                    if (
                        wanted not in inflight
                        and not (self.spool / wanted).exists()
                        and not self._recently_missing(wanted)
                        and len(inflight) < self.jobs
                        and self.fetcher.claim(wanted)
                    ):
                        inflight[wanted] = pool.submit(self.fetcher.fetch, wanted, claimed=True)
                    if (
                        wanted in inflight
                        or (self.spool / wanted).exists()
                        or self._recently_missing(wanted)
                    ):
                        # restore_command waits for its file until this says the request
                        # was taken in hand: neither in flight nor spooled by then, it is
                        # not coming (failed), and restore_command fetches it itself.
                        self._publish(".seen", token)
                        seen = token
                if wanted is not None and is_segment(wanted):
                    for name in following(wanted, self.depth):
                        if name in inflight or name in fetched or self._recently_missing(name):
                            continue
                        if len(inflight) >= self.jobs or not self.fetcher.claim(name):
                            break
                        inflight[name] = pool.submit(self.fetcher.fetch, name, claimed=True)
                time.sleep(POLL_SECONDS)
        with contextlib.suppress(OSError):
            (self.lock / "pid").unlink()
            self.lock.rmdir()

    def _publish(self, name: str, text: str) -> None:
        partial = self.spool / f"{name}.part"
        partial.write_text(text, encoding="utf-8")
        partial.rename(self.spool / name)


def main(argv: list[str]) -> int:
    destination, server, spool_dir, pgdata, depth, jobs = argv
    import boto3
    from botocore.config import Config

    bucket, _, path = destination.removeprefix("s3://").partition("/")
    prefix = f"{path.strip('/')}/{server}/wals/".lstrip("/")
    client: Any = boto3.client(
        "s3",
        endpoint_url=os.environ.get("PAAS_PITR_WALFETCH_ENDPOINT") or None,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=max(10, int(jobs) * 2),
        ),
    )
    # Set by the service when it starts the prefetcher for an archive of the embedded S3
    # server: the descriptor of that archive's wals/ folder (see FolderArchive).
    wals_fd = os.environ.get(WALS_FD_VARIABLE, "")
    if wals_fd.isdigit():
        with contextlib.suppress(OSError):
            os.fstat(int(wals_fd))
            client = FolderArchive(int(wals_fd), prefix, client)
    spool = Path(spool_dir)
    Prefetcher(Fetcher(client, bucket, prefix, spool), Path(pgdata), int(depth), int(jobs)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
