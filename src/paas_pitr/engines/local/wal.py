"""WAL positions and the archiver's progress: segment file names, LSNs, and
``pg_stat_archiver``'s row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

WAL_SEGMENT_BYTES = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})$")


def segment_end_lsn(wal_name: str | None) -> int | None:
    """The LSN just past the end of a WAL segment file (16 MiB segments)."""
    match = _SEGMENT.match(wal_name or "")
    if not match:
        return None
    log_id, segment = int(match.group(1), 16), int(match.group(2), 16)
    return (log_id << 32) + (segment + 1) * WAL_SEGMENT_BYTES


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class ArchiverStats:
    """One row of ``pg_stat_archiver``."""

    archived_count: int = 0
    last_archived_wal: str | None = None
    last_archived_time: datetime | None = None
    failed_count: int = 0
    last_failed_wal: str | None = None
    last_failed_time: datetime | None = None

    @property
    def failing(self) -> bool:
        if self.last_failed_time is None:
            return False
        # failed_count never resets, not even once archiving works again: compare the
        # times of the last failure and the last success, never the counts.
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time
