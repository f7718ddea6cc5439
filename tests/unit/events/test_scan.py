"""Which archived segments a scan reads: replay order across timelines, a time range, runs
of consecutive segments."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from barman.clients.cloud_compression import compress  # type: ignore[import-untyped]

from paas_pitr.bucket import InMemoryBucket
from paas_pitr.events.scan import (
    COMPRESSIONS,
    ScanProgress,
    WalScanner,
    _decompress,
    archived_segments,
    chunked,
    segments_between,
)
from paas_pitr.events.waldump import Record

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
PREFIX = "acme/app-1/db-acme-app-1-0a1b2c3d/wals/"


def fill(names: list[str]) -> InMemoryBucket:
    bucket = InMemoryBucket()
    for minute, name in enumerate(names):
        bucket.put_object(f"{PREFIX}{name[:16]}/{name}", b"wal", T0 + timedelta(minutes=minute))
    return bucket


def test_replay_order_history_files_and_timelines(caplog: pytest.LogCaptureFixture) -> None:
    bucket = fill(
        [
            "000000010000000000000002.gz",
            "000000010000000000000003.gz",
            "000000010000000000000004.gz",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.00000028.backup.snappy",
            "000000010000000000000004.partial.gz",
            "00000002.history",
            "000000020000000000000004.gz",
            "000000020000000000000005.lzo",  # no compression barman-cloud writes
            "000000020000000000000006",
            "000000020000000000000007.snappy",  # the archive's default compression
        ]
    )
    found = asyncio.run(archived_segments(bucket, PREFIX))
    # Only the segment that cannot be read is named; backup labels and partial segments
    # are no part of the history.
    assert [r.getMessage().rsplit("/", 1)[-1] for r in caplog.records] == [
        "000000020000000000000005.lzo has an unknown compression suffix"
    ]
    assert [s.segment.name for s in found] == [
        "000000010000000000000002",
        "000000010000000000000003",
        "000000020000000000000004",
        "000000020000000000000006",
        "000000020000000000000007",
    ]
    assert [s.compression for s in found] == [".gz", ".gz", ".gz", "", ".snappy"]
    assert [[s.segment.number for s in run] for run in chunked(found, 2)] == [
        [2, 3],
        [4],
        [6, 7],
    ]


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz", "snappy", "lz4"])
def test_segments_decompress_as_barman_cloud_compressed_them(
    compression: str, tmp_path: Path
) -> None:
    """Every compression the archive may be configured with is read back byte for byte."""
    wal = bytes(range(256)) * 4096  # 1 MiB, compressible
    suffix = next(k for k, v in COMPRESSIONS.items() if v == compression)
    source = tmp_path / f"000000010000000000000002{suffix}"
    source.write_bytes(compress(io.BytesIO(wal), compression, None).getvalue())
    target = tmp_path / "000000010000000000000002"
    _decompress(source, target, suffix)
    assert target.read_bytes() == wal
    assert not source.exists()


def test_segments_between_times() -> None:
    bucket = fill([f"0000000100000000000000{n:02X}.gz" for n in range(2, 12)])
    found = asyncio.run(archived_segments(bucket, PREFIX))
    # Archived at T0+0..9 min: WAL written from T0+2m30 on is in segments archived since,
    # up to the first archived after T0+5m30.
    chosen = segments_between(
        found, T0 + timedelta(minutes=2, seconds=30), T0 + timedelta(minutes=5, seconds=30)
    )
    assert [s.segment.number for s in chosen] == [5, 6, 7, 8]
    assert segments_between(found, T0 + timedelta(hours=1), None) == []
    assert segments_between(found, None, None) == found


def test_progress_counts_every_segment_once_chunk_by_chunk() -> None:
    """The first report before anything is decoded, then one per chunk read: runs of at most
    four consecutive segments of one timeline (a gap and a timeline switch start new ones)."""
    names = [f"0000000100000000000000{n:02X}" for n in (2, 3, 4, 5, 6, 8, 9)]
    bucket = fill([*names, "00000002000000000000000A"])
    segments = asyncio.run(archived_segments(bucket, PREFIX))
    reports: list[ScanProgress] = []
    # ``true`` decodes nothing: what is counted is what was read, not what it held.
    scanner = WalScanner(bucket, "true", parallel=2, chunk_segments=4)
    stats = asyncio.run(scanner.scan(segments, _Nothing(), reports.append))
    assert [(r.segments_done, r.segments_total) for r in reports] == [
        (0, 8),
        (4, 8),
        (5, 8),
        (7, 8),
        (8, 8),
    ]
    assert [(r.bytes_done, r.bytes_total) for r in reports[-2:]] == [
        (7 * 16 * 1024 * 1024, 8 * 16 * 1024 * 1024),
        (8 * 16 * 1024 * 1024, 8 * 16 * 1024 * 1024),
    ]
    assert reports[2].as_dict() == {
        "segments_done": 5,
        "segments_total": 8,
        "bytes_done": 5 * 16 * 1024 * 1024,
        "bytes_total": 8 * 16 * 1024 * 1024,
    }
    assert (stats.segments, stats.bytes) == (8, 8 * 16 * 1024 * 1024)


def test_an_empty_scan_reports_once_with_nothing_to_do() -> None:
    reports: list[ScanProgress] = []
    scanner = WalScanner(InMemoryBucket(), "true")
    stats = asyncio.run(scanner.scan([], _Nothing(), reports.append))
    assert reports == [ScanProgress(0, 0)]
    assert stats.segments == 0


class _Nothing:
    def feed(self, records: Iterable[Record]) -> None:
        raise AssertionError(f"nothing was decoded, yet {list(records)} was fed")
