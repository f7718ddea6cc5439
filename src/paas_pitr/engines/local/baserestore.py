"""Restoring a barman-cloud base backup into a data directory, in this process.

What ``barman-cloud-restore`` does, without its cost: that tool is a new Python process
(interpreter, boto3) that reads the backup's ``backup.info``, lists the backup's folder and
extracts its tar files one after the other in one thread. Here the same objects are found by
barman's own catalog (:class:`barman.cloud.CloudBackupCatalog`, so every layout barman or
CNPG writes is read the way barman reads it: ``data.tar[.<ext>]``, its further parts
``data_0001.tar[.<ext>]``..., one tar per tablespace named by its OID), then every tar part
is downloaded, decompressed and extracted at once by a pool of threads, each part streamed:
no part is ever whole in memory nor copied to disk compressed. Each part runs as two
threads, one downloading and decompressing, one extracting, so a backup of a single part
still uses two cores; zlib, bz2, lz4 and snappy (cramjam) release the GIL while they work,
as do socket reads and file writes.

The checks are barman-cloud-restore's (the backup exists; every target directory is empty)
and stricter ones: the backup must be ``DONE``; the parts of each tar must be numbered
without a gap; each part must end as a tar and as a compressed stream ends (a truncated
object is caught even when it ends between two members); the data directory must hold
``backup_label`` and ``global/pg_control`` at the end. A failure raises
:class:`~paas_pitr.errors.RecoveryError` naming the object, with the library's error
chained. A backup this module does not restore (a snapshot backup, whose data is in disk
snapshots: barman-cloud-restore only checks the volumes and fetches its ``backup_label``)
raises :class:`UnsupportedLayout` before anything is written, for the caller to run
``barman-cloud-restore`` instead.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import logging
import os
import queue
import re
import stat
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from paas_pitr.catalog import DONE
from paas_pitr.engines.local.basebackup import TAR_PARTS_KEY
from paas_pitr.engines.local.folders import NotAFolder, open_beneath
from paas_pitr.errors import ObjectStoreError, RecoveryError
from paas_pitr.postgres.server import OsUser

log = logging.getLogger(__name__)

# What one read of an object asks for, and the decompressed size each queued chunk has at
# most: large enough that the per-chunk Python work is noise next to the copying.
CHUNK_BYTES = 1 << 20
# Chunks a part's downloader may be ahead of its extractor (memory: parts x this x 1 MiB).
QUEUE_CHUNKS = 8
# Tar parts beyond the first are numbered ``_0001``, ``_0002``... (barman's
# CloudUploadController names them so).
_PART = re.compile(r"_(\d{4})\.tar(?:\.[a-z0-9]+)?$")
# What every base backup's data directory holds once restored: without them a part is
# missing (barman writes both into the data tar last).
REQUIRED_FILES = ("backup_label", "global/pg_control")


class UnsupportedLayout(Exception):
    """A backup this module does not restore; ``barman-cloud-restore`` may."""


class ObjectMissing(Exception):
    """The object named does not exist."""


class BackupObjects(Protocol):
    """Read access to the bucket holding a server's base backups.

    Keys are full object keys. Errors other than a missing object raise
    :class:`~paas_pitr.errors.ObjectStoreError`."""

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix``: key -> size in bytes."""
        ...

    def read(self, key: str) -> bytes | None:
        """The whole object, or ``None`` when there is none."""
        ...

    def open(self, key: str) -> io.RawIOBase | Any:
        """A stream of the object's bytes (``read(n)``, ``close()``); raises
        :class:`ObjectMissing` when there is none."""
        ...


class S3BackupObjects:
    """:class:`BackupObjects` over a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def _store_error(self, what: str, exc: Exception) -> ObjectStoreError:
        return ObjectStoreError(f"{what}: {exc}")

    def sizes(self, prefix: str) -> dict[str, int]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return {
                str(item["Key"]): int(item.get("Size") or 0)
                for page in pages
                for item in page.get("Contents", [])
            }
        except (BotoCoreError, ClientError) as exc:
            raise self._store_error(f"cannot list {prefix!r}", exc) from exc

    def read(self, key: str) -> bytes | None:
        try:
            stream = self.open(key)
        except ObjectMissing:
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(stream.read())
        except (BotoCoreError, ClientError) as exc:
            raise self._store_error(f"cannot read {key!r}", exc) from exc
        finally:
            stream.close()

    def open(self, key: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(key) from exc
            raise self._store_error(f"cannot read {key!r}", exc) from exc
        except BotoCoreError as exc:
            raise self._store_error(f"cannot read {key!r}", exc) from exc


class _CatalogInterface:
    """The few calls :class:`barman.cloud.CloudBackupCatalog` makes of a barman
    ``CloudInterface``, answered from :class:`BackupObjects`: barman's catalog logic runs
    on our client, whose credentials are per restore rather than the process's
    environment."""

    def __init__(self, objects: BackupObjects, path: str) -> None:
        self.objects = objects
        self.path = path  # the destination's prefix inside the bucket, "" for none
        self.sizes: dict[str, int] = {}

    def list_bucket(self, prefix: str = "", delimiter: str = "/") -> Iterator[str]:
        prefix = prefix.lstrip("/")
        listed = self.objects.sizes(prefix)
        self.sizes.update(listed)
        if not delimiter:
            yield from listed
            return
        # One flat listing answers both: the objects right under the prefix and the
        # "folders" (the catalog only lists a backup's own folder, which has none).
        folders: set[str] = set()
        for key in listed:
            head, sep, _ = key[len(prefix) :].partition(delimiter)
            if sep:
                folders.add(f"{prefix}{head}{delimiter}")
            else:
                yield key
        yield from sorted(folders)

    def remote_open(self, key: str, decompressor: Any = None) -> io.BytesIO | None:
        assert decompressor is None  # the catalog opens backup.info only
        body = self.objects.read(key.lstrip("/"))
        return None if body is None else io.BytesIO(body)


@dataclass(frozen=True, slots=True)
class TarPart:
    """One tar object of a base backup and where it is extracted."""

    key: str
    compression: str | None
    target: Path
    size: int


@dataclass(slots=True)
class RestorePlan:
    """What restoring one base backup does, known before anything is written."""

    backup_id: str
    parts: list[TarPart]
    links: list[tuple[Path, Path]] = field(default_factory=list)  # (symlink, target)
    wal_directory: str = "pg_wal"


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did: tar objects extracted, their stored (compressed) and written
    bytes, and its wall time in seconds."""

    backup_id: str
    parts: int
    bytes_stored: int
    bytes_extracted: int
    seconds: float


class _Stopped(Exception):
    """The restore was stopped (cancelled, timed out, or another part failed)."""


class BaseBackupRestore:
    """Restores the base backups of one archive (barman's
    ``<destination_prefix>/<server_name>/base/<backup id>/`` in the bucket ``objects``
    reads) with up to
    ``parallel`` tar parts at a time; files are owned by ``user`` (``None``: ourselves)."""

    def __init__(
        self,
        objects: BackupObjects,
        destination_prefix: str,
        server_name: str,
        *,
        parallel: int,
        user: OsUser | None,
    ) -> None:
        self.objects = objects
        self.destination_prefix = destination_prefix.strip("/")
        self.server_name = server_name
        self.parallel = max(1, parallel)
        self.user = user

    @property
    def where(self) -> str:
        return "/".join(p for p in (self.destination_prefix, self.server_name) if p)

    def plan(
        self, backup_id: str, data_dir: Path, tablespaces: Mapping[str, Path] | None = None
    ) -> RestorePlan:
        """The tar parts of ``backup_id`` and where each goes: ``data_dir`` for the data
        directory's, each tablespace's recorded location (or ``tablespaces[name]``).

        Raises :class:`RecoveryError` when the backup is absent or not ``DONE``, a tar or
        one of its parts is missing, or a target directory is not empty;
        :class:`UnsupportedLayout` for a snapshot backup;
        :class:`ObjectStoreError` when the bucket cannot be read."""
        from barman.cloud import CloudBackupCatalog  # type: ignore[import-untyped]

        interface = _CatalogInterface(self.objects, self.destination_prefix)
        catalog = CloudBackupCatalog(interface, self.server_name)
        try:
            info = catalog.get_backup_info(backup_id)
        except ObjectStoreError:
            raise
        # barman's parsing of a damaged backup.info; it exits (SystemExit) when the
        # backup names a cloud provider whose library is not installed.
        except (Exception, SystemExit) as exc:
            raise RecoveryError(
                f"base backup restore failed: cannot read backup.info of {backup_id!r} "
                f"in {self.where}: {exc}"
            ) from exc
        if info is None:
            raise RecoveryError(
                f"base backup restore failed: backup {backup_id!r} not found in {self.where}"
            )
        if info.status != DONE:
            raise RecoveryError(
                f"base backup restore failed: backup {backup_id!r} in {self.where} is "
                f"{info.status}, not DONE"
            )
        if info.snapshots_info:
            raise UnsupportedLayout(f"backup {backup_id} is a snapshot backup")
        files = catalog.get_backup_files(info, allow_missing=True)
        plan = RestorePlan(backup_id, [], wal_directory=info.wal_directory())
        relocated = dict(tablespaces or {})
        for oid, tar in files.items():
            if oid is None:
                target = data_dir
            else:
                space = next((t for t in info.tablespaces or [] if t.oid == oid), None)
                if space is None:  # barman lists only the tablespaces of backup.info
                    raise RecoveryError(
                        f"base backup restore failed: backup.info of {backup_id!r} has no "
                        f"tablespace {oid}"
                    )
                target = Path(relocated.get(space.name, space.location))
                plan.links.append((data_dir / "pg_tblspc" / str(oid), target))
            if tar.path is None:
                raise RecoveryError(
                    f"base backup restore failed: {tar.base}.tar* is missing from the "
                    f"backup {backup_id!r}"
                )
            parts = [tar, *tar.additional_files]
            # barman's catalog skips a main tar of an extension it does not know (so the
            # tar is missing, as above), but keeps such a further part without a path.
            unknown = sorted(
                key
                for key in interface.sizes
                if key.startswith(f"{tar.base}_") and key not in {p.path for p in parts}
            )
            if unknown:
                raise RecoveryError(
                    f"base backup restore failed: {', '.join(unknown)}: not a tar part of a "
                    "known compression"
                )
            parts = [p for p in parts if p.path is not None]
            self._check_numbering(tar.path, [p.path for p in tar.additional_files])
            self._check_count(info, oid, tar.path, len(parts))
            if target.exists() and any(target.iterdir()):
                raise RecoveryError(
                    f"base backup restore failed: destination {target} already exists and "
                    "is not empty"
                )
            plan.parts += [
                TarPart(p.path, p.compression, target, interface.sizes.get(p.path, 0))
                for p in parts
            ]
        # The largest first: the pool ends when its longest part does.
        plan.parts.sort(key=lambda part: -part.size)
        return plan

    @staticmethod
    def _check_count(info: Any, oid: str | None, first: str, found: int) -> None:
        """Our base backup producer records each tar's number of parts in backup.info
        (``copy_stats``): a lost LAST part, which leaves no gap in the numbering, is then
        found for every tar. Backups written by barman-cloud-backup carry no count: for
        them only the data tar's last part is checked (it holds pg_control)."""
        stats = info.copy_stats if isinstance(info.copy_stats, dict) else {}
        counts = stats.get(TAR_PARTS_KEY)
        if not isinstance(counts, dict):
            return
        expected = counts.get("data" if oid is None else str(oid))
        if isinstance(expected, int) and found < expected:
            stem, _, suffix = first.partition(".tar")
            last = f"{stem}_{expected - 1:04d}.tar{suffix}"
            raise RecoveryError(
                f"base backup restore failed: {last} is missing (backup.info records "
                f"{expected} parts of {first.rsplit('/', 1)[-1]}, {found} found)"
            )

    @staticmethod
    def _check_numbering(first: str, others: list[str]) -> None:
        numbers = sorted(int(m.group(1)) for key in others if (m := _PART.search(key)))
        for expected, number in enumerate(numbers, start=1):
            if number != expected:
                stem, _, suffix = first.partition(".tar")
                raise RecoveryError(
                    f"base backup restore failed: {stem}_{expected:04d}.tar{suffix} is "
                    f"missing (the backup holds part {number:04d} after it)"
                )

    def restore(
        self,
        backup_id: str,
        data_dir: Path,
        *,
        stop: threading.Event | None = None,
        tablespaces: Mapping[str, Path] | None = None,
    ) -> RestoreResult:
        """Restore ``backup_id`` into ``data_dir`` (created if absent, else empty).
        Blocking; setting ``stop`` ends it within a chunk's time (raises
        :class:`RecoveryError` then). What a failed restore wrote is left for the caller
        to remove, as barman-cloud-restore leaves it."""
        started = time.monotonic()
        stop = stop or threading.Event()
        plan = self.plan(backup_id, data_dir, tablespaces)
        for target in {part.target for part in plan.parts}:
            try:
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise RecoveryError(
                    f"base backup restore failed: cannot make the destination {target}: "
                    f"{exc.strerror}"
                ) from exc
            self._own(target)
        extracted = self._extract_all(plan, stop)
        absent = [name for name in REQUIRED_FILES if not (data_dir / name).is_file()]
        if absent:
            raise RecoveryError(
                f"base backup restore failed: backup {backup_id!r} restored without "
                f"{', '.join(absent)}: a part of its data tar is missing"
            )
        for link, target in plan.links:
            self._link_tablespace(data_dir, link, target)
        wal = data_dir / plan.wal_directory
        if not wal.exists():
            wal.mkdir(mode=0o700)
            self._own(wal)
        return RestoreResult(
            backup_id,
            len(plan.parts),
            sum(part.size for part in plan.parts),
            extracted,
            time.monotonic() - started,
        )

    def _extract_all(self, plan: RestorePlan, stop: threading.Event) -> int:
        # The first failure stops every other part: its error is the one reported.
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="baserestore") as pool:
            futures: list[Future[int]] = [
                pool.submit(self._extract_part, part, stop) for part in plan.parts
            ]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                stop.set()
                wait(futures)
                errors = [f.exception() for f in futures if f.exception() is not None]
                real = [e for e in errors if not isinstance(e, _Stopped)]
                if real:
                    raise real[0]  # type: ignore[misc]
                raise RecoveryError(
                    f"base backup restore of {plan.backup_id!r} stopped before its end"
                )
            return sum(f.result() for f in futures)

    def _extract_part(self, part: TarPart, stop: threading.Event) -> int:
        if stop.is_set():
            raise _Stopped(part.key)
        try:
            stream = self.objects.open(part.key)
        except ObjectMissing as exc:
            raise RecoveryError(
                f"base backup restore failed: {part.key} is missing from the bucket"
            ) from exc
        chunks = _Pipe(stream, part.compression, stop, part.key)
        try:
            return _extract_tar(chunks, part, self.user, stop)
        except (_Stopped, RecoveryError, ObjectStoreError):
            raise
        except Exception as exc:
            if stop.is_set():
                raise _Stopped(part.key) from exc
            raise RecoveryError(
                f"base backup restore failed: cannot extract {part.key}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            chunks.close()

    def _link_tablespace(self, data_dir: Path, link: Path, target: Path) -> None:
        """``pg_tblspc/<oid>`` -> the tablespace's folder, made in a real ``pg_tblspc`` of
        the data directory (a member of the data tar may have made a link of that name)."""
        relative = link.relative_to(data_dir)
        folder = _open_folder(data_dir, relative.parts[:-1], self.user, str(link), create=True)
        try:
            os.symlink(target, relative.name, dir_fd=folder)
            if self.user is not None:
                os.chown(
                    relative.name,
                    self.user.uid,
                    self.user.gid,
                    dir_fd=folder,
                    follow_symlinks=False,
                )
        except FileExistsError as exc:
            raise RecoveryError(
                f"base backup restore failed: {relative} already exists in the restored "
                f"data directory: the data tar holds it, where the tablespace's link goes"
            ) from exc
        finally:
            os.close(folder)

    def _own(self, path: Path) -> None:
        if self.user is not None:
            os.lchown(path, self.user.uid, self.user.gid)


class _Decompressor:
    """One object's decompression, chunk by chunk; :meth:`finish` raises when the
    stream stopped before its end (a truncated object)."""

    def __init__(self, compression: str | None) -> None:
        self.compression = compression
        self._new()

    def _new(self) -> None:
        if self.compression == "gzip":
            self._codec: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.compression == "bzip2":
            self._codec = bz2.BZ2Decompressor()
        elif self.compression == "lz4":
            import lz4.frame  # type: ignore[import-untyped]

            self._codec = lz4.frame.LZ4FrameDecompressor()
        elif self.compression == "snappy":
            import snappy  # type: ignore[import-untyped]

            self._codec = snappy.StreamDecompressor()
        else:
            self._codec = None

    def feed(self, data: bytes) -> bytes:
        if self._codec is None:
            return data
        if self.compression == "snappy":
            return bytes(self._codec.decompress(data))
        out = [self._codec.decompress(data)]
        # gzip, bzip2 and lz4 streams may be concatenated: each member decompresses alone.
        while self._codec.eof and self._codec.unused_data:
            rest = self._codec.unused_data
            self._new()
            out.append(self._codec.decompress(rest))
        return b"".join(out)

    def finish(self) -> None:
        if self._codec is None:
            return
        if self.compression == "snappy":
            complete = not self._codec.remains
        else:
            complete = bool(self._codec.eof)
        if not complete:
            raise ValueError(f"the {self.compression} stream ends before its end marker")


_END = object()
# Raised by tarfile for the all-zero block that ends an archive (not in its public API).
_END_OF_ARCHIVE: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]


class _Pipe:
    """The decompressed bytes of one object, downloaded by a thread of its own and read
    by the extracting thread; at most :data:`QUEUE_CHUNKS` chunks ahead. Read forward
    only: what tarfile's header parsing needs (``read``, ``tell``), and member data handed
    out as views of the downloaded chunks (:meth:`views`), never copied on the way."""

    def __init__(
        self, stream: Any, compression: str | None, stop: threading.Event, key: str
    ) -> None:
        self.stream = stream
        self.key = key
        self.stop = stop
        self.position = 0  # decompressed bytes consumed
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_CHUNKS)
        self._chunk = memoryview(b"")
        self._ended = False
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._download, args=(compression,), name="baserestore-get", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not (self.stop.is_set() or self._closing.is_set()):
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _download(self, compression: str | None) -> None:
        decompressor = _Decompressor(compression)
        try:
            while True:
                data = self.stream.read(CHUNK_BYTES)
                if not data:
                    break
                plain = memoryview(decompressor.feed(data))
                # Queued in slices: a chunk of lz4 or gzip may inflate many times over.
                for start in range(0, len(plain), CHUNK_BYTES):
                    if not self._put(plain[start : start + CHUNK_BYTES]):
                        return
            decompressor.finish()
        except Exception as exc:
            self._put(exc)
            return
        self._put(_END)

    def _get(self) -> object:
        while True:
            if self.stop.is_set():
                raise _Stopped(self.key)
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def _fill(self) -> bool:
        """Make the current chunk non-empty; ``False`` at the end of the object."""
        while not self._chunk:
            if self._ended:
                return False
            item = self._get()
            if item is _END:
                self._ended = True
                return False
            if isinstance(item, Exception):
                raise RecoveryError(
                    f"base backup restore failed: cannot read {self.key}: "
                    f"{type(item).__name__}: {item}"
                ) from item
            assert isinstance(item, memoryview)
            self._chunk = item
        return True

    def views(self, size: int) -> Iterator[memoryview]:
        """The next ``size`` bytes (fewer at the end of the object), in pieces."""
        while size and self._fill():
            piece = self._chunk[:size]
            self._chunk = self._chunk[len(piece) :]
            self.position += len(piece)
            size -= len(piece)
            yield piece

    def read(self, size: int) -> bytes:
        return b"".join(bytes(piece) for piece in self.views(size))

    def tell(self) -> int:
        return self.position

    def skip_to(self, position: int) -> None:
        for _ in self.views(position - self.position):
            pass

    def drain(self) -> int | None:
        """Read to the end (what follows the tar's end marker); the offset of the first
        byte that is not zero, ``None`` when all are."""
        first: int | None = None
        while self._fill():
            if first is None:
                data = self._chunk.tobytes()
                rest = data.lstrip(b"\0")
                if rest:
                    first = self.position + len(data) - len(rest)
            self.position += len(self._chunk)
            self._chunk = memoryview(b"")
        return first

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self.stream.close()


class _Headers:
    """What :meth:`tarfile.TarInfo.fromtarfile` reads of a ``TarFile``: the archive's
    headers are parsed by tarfile (long names, pax headers included) while the data is
    read from the pipe directly, without tarfile's stream buffers and their copies."""

    encoding = tarfile.ENCODING
    errors = "surrogateescape"

    def __init__(self, fileobj: _Pipe) -> None:
        self.fileobj = fileobj
        self.offset = 0  # where the next header starts
        self.pax_headers: dict[str, str] = {}


def _safe_name(name: str, key: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise RecoveryError(
            f"base backup restore failed: {key} holds {name!r}, outside the target directory"
        )
    return path


def _open_folder(
    target: Path, folders: tuple[str, ...], user: OsUser | None, key: str, *, create: bool
) -> int:
    """A descriptor of ``target/<folders>``, each folder opened without following a
    symbolic link (created first, owned by ``user``, when ``create``).

    Every file of a base backup sits under real folders of the target: a member beneath a
    symbolic link that an earlier member made would be written wherever the link points
    (outside the target, as the service's own user), so such a member fails the restore."""
    # The target itself is the restore's choice (it may be a link to where the space is). A
    # folder its own member or another part's thread made already is opened as it is.
    try:
        return open_beneath(target, folders, user, create=create)
    except NotAFolder as exc:
        where = "/".join(folders[: exc.depth + 1])
        raise RecoveryError(
            f"base backup restore failed: {key} holds a member beneath {where!r}, "
            f"which is not a folder of the target directory ({exc.strerror})"
        ) from exc


def _extract_tar(pipe: _Pipe, part: TarPart, user: OsUser | None, stop: threading.Event) -> int:
    """Extract one tar stream into ``part.target``; the bytes written. Members are
    written as barman-cloud-restore writes them (modes, times), owned by ``user``, each
    through descriptors of its folders so that nothing lands outside the target.

    An intact tar ends with a block of zeros: an unreadable header, or the end of the data
    where a header should be, means the object is damaged or cut (tarfile's own iteration
    would end there quietly)."""
    target = part.target
    written = 0
    directories: list[tuple[PurePosixPath, tarfile.TarInfo]] = []
    headers = _Headers(pipe)
    while True:
        if stop.is_set():
            raise _Stopped(part.key)
        pipe.skip_to(headers.offset)
        try:
            member = tarfile.TarInfo.fromtarfile(headers)  # type: ignore[arg-type]
        except _END_OF_ARCHIVE:
            break
        except tarfile.HeaderError as exc:
            raise RecoveryError(
                f"base backup restore failed: {part.key} is damaged or truncated at byte "
                f"{headers.offset} of its tar: {exc}"
            ) from exc
        relative = _safe_name(member.name, part.key)
        if not relative.parts:
            continue  # the target folder itself ("."), made by the restore
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            log.info("%s: %s skipped (tar type %r)", part.key, member.name, member.type)
            continue
        folder = _open_folder(target, relative.parts[:-1], user, part.key, create=True)
        name = relative.name
        try:
            if member.isreg():
                pipe.skip_to(member.offset_data)
                written += _write_member(pipe, member, folder, user, part.key)
                continue
            if member.isdir():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=folder)
                # Opened once now: a symbolic link of that name fails here.
                os.close(_open_folder(target, relative.parts, user, part.key, create=False))
                directories.append((relative, member))
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=folder)
            else:
                _link(target, folder, name, member, user, part.key)
            if user is not None:
                os.chown(name, user.uid, user.gid, dir_fd=folder, follow_symlinks=False)
        finally:
            os.close(folder)
    # What follows the end-of-archive block: read to the end, so a stream that does not
    # end as its compression says (or a download error) is reported. A tar ends with zero
    # blocks and zero padding: anything else after the first one means that block was not
    # the archive's end but a damaged stream (data that decompresses out of step, whose
    # next "header" fell on a page of zeros) and the members after it would be lost.
    trailing = pipe.drain()
    if trailing is not None:
        raise RecoveryError(
            f"base backup restore failed: {part.key} is damaged: its tar ends at byte "
            f"{headers.offset} but data follows at byte {trailing}"
        )
    for relative, member in reversed(directories):
        fd = _open_folder(target, relative.parts, user, part.key, create=False)
        try:
            os.fchmod(fd, stat.S_IMODE(member.mode) & 0o777)
            os.utime(fd, (member.mtime, member.mtime))
            if user is not None:
                os.fchown(fd, user.uid, user.gid)
        finally:
            os.close(fd)
    return written


def _link(
    target: Path, folder: int, name: str, member: tarfile.TarInfo, user: OsUser | None, key: str
) -> None:
    """A hard link ``name`` (in ``folder``) to the member's earlier file, found through
    real folders of the target; the link itself is never followed."""
    source = _safe_name(member.linkname, key)
    source_folder = _open_folder(target, source.parts[:-1], user, key, create=False)
    try:
        os.link(
            source.name,
            name,
            src_dir_fd=source_folder,
            dst_dir_fd=folder,
            follow_symlinks=False,
        )
    finally:
        os.close(source_folder)


def _write_member(
    pipe: _Pipe, member: tarfile.TarInfo, folder: int, user: OsUser | None, key: str
) -> int:
    name = PurePosixPath(member.name).name
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=folder)
    except OSError as exc:
        raise RecoveryError(
            f"base backup restore failed: {key} holds {member.name!r}, which cannot be "
            f"written in the target directory ({exc.strerror})"
        ) from exc
    try:
        remaining = member.size
        for piece in pipe.views(member.size):
            _write_all(fd, piece)
            remaining -= len(piece)
        if remaining:
            raise RecoveryError(
                f"base backup restore failed: {key} is truncated in {member.name!r}"
            )
        os.fchmod(fd, stat.S_IMODE(member.mode) & 0o777)
        if user is not None:
            os.fchown(fd, user.uid, user.gid)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)
    return member.size


def _write_all(fd: int, data: memoryview) -> None:
    view = data
    while view:
        view = view[os.write(fd, view) :]
