"""Base backups of the local engine: barman-cloud-backup's objects, produced by several
workers at once.

    python -I basebackup.py [--archiver-socket PATH] BARMAN-CLOUD-BACKUP-ARGUMENTS...

The arguments are barman-cloud-backup's own (parsed by barman: compression, ``-J/--jobs``,
``-S/--max-archive-size``, the connection, ``-n NAME``, the destination URL and the server
name), and what is written is what barman-cloud-backup writes, through barman's own code for
everything but the copy: ``<server>/base/<backup id>/backup.info`` (STARTED first, then DONE
or FAILED), the backup_label, pg_backup_start / pg_backup_stop in one session, the restore
point, the statistics. What differs is how the files get into the bucket:

- ``jobs`` workers each tar and compress the files they take into their own part of the
  tar: ``data.tar.<ext>``, ``data_0001.tar.<ext>``, ... (and ``<oid>.tar.<ext>``... for a
  tablespace). These are the names barman gives the parts of a tar it splits past
  ``--max-archive-size``, and its catalog (``get_backup_files``) gives them all to
  barman-cloud-restore, hence to CNPG. Files are handed out largest first to whichever
  worker is free; directory entries go into the first part. ``global/pg_control`` (read
  after every other file, as barman does), the configuration files kept outside the data
  directory and the ``backup_label`` go into a last part of the data directory's tar,
  opened once every worker is done, so it is numbered after every other part. That is
  where barman-cloud-backup puts them too (in its last part), and it is what makes a lost
  part detectable at restore: a lost last part takes pg_control and the backup_label with
  it, any other lost part leaves a gap in the numbering.
- Workers are threads: reading a file and compressing with lz4 release the GIL, while a
  process each would need its own S3 client (boto3 starts in ~0.3 s of CPU). Reads and
  compression go 1 MiB at a time (barman copies 16 KiB at a time, feeding its compressor
  64 KiB pieces), and compressed parts are uploaded from memory by ``jobs`` threads sharing
  one client, instead of temporary files handed to a pool of upload processes.
- pg_backup_stop() is asked not to wait for WAL archiving, which PostgreSQL checks once a
  second; this process then waits itself until every WAL segment from the backup's start
  to its end is archived: PostgreSQL marked it ``.done`` (or removed it, which it does only
  once it is archived), or the instance's WAL archiver (``--archiver-socket``,
  :mod:`.walarchiver`) answered that it stored it. DONE is written only after that, so a
  completed backup is restorable, as with barman-cloud-backup.

Runs as the server's OS user (it reads the data directory and talks to the archiver's
socket), by path with ``-I``: importing the package would load the whole engine first.
Exit status 0 once backup.info says DONE; 1 on failure (after writing FAILED when the
bucket is reachable), 2 on bad arguments. A killed process leaves backup.info at STARTED,
which the control plane settles.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import io
import logging
import os
import queue
import re
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import psycopg2  # type: ignore[import-untyped]
from barman import xlog  # type: ignore[import-untyped]
from barman.clients import cloud_backup, cloud_compression  # type: ignore[import-untyped]
from barman.cloud import (  # type: ignore[import-untyped]
    CloudBackupUploader,
    TarFileIgnoringTruncate,
    configure_logging,
)
from barman.cloud_providers import get_cloud_interface  # type: ignore[import-untyped]
from barman.exceptions import (  # type: ignore[import-untyped]
    PostgresConnectionError,
    PostgresException,
)
from barman.fs import _translate_to_regexp  # type: ignore[import-untyped]
from barman.postgres import PostgreSQLConnection  # type: ignore[import-untyped]
from barman.postgres_plumbing import (  # type: ignore[import-untyped]
    EXCLUDE_LIST,
    PGDATA_EXCLUDE_LIST,
)
from barman.utils import force_str  # type: ignore[import-untyped]

log = logging.getLogger("paas_pitr.basebackup")

# The key of copy_stats in backup.info under which the producer records each tar's number
# of parts; read back by the base backup restore.
TAR_PARTS_KEY = "paas_pitr_tar_parts"

# Bytes read from a file, and fed to the compressor, at a time.
READ_SIZE = 1 << 20
# Uploads of one part that may be under way while its worker goes on compressing: bounds
# the memory of a part to (this + 1) upload chunks.
UPLOADS_IN_FLIGHT = 2
# The first upload chunks of a part are the store's smallest (5 MiB on S3), so that
# uploading starts while the part is being written; later ones are barman's size, which
# keeps a part of ``--max-archive-size`` within the store's limit on chunks per object.
SMALL_CHUNKS = 100
# How often the archive status of a WAL segment is looked at while waiting for it, and how
# often the WAL archiver is asked again after it could not store the segment.
WAL_POLL_SECONDS = 0.05
ARCHIVER_RETRY_SECONDS = 1.0
# A wait for WAL archiving longer than this is logged (and logged again as long again).
WAL_WAIT_WARNING_SECONDS = 60.0


def _archive_client() -> ModuleType:
    """:mod:`.archive_client`, loaded from its file: this script runs by path, and its
    folder is not put on ``sys.path`` (it holds a ``barman.py`` that would hide barman)."""
    path = Path(__file__).with_name("archive_client.py")
    spec = importlib.util.spec_from_file_location("paas_pitr_archive_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- one part of a tar -------------------------------------------------------------------


class _Tar(TarFileIgnoringTruncate):  # type: ignore[misc]
    """barman's tar (PAX headers; a file that shrinks while it is read is padded with
    zeros, one that grows is cut at the size first seen), copying 1 MiB at a time."""

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: IO[bytes] | None = None) -> None:
        self._check("awx")
        header = tarinfo.tobuf(self.format, self.encoding, self.errors)
        self.fileobj.write(header)
        self.offset += len(header)
        if fileobj is not None:
            buffer = bytearray(min(READ_SIZE, max(tarinfo.size, 1)))
            view = memoryview(buffer)
            left = tarinfo.size
            while left > 0:
                got = fileobj.readinto(view[: min(left, len(buffer))])  # type: ignore[attr-defined]
                if not got:
                    break
                self.fileobj.write(view[:got])
                left -= got
            padding = left + (-tarinfo.size % tarfile.BLOCKSIZE)
            while padding > 0:
                zeros = min(padding, READ_SIZE)
                self.fileobj.write(bytes(zeros))
                padding -= zeros
            self.offset += tarinfo.size + (-tarinfo.size % tarfile.BLOCKSIZE)
        self.members.append(tarinfo)


class _ChecksummedLz4:
    """barman's lz4 compressor interface (``add_chunk``, ``flush``) writing frames whose
    blocks and content carry xxHash32 checksums. lz4 has no other integrity check: without
    them a damaged object decompresses into wrong bytes without an error. Readers of lz4
    frames (barman-cloud-restore's included) verify the checksums the frame header
    announces."""

    def __init__(self) -> None:
        import lz4.frame  # type: ignore[import-untyped]

        self._compressor = lz4.frame.LZ4FrameCompressor(
            auto_flush=True, block_checksum=True, content_checksum=True
        )
        self._started = False

    def add_chunk(self, data: bytes) -> bytes:
        if not self._started:
            self._started = True
            return bytes(self._compressor.begin()) + bytes(self._compressor.compress(data))
        return bytes(self._compressor.compress(data))

    def flush(self) -> bytes:
        head = b"" if self._started else bytes(self._compressor.begin())
        self._started = True
        return head + bytes(self._compressor.flush())


def _compressor(compression: str | None) -> Any:
    """The compressor of a part's tar stream (``None`` when tarfile compresses it)."""
    if compression == "lz4":
        return _ChecksummedLz4()
    return cloud_compression.get_compressor(compression)


class Part:
    """One tar object of the backup, written as it is produced: compressed in memory and
    uploaded in chunks by ``uploads`` while the next ones are written. ``size``: compressed
    bytes so far. Used by one thread at a time."""

    def __init__(
        self,
        cloud: Any,
        key: str,
        compression: str | None,
        chunk_size: int,
        uploads: ThreadPoolExecutor,
    ) -> None:
        self.cloud = cloud
        self.key = key
        self.chunk_size = chunk_size
        self.uploads = uploads
        self.compressor = _compressor(compression)
        self.size = 0
        self.written = 0
        self.pending = bytearray()
        self.out = bytearray()
        self.upload: dict[str, Any] | None = None
        self.chunks: list[Future[dict[str, Any]]] = []
        self.closed = False
        # time.monotonic() of the part's start and of its upload's completion.
        self.started = time.monotonic()
        self.ended: float | None = None
        mode = cloud_compression.get_streaming_tar_mode("w", compression)
        # gzip and bzip2 are applied by tarfile's stream (as barman does); the others by
        # ``compressor``, on a plain tar written straight to this object.
        self.tar: _Tar = _Tar.open(
            fileobj=self, mode="w" if mode == "w|" else mode, bufsize=READ_SIZE
        )

    # The file object tarfile writes to.
    def tell(self) -> int:
        return self.written

    def write(self, data: bytes | memoryview) -> int:
        size = len(data)
        self.written += size
        if self.compressor is None:
            self.out += data
        elif not self.pending and size >= READ_SIZE:
            # bytes: python-snappy takes no memoryview
            self.out += self.compressor.add_chunk(bytes(data))
        else:
            self.pending += data
            if len(self.pending) >= READ_SIZE:
                self.out += self.compressor.add_chunk(bytes(self.pending))
                self.pending.clear()
        if len(self.out) >= self._chunk_limit():
            self._ship()
        return size

    @property
    def compressed(self) -> int:
        """Compressed bytes of this part so far (uploaded or not)."""
        return self.size + len(self.out)

    def _chunk_limit(self) -> int:
        if len(self.chunks) < SMALL_CHUNKS:
            return int(min(self.cloud.MIN_CHUNK_SIZE, self.chunk_size))
        return self.chunk_size

    def _ship(self) -> None:
        body = bytes(self.out)
        self.size += len(body)
        self.out.clear()
        if self.upload is None:
            self.upload = self.cloud.create_multipart_upload(self.key)
        number = len(self.chunks) + 1
        self.chunks.append(
            self.uploads.submit(self.cloud._upload_part, self.upload, self.key, body, number)
        )
        while sum(1 for chunk in self.chunks if not chunk.done()) > UPLOADS_IN_FLIGHT:
            next(chunk for chunk in self.chunks if not chunk.done()).result()

    def add(self, path: str, arcname: str) -> bool:
        """Add ``path`` (a file, a directory entry without its content, a link) as
        ``arcname``. False when it vanished meanwhile: WAL replay recreates it, as barman
        relies on too."""
        try:
            info = self.tar.gettarinfo(path, arcname)
            if info is None:  # a socket: tar has no such entry, barman skips it too
                return True
            if info.isreg():
                with open(path, "rb") as handle:
                    self.tar.addfile(info, handle)
            else:
                self.tar.addfile(info)
        except FileNotFoundError:
            return False
        return True

    def add_bytes(self, arcname: str, data: bytes, uid: int, gid: int) -> None:
        info = tarfile.TarInfo(arcname)
        info.size = len(data)
        info.mtime = int(time.time())
        info.uid, info.gid = uid, gid
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        """Finish the tar and complete its upload; raises what any chunk's upload raised."""
        if self.closed:
            return
        self.closed = True
        self.tar.close()
        if self.compressor is not None:
            if self.pending:
                self.out += self.compressor.add_chunk(bytes(self.pending))
                self.pending.clear()
            self.out += self.compressor.flush()
        self._ship()
        parts = [chunk.result() for chunk in self.chunks]
        assert self.upload is not None
        self.cloud._complete_multipart_upload(self.upload, self.key, parts)
        self.ended = time.monotonic()

    def abort(self) -> None:
        """Drop an unfinished upload (the store keeps the chunks of one never completed)."""
        self.closed = True
        for chunk in self.chunks:
            chunk.cancel()
        if self.upload is None:
            return
        for chunk in self.chunks:
            with contextlib.suppress(Exception):
                chunk.exception()
        try:
            self.cloud._abort_multipart_upload(self.upload, self.key)
        except Exception as exc:
            log.warning("could not abort the upload of %s: %s", self.key, force_str(exc))


# --- what to copy ----------------------------------------------------------------------


class Rules:
    """barman's include / exclude rules (``barman.fs.path_allowed``: rsync-like, ``/``
    anchors a rule, a trailing ``/`` limits it to directories, ``*``, ``**`` and ``?``),
    each turned into a regular expression once, with barman's own translation. barman
    translates and compiles every rule again for every path: ~0.7 ms per file here, a
    second for a small database's 1600 files."""

    def __init__(self, rules: list[str] | None) -> None:
        self.rules: list[tuple[bool, list[re.Pattern[str]]]] = []
        for rule in rules or []:
            directories_only = rule.endswith("/")
            rule = rule.removesuffix("/")
            anchored = rule.startswith("/")
            rule = rule.removeprefix("/")
            patterns = [rule] if anchored else [rule, "**/" + rule]
            self.rules.append(
                (directories_only, [re.compile(_translate_to_regexp(p)) for p in patterns])
            )

    def match(self, path: str, is_dir: bool) -> bool:
        return any(
            (is_dir or not directories_only) and any(p.match(path) for p in patterns)
            for directories_only, patterns in self.rules
        )


def path_allowed(exclude: Rules, include: Rules, path: str, is_dir: bool) -> bool:
    """Whether ``path`` is copied: included, else not excluded (barman's order)."""
    return include.match(path, is_dir) or not exclude.match(path, is_dir)


@dataclass(frozen=True, slots=True)
class Entry:
    """A file to copy: ``path`` on disk, ``arcname`` in the tar named ``tar``."""

    tar: str
    path: str
    arcname: str
    size: int


@dataclass(slots=True)
class Tree:
    """A directory to copy into the tar ``tar``, as barman's ``upload_directory`` selects
    its content: every directory whose relative path the rules allow gets an entry, and
    every allowed file under any directory is copied (a rule such as ``/pg_wal/*`` keeps
    the directory and drops what is in it); symbolic links to directories are not
    followed, nor stored."""

    tar: str
    root: str
    exclude: list[str]
    include: list[str] | None = None
    directories: list[str] = field(default_factory=list)
    files: list[Entry] = field(default_factory=list)

    def scan(self) -> None:
        exclude, include = Rules(self.exclude), Rules(self.include)
        for top, _, names in os.walk(self.root):
            relative = os.path.relpath(top, self.root)
            if path_allowed(exclude, include, relative, True):
                self.directories.append(relative)
            for name in names:
                arcname = os.path.join(relative, name)
                if not path_allowed(exclude, include, arcname, False):
                    continue
                path = os.path.join(top, name)
                try:
                    size = os.lstat(path).st_size
                except FileNotFoundError:
                    continue
                self.files.append(Entry(self.tar, path, arcname, size))


# --- the backup ------------------------------------------------------------------------


class NoArchiveWaitConnection(PostgreSQLConnection):  # type: ignore[misc]
    """barman's connection, except that pg_backup_stop() returns without waiting for WAL
    archiving: :meth:`ParallelBackupUploader._stop_backup` waits for it, without
    PostgreSQL's one-second pauses."""

    def stop_concurrent_backup(self) -> dict[str, Any]:
        """The end of the backup, in the shape barman reads: ``location`` (the end LSN),
        ``timeline``, ``backup_label`` (the label file's text) and ``timestamp``."""
        try:
            conn = self.connect()
            # Out of any transaction: pg_backup_stop() ends the session's backup.
            conn.rollback()
            cursor = conn.cursor()
            if self.server_version >= 140000:
                # pg_backup_start set it to 0 for the copy; the session's own again.
                cursor.execute("RESET idle_session_timeout")
            stop = (
                "pg_backup_stop(wait_for_archive => false)"
                if self.server_version >= 150000
                else "pg_stop_backup(exclusive => false, wait_for_archive => false)"
            )
            cursor.execute(
                "SELECT stop.lsn::text, stop.labelfile, now(), "
                "CASE WHEN pg_is_in_recovery() "
                "THEN (SELECT min_recovery_end_timeline FROM pg_control_recovery()) "
                "ELSE (SELECT timeline_id FROM pg_control_checkpoint()) END "
                f"FROM {stop} AS stop"
            )
            row = cursor.fetchone()
        except (PostgresConnectionError, psycopg2.Error) as exc:
            raise PostgresException(f"pg_backup_stop failed: {force_str(exc).strip()}") from exc
        location, label, timestamp, timeline = row
        return {
            "location": location,
            "backup_label": label,
            "timestamp": timestamp,
            "timeline": timeline,
        }


class ParallelBackupUploader(CloudBackupUploader):  # type: ignore[misc]
    """barman's cloud backup with the copy done by ``jobs`` workers (see the module doc)."""

    def __init__(
        self, *args: Any, jobs: int, archiver_socket: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.jobs = max(1, jobs)
        self.archiver_socket = archiver_socket
        self.uploads = ThreadPoolExecutor(self.jobs, thread_name_prefix="upload")
        # By tar name: every part opened so far, in the order of their names.
        self.parts: dict[str, list[Part]] = {}
        self.parts_lock = threading.Lock()
        # The data directory's last part: pg_control, the external configuration files
        # and the backup_label, opened once every worker has closed its parts.
        self.tail: Part | None = None
        self.copy_seconds = 0.0
        self.began = time.monotonic()

    # --- parts ---

    def _open_part(self, tar: str) -> Part:
        with self.parts_lock:
            opened = self.parts.setdefault(tar, [])
            key = os.path.join(
                self.controller.key_prefix, self.controller._build_dest_name(tar, len(opened))
            )
            part = Part(
                self.cloud_interface,
                key,
                self.compression,
                self.controller.chunk_size,
                self.uploads,
            )
            opened.append(part)
        log.info("writing %s", key)
        return part

    # --- the copy ---

    def _trees(self) -> list[Tree]:
        """The tablespaces' and the data directory's content, with barman's rules."""
        info = self.backup_info
        trees: list[Tree] = []
        pgdata_exclude: list[str] = []
        major = self.postgres.server_major_version
        for tablespace in info.tablespaces or []:
            if tablespace.location.startswith(info.pgdata + "/"):
                pgdata_exclude.append(tablespace.location[len(info.pgdata) :])
            pgdata_exclude.append(f"/pg_tblspc/{tablespace.oid}")
            trees.append(
                Tree(
                    str(tablespace.oid),
                    self._get_tablespace_location(tablespace),
                    ["/*", *EXCLUDE_LIST],
                    [f"/PG_{major}_*"],
                )
            )
        pgdata = self._pgdata_dir
        if os.path.islink(pgdata):
            pgdata = os.path.realpath(pgdata)
        trees.append(Tree("data", pgdata, [*PGDATA_EXCLUDE_LIST, *EXCLUDE_LIST, *pgdata_exclude]))
        return trees

    def _take_backup(self) -> None:
        started = time.monotonic()
        trees = self._trees()
        entries: list[Entry] = []
        for tree in trees:
            tree.scan()
            part = self._open_part(tree.tar)
            # All directory entries first, in the first part of their tar.
            for directory in tree.directories:
                part.add(os.path.join(tree.root, directory), directory)
            entries += tree.files
        log.info(
            "%d files (%d MiB) to copy with %d workers",
            len(entries),
            sum(entry.size for entry in entries) >> 20,
            self.jobs,
        )
        work: queue.SimpleQueue[Entry] = queue.SimpleQueue()
        for entry in sorted(entries, key=lambda e: e.size, reverse=True):
            work.put(entry)
        failed = threading.Event()
        errors: list[BaseException] = []
        # Worker 0 goes on with the parts the directory entries went into.
        firsts = {tar: parts[0] for tar, parts in self.parts.items()}

        def worker(index: int) -> None:
            current = dict(firsts) if index == 0 else {}
            try:
                while not failed.is_set():
                    try:
                        entry = work.get_nowait()
                    except queue.Empty:
                        break
                    part = current.get(entry.tar)
                    if part is None or part.compressed > self.max_archive_size:
                        if part is not None:
                            part.close()
                        part = current[entry.tar] = self._open_part(entry.tar)
                    if not part.add(entry.path, entry.arcname):
                        log.info("%s vanished during the backup; skipped", entry.path)
                for part in current.values():
                    part.close()
            except BaseException as exc:
                errors.append(exc)
                failed.set()

        threads = [
            threading.Thread(target=worker, args=(index,), name=f"copy-{index}")
            for index in range(self.jobs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        # Numbered after every part the workers opened, rollovers included.
        data = self.tail = self._open_part("data")
        # pg_control last, once every other file is copied, as barman does.
        data.add(os.path.join(trees[-1].root, "global", "pg_control"), "global/pg_control")
        self._copy_external_config_files(data)
        self.copy_seconds = time.monotonic() - started
        log.info("copied in %.2f s", self.copy_seconds)

    def _copy_external_config_files(self, data: Part) -> None:
        """Configuration files kept outside the data directory go into it, as barman puts
        them; files they include are not copied (barman only warns about them)."""
        included = []
        for config_file in self.backup_info.get_external_config_files():
            if config_file.file_type == "include":
                included.append(config_file.path)
                continue
            # A missing ident file is not an error for PostgreSQL, nor for barman.
            if config_file.file_type == "ident_file" and not os.path.exists(config_file.path):
                continue
            if not data.add(config_file.path, os.path.basename(config_file.path)):
                raise FileNotFoundError(errno.ENOENT, "configuration file gone", config_file.path)
        if included:
            log.warning("files included by the configuration are not copied: %s", included)

    def _upload_backup_label(self) -> None:
        if self.backup_info.backup_label:
            assert self.tail is not None  # _take_backup opened it
            owner = os.stat(self.backup_info.pgdata)
            self.tail.add_bytes(
                "backup_label",
                self.backup_info.backup_label.encode("utf-8"),
                owner.st_uid,
                owner.st_gid,
            )

    def _finalise_copy(self) -> None:
        for parts in self.parts.values():
            for part in parts:
                part.close()

    def _add_stats_to_backup_info(self) -> None:
        parts = [part for parts in self.parts.values() for part in parts]
        ended = max((part.ended for part in parts if part.ended), default=self.began)
        self.backup_info.set_attribute(
            "copy_stats",
            {
                "total_time": ended - self.began,
                "number_of_workers": self.jobs,
                "analysis_time": 0,
                "analysis_time_per_item": {},
                "copy_time": self.copy_seconds,
                "copy_time_per_item": {},
                "serialized_copy_time": sum(
                    (part.ended or part.started) - part.started for part in parts
                ),
                "serialized_copy_time_per_item": {},
                # How many parts each tar has ("data", or a tablespace's OID): a restore
                # can then tell a lost last part of any tar, which the numbering alone
                # cannot (barman reads copy_stats as a free-form dict).
                TAR_PARTS_KEY: {tar: len(tar_parts) for tar, tar_parts in self.parts.items()},
            },
        )

    def _get_backup_info(self, server_name: str) -> Any:
        info = super()._get_backup_info(server_name)
        # Named from the start (barman names it only once it ends): the STARTED entry a
        # killed backup leaves is found by its name, and deleted, by the control plane.
        if self.backup_name is not None:
            info.set_attribute("backup_name", self.backup_name)
        return info

    # --- the end of the backup ---

    def _stop_backup(self) -> None:
        super()._stop_backup()
        if self.postgres.get_setting("archive_mode") == "off":
            return  # PostgreSQL would not wait either
        segments = backup_segments(self.backup_info)
        wait_for_wal(Path(self.backup_info.pgdata) / "pg_wal", segments, self.archiver_socket)
        log.info("WAL archived from %s to %s", segments[0], segments[-1])

    def backup(self) -> None:
        self.began = time.monotonic()
        try:
            super().backup()
        finally:
            for parts in self.parts.values():
                for part in parts:
                    if not part.closed:
                        part.abort()
            self.uploads.shutdown(wait=False, cancel_futures=True)


def backup_segments(info: Any) -> list[str]:
    """The WAL segments a backup needs to be restored: from the one holding its start to
    the one holding the last byte before its end LSN (PostgreSQL's own notion: an end LSN
    at a segment's very start needs nothing of that segment)."""
    end = xlog.format_lsn(xlog.parse_lsn(info.end_xlog) - 1)
    last = xlog.location_to_xlogfile_name_offset(end, info.timeline, info.xlog_segment_size)
    return list(
        xlog.generate_segment_names(
            info.begin_wal, last["file_name"], info.version, info.xlog_segment_size
        )
    )


def wait_for_wal(
    wal_dir: Path,
    segments: list[str],
    archiver_socket: str | None,
    *,
    request: Callable[[str, str], tuple[int, str]] | None = None,
    poll: float = WAL_POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once every segment of ``segments`` (names in ``wal_dir``) is archived:
    marked ``.done`` by PostgreSQL, gone from ``wal_dir`` (PostgreSQL removes or recycles
    only archived segments), or stored by the WAL archiver listening on
    ``archiver_socket``, which is asked for each segment PostgreSQL marked ``.ready``
    (complete) and answers once it is in the bucket. Waits as long as it takes, like
    pg_backup_stop(); the caller bounds the whole backup."""
    if request is None and archiver_socket is not None:
        request = _archive_client().request
    status = wal_dir / "archive_status"
    for name in segments:
        started = warned = clock()
        asked = float("-inf")
        while True:
            if (status / f"{name}.done").exists():
                break
            ready = (status / f"{name}.ready").exists()
            if not ready and not (wal_dir / name).exists():
                break
            now = clock()
            if ready and request and archiver_socket and now - asked >= ARCHIVER_RETRY_SECONDS:
                asked = now
                code, message = request(archiver_socket, str(wal_dir / name))
                if code == 0:
                    break
                log.info("the WAL archiver did not store %s (%s); waiting", name, message)
            if now - warned >= WAL_WAIT_WARNING_SECONDS:
                warned = now
                log.warning(
                    "still waiting for WAL segment %s to be archived (%.0f s)", name, now - started
                )
            time.sleep(poll)


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(this script's own options, barman-cloud-backup's) of ``argv``."""
    own = argparse.ArgumentParser(prog="basebackup", add_help=False)
    own.add_argument("--archiver-socket")
    options, rest = own.parse_known_args(argv)
    config = cloud_backup.parse_arguments(rest)
    if config.snapshot_disks or config.snapshot_instance or config.max_bandwidth:
        own.error("snapshot backups and --max-bandwidth are barman-cloud-backup's only")
    return options, config


def main(argv: list[str]) -> int:
    options, config = parse_arguments(argv)
    configure_logging(config)
    try:
        cloud_interface = get_cloud_interface(config)
        with contextlib.closing(cloud_interface):
            postgres = NoArchiveWaitConnection(
                cloud_backup.build_conninfo(config),
                config.immediate_checkpoint,
                application_name="barman_cloud_backup",
            )
            try:
                postgres.connect()
            except PostgresConnectionError as exc:
                log.error("Cannot connect to postgres: %s", force_str(exc))
                return 1
            with contextlib.closing(postgres):
                ParallelBackupUploader(
                    server_name=config.server_name,
                    compression=config.compression,
                    max_archive_size=config.max_archive_size,
                    min_chunk_size=config.min_chunk_size,
                    cloud_interface=cloud_interface,
                    postgres=postgres,
                    backup_name=config.backup_name,
                    jobs=config.jobs,
                    archiver_socket=options.archiver_socket,
                ).backup()
        log.info("done")
    except SystemExit as exc:
        # barman's coordinate_backup has logged the failure and written FAILED.
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except Exception as exc:
        log.error("Barman cloud backup exception: %s", force_str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
