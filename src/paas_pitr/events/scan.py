"""Reading a range of the WAL archive with ``pg_waldump``, without holding it in memory.

The archive is barman-cloud's layout: ``<server>/wals/<timeline+log>/<segment>[.<compression>]``
(every compression barman-cloud writes: gzip, bzip2, xz, snappy, zstd, lz4).
The segments of a range are downloaded to a temporary directory, decompressed, decoded by
``pg_waldump`` in chunks of consecutive segments (several at once), and each chunk's output
is read line by line, in LSN order, into a sink. A segment is deleted as soon as the chunks
that read it are decoded, and a chunk's output once read: the disk holds a few chunks, the
memory only the records being read.

A record may start in one chunk and end in the next: each chunk is decoded with the first
MiB of the next segment too (``-e``), and only the records starting inside the chunk are
kept, so no record is lost or read twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from barman.cloud import ALLOWED_COMPRESSIONS  # type: ignore[import-untyped]
from barman.compression import get_internal_compressor  # type: ignore[import-untyped]

from paas_pitr.bucket import Bucket
from paas_pitr.errors import ObjectStoreError, WalDecodeFailed
from paas_pitr.events.waldump import WANTED_DESCRIPTIONS, Record, parse_line
from paas_pitr.lsn import WAL_SEGMENT_SIZE, Segment, format_lsn, parse_segment

log = logging.getLogger(__name__)

# What a record crossing into the next segment may span past its start (a commit record
# dropping tens of thousands of files still fits).
_SPILL = 1024 * 1024
_COPY = 1024 * 1024
RMGRS = ("Heap", "Transaction", "Storage", "Standby", "XLOG")
_GREP = ", desc: (" + "|".join(WANTED_DESCRIPTIONS) + ")"
# The suffixes barman-cloud writes, from barman itself, so a compression it adds (or the
# one the archive is configured with, snappy by default) is never skipped.
COMPRESSIONS: dict[str, str | None] = {"": None, **ALLOWED_COMPRESSIONS}


class Sink(Protocol):
    def feed(self, records: Iterable[Record]) -> None: ...


@dataclass(frozen=True, slots=True)
class ArchivedSegment:
    key: str
    segment: Segment
    modified: datetime
    compression: str


@dataclass(slots=True)
class ScanStats:
    segments: int = 0
    bytes: int = 0
    """WAL decoded, uncompressed."""
    seconds: float = 0.0
    read_seconds: float = 0.0
    """Of which: reading pg_waldump's output (waiting on decoding excluded)."""
    lines: int = 0
    first_lsn: int | None = None
    end_lsn: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """How far a scan is: segments decoded (and read into the sink) out of those to
    decode, and the same in bytes of WAL (uncompressed, 16 MiB a segment)."""

    segments_done: int
    segments_total: int

    @property
    def bytes_done(self) -> int:
        return self.segments_done * WAL_SEGMENT_SIZE

    @property
    def bytes_total(self) -> int:
        return self.segments_total * WAL_SEGMENT_SIZE

    def as_dict(self) -> dict[str, int]:
        return {
            "segments_done": self.segments_done,
            "segments_total": self.segments_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
        }


Progress = Callable[[ScanProgress], None]
"""Called once before the first segment is decoded (0 done, also for an empty scan), then
after each chunk of segments is read into the sink, the last time with all done."""


async def archived_segments(bucket: Bucket, wal_prefix: str) -> list[ArchivedSegment]:
    """The WAL segments under ``wal_prefix`` (``<prefix>/<server>/wals/``) in replay order.

    Where timelines overlap (a promotion in the archive's history), a segment of a newer
    timeline replaces the older timeline's segments from its number on.
    """
    found: list[ArchivedSegment] = []
    for obj in await bucket.list_objects(wal_prefix):
        name = obj.key.rsplit("/", 1)[-1]
        stem, dot, suffix = name.partition(".")
        segment = parse_segment(stem)
        if segment is None or f"{dot}{suffix}" not in COMPRESSIONS:
            if segment is not None and not {"backup", "partial"} & set(suffix.split(".")):
                # Never a silent gap in a scan: a segment we cannot read is named (backup
                # labels and partial segments are not segments of the archive's history).
                log.warning("WAL object %s has an unknown compression suffix", obj.key)
            continue
        found.append(ArchivedSegment(obj.key, segment, obj.modified, f"{dot}{suffix}"))
    chosen: dict[int, ArchivedSegment] = {}
    # The newest timeline wins its own numbers and every later one.
    for item in sorted(found, key=lambda a: (a.segment.timeline, a.segment.number)):
        for number in [n for n in chosen if n >= item.segment.number]:
            if chosen[number].segment.timeline < item.segment.timeline:
                del chosen[number]
        chosen[item.segment.number] = item
    return [chosen[n] for n in sorted(chosen)]


def segments_between(
    segments: list[ArchivedSegment], start: datetime | None, end: datetime | None
) -> list[ArchivedSegment]:
    """The segments holding WAL written from ``start`` to ``end``. A segment is archived
    after every record in it was written, so the first one archived at or after ``start``
    holds the first record written then; the first one archived after ``end`` the last."""
    first = 0
    if start is not None:
        first = next((i for i, s in enumerate(segments) if s.modified >= start), len(segments))
    last = len(segments) - 1
    if end is not None:
        last = next((i for i, s in enumerate(segments) if s.modified > end), last)
    return segments[first : last + 1]


def chunked(segments: list[ArchivedSegment], size: int) -> list[list[ArchivedSegment]]:
    """Runs of at most ``size`` consecutive segments of one timeline."""
    chunks: list[list[ArchivedSegment]] = []
    for item in segments:
        current = chunks[-1] if chunks else None
        if (
            current is not None
            and len(current) < size
            and current[-1].segment.number + 1 == item.segment.number
            and current[-1].segment.timeline == item.segment.timeline
        ):
            current.append(item)
        else:
            chunks.append([item])
    return chunks


def _decompress(source: Path, target: Path, suffix: str) -> None:
    compression = COMPRESSIONS[suffix]
    with open(source, "rb") as reader, open(target, "wb") as writer:
        if compression is None:
            shutil.copyfileobj(reader, writer, _COPY)
        else:
            # barman's own decompressors: the objects are read exactly as barman-cloud-wal-
            # restore reads them.
            get_internal_compressor(compression).decompress_to_fileobj(reader, writer)
    source.unlink()


def read_output(path: Path, sink: Sink, until: int | None) -> int:
    """Feed ``sink`` the records of one pg_waldump output, those before ``until`` only; the
    number of lines read."""
    count = 0
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            count += 1
            records = parse_line(line)
            if records and (until is None or records[0].lsn < until):
                sink.feed(records)
    return count


class WalScanner:
    """Decodes archived WAL segments with ``pg_waldump`` (``tool``: its path)."""

    def __init__(
        self, bucket: Bucket, tool: str, *, parallel: int = 2, chunk_segments: int = 4
    ) -> None:
        self.bucket = bucket
        self.tool = tool
        self.parallel = max(1, parallel)
        self.chunk_segments = max(1, chunk_segments)

    async def scan(
        self, segments: list[ArchivedSegment], sink: Sink, progress: Progress | None = None
    ) -> ScanStats:
        """Decode ``segments`` (replay order) into ``sink``; the figures of the scan.
        ``progress`` is told how far the scan is (see :data:`Progress`)."""
        started = time.monotonic()
        stats = ScanStats()
        if progress is not None:
            progress(ScanProgress(0, len(segments)))
        if not segments:
            return stats
        chunks = chunked(segments, self.chunk_segments)
        index = {s.segment: s for s in segments}
        with tempfile.TemporaryDirectory(prefix="paas-pitr-wal-") as workdir:
            root = Path(workdir)
            downloads: dict[Segment, asyncio.Task[Path]] = {}
            users: dict[Segment, int] = {}
            plans: list[tuple[list[ArchivedSegment], ArchivedSegment | None]] = []
            for chunk in chunks:
                after = Segment(chunk[-1].segment.number + 1, chunk[-1].segment.timeline)
                spill = index.get(after)
                plans.append((chunk, spill))
                for item in [*chunk, *([spill] if spill else [])]:
                    users[item.segment] = users.get(item.segment, 0) + 1
            limit = asyncio.Semaphore(self.parallel)

            def fetch(item: ArchivedSegment) -> asyncio.Task[Path]:
                if item.segment not in downloads:
                    downloads[item.segment] = asyncio.create_task(self._fetch(item, root, limit))
                return downloads[item.segment]

            async def decode(number: int) -> Path:
                chunk, spill = plans[number]
                paths = [await fetch(i) for i in [*chunk, *([spill] if spill else [])]]
                folder = root / f"chunk-{number}"
                folder.mkdir()
                for path in paths:
                    os.link(path, folder / path.name)
                output = root / f"chunk-{number}.txt"
                async with limit:
                    await self._waldump(chunk, spill, folder, output, stats)
                shutil.rmtree(folder)
                for item in [*chunk, *([spill] if spill else [])]:
                    users[item.segment] -= 1
                    if users[item.segment] == 0:
                        (root / item.segment.name).unlink(missing_ok=True)
                return output

            tasks: dict[int, asyncio.Task[Path]] = {}
            try:
                done = 0
                for number, (chunk, _) in enumerate(plans):
                    # Decode ahead while this chunk's output is read: at most ``parallel``.
                    for ahead in range(number, min(len(plans), number + self.parallel + 1)):
                        if ahead not in tasks:
                            tasks[ahead] = asyncio.create_task(decode(ahead))
                    output = await tasks.pop(number)
                    until = chunk[-1].segment.end
                    reading = time.monotonic()
                    stats.lines += await asyncio.to_thread(read_output, output, sink, until)
                    stats.read_seconds += time.monotonic() - reading
                    output.unlink()
                    done += len(chunk)
                    stats.segments = done
                    stats.bytes = done * WAL_SEGMENT_SIZE
                    if progress is not None:
                        progress(ScanProgress(done, len(segments)))
            finally:
                for task in [*tasks.values(), *downloads.values()]:
                    task.cancel()
                for task in [*tasks.values(), *downloads.values()]:
                    with contextlib.suppress(BaseException):
                        await task
        stats.first_lsn = segments[0].segment.start
        stats.end_lsn = segments[-1].segment.end
        stats.seconds = time.monotonic() - started
        return stats

    async def _fetch(self, item: ArchivedSegment, root: Path, limit: asyncio.Semaphore) -> Path:
        target = root / item.segment.name
        download = root / f"{item.segment.name}.download{item.compression}"
        async with limit:
            await self.bucket.download(item.key, download)
            try:
                await asyncio.to_thread(_decompress, download, target, item.compression)
            except Exception as exc:
                # Each compression library raises its own errors (snappy's UncompressError,
                # lz4's RuntimeError, OSError for gzip...): all mean the object is unreadable.
                raise ObjectStoreError(
                    f"WAL segment {item.key!r} of the archive is unreadable: {exc}",
                    details={"key": item.key},
                ) from exc
        return target

    async def _waldump(
        self,
        chunk: list[ArchivedSegment],
        spill: ArchivedSegment | None,
        folder: Path,
        output: Path,
        stats: ScanStats,
    ) -> None:
        first, last = chunk[0].segment, chunk[-1].segment
        end = last.end + _SPILL if spill is not None else last.end
        command = [
            self.tool,
            "--path",
            str(folder),
            "--timeline",
            str(first.timeline),
            "--start",
            format_lsn(first.start),
            "--end",
            format_lsn(end),
        ]
        for rmgr in RMGRS:
            command += ["--rmgr", rmgr]
        environment = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
        out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # Most lines are records the finder skips (heap INSERTs above all): grep drops them
        # at C speed before Python reads the rest.
        read_end, write_end = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=write_end, stderr=asyncio.subprocess.PIPE, env=environment
            )
            os.close(write_end)
            write_end = -1
            grep = await asyncio.create_subprocess_exec(
                "grep", "-a", "-E", _GREP, stdin=read_end, stdout=out, env=environment
            )
            os.close(read_end)
            read_end = -1
            _, err = await process.communicate()
            await grep.wait()
        except OSError as exc:
            raise WalDecodeFailed(
                f"cannot run pg_waldump ({self.tool}): {exc}", details={"tool": self.tool}
            ) from exc
        finally:
            for fd in (out, read_end, write_end):
                if fd >= 0:
                    os.close(fd)
        message = err.decode(errors="replace").strip()
        # The end of the readable WAL (a zero-filled tail, a recycled segment, the next one
        # not archived) ends the output with an error naming its LSN: expected in the last
        # segment read, a gap anywhere before it.
        reached = _error_lsn(message)
        last_read = (spill or chunk[-1]).segment.start
        if process.returncode != 0 and message and (reached is None or reached < last_read):
            stats.warnings.append(f"segments {first.name}..{last.name}: {message.splitlines()[-1]}")
            log.warning("pg_waldump on %s..%s: %s", first.name, last.name, message)


def _error_lsn(message: str) -> int | None:
    found = re.search(r" (?:at|after) ([0-9A-F]+)/([0-9A-F]+)", message)
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16) if found else None
