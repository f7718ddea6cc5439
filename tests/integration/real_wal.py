"""Real WAL for the tests of the event finder that run on the in-memory engine or the
Kubernetes engine (whose archives are buckets the test fills): a PostgreSQL 15 writes six
complete segments, a DROP TABLE in the second, a TRUNCATE in the fourth, a DELETE of every
row in the sixth, each segment ended by a WAL switch. The segments are stored as barman-cloud
stores them (gzip) in an addon's WAL folder, each archived at the instant its switch ended it.
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from paas_pitr.bucket import InMemoryBucket, destination_prefix
from paas_pitr.lsn import Segment, parse_lsn, parse_segment
from paas_pitr.postgres.binaries import PostgresBinaries
from paas_pitr.postgres.server import OsUser, PostgresServer, pick_port

# The segment each mistake is written in (0-based, of the six).
DROP_SEGMENT, TRUNCATE_SEGMENT, DELETE_SEGMENT = 1, 3, 5
ROWS = 500
# The fake operator's base backups end at 0/3000100: every event must be after it.
FIRST_LSN = parse_lsn("0/4000000")


@dataclass(frozen=True)
class WalSegment:
    name: str
    wal: bytes
    archived_at: datetime


@dataclass(frozen=True)
class RealWal:
    segments: list[WalSegment]
    started: datetime
    """Before the first record of the first segment was written."""
    dropped_node: int
    """The relfilenode of the dropped table."""

    def store(self, bucket: InMemoryBucket, destination: str, server: str) -> list[str]:
        """Put the segments in ``server``'s WAL folder under ``destination`` (an
        ``s3://bucket/path`` barman destination); their keys."""
        prefix = destination_prefix(destination, bucket.name)
        keys = []
        for segment in self.segments:
            key = f"{prefix}/{server}/wals/{segment.name[:16]}/{segment.name}.gz"
            bucket.put_object(key, gzip.compress(segment.wal, 1), segment.archived_at)
            keys.append(key)
        return keys


def _switch(conn: psycopg.Connection[Any]) -> datetime:
    conn.execute("SELECT pg_switch_wal()")
    return datetime.now(UTC)


def write_real_wal(binaries: PostgresBinaries, workdir: Path) -> RealWal:
    if binaries.major != 15:
        raise AssertionError(f"the finder's tests decode PostgreSQL 15 WAL, not {binaries.major}")
    server = PostgresServer(
        binaries=binaries,
        data_dir=workdir / f"wal-pg-{uuid.uuid4().hex[:8]}" / "data",
        port=pick_port(),
        password=uuid.uuid4().hex,
        user=OsUser.for_servers(),
    )
    server.initdb()
    # No segment is recycled before it is copied.
    server.write_conf({"wal_level": "replica", "wal_keep_size": "1GB", "fsync": "off"})
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            while True:
                lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert lsn is not None
                if parse_lsn(str(lsn[0])) >= FIRST_LSN:
                    break
                conn.execute("CREATE TABLE IF NOT EXISTS warmup (id int)")
                conn.execute("INSERT INTO warmup VALUES (1)")
                _switch(conn)
            _switch(conn)  # the first segment starts with this workload
            started = datetime.now(UTC)
            first: tuple[Any, ...] | None = None
            for table in ("dropped", "truncated", "emptied"):
                conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
                # Right after a switch the current LSN is still the end of the previous
                # segment: the segment is the one the first statement wrote in.
                first = (
                    first or conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
                )
                conn.execute(
                    f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g"
                )
            node = conn.execute("SELECT pg_relation_filenode('dropped')").fetchone()
            assert node is not None
            archived = [_switch(conn)]
            for step in range(1, 6):
                if step == DROP_SEGMENT:
                    conn.execute("DROP TABLE dropped")
                elif step == TRUNCATE_SEGMENT:
                    conn.execute("TRUNCATE truncated")
                elif step == DELETE_SEGMENT:
                    conn.execute("DELETE FROM emptied")
                else:
                    conn.execute(f"INSERT INTO emptied VALUES ({ROWS + step}, 'filler')")
                    conn.execute(f"DELETE FROM emptied WHERE id = {ROWS + step}")
                archived.append(_switch(conn))
    finally:
        server.stop()
    assert first is not None
    start = parse_segment(str(first[0]))
    assert start is not None
    wal_dir = server.data_dir / "pg_wal"
    segments = []
    for index, at in enumerate(archived):
        name = Segment(start.number + index, start.timeline).name
        segments.append(WalSegment(name, (wal_dir / name).read_bytes(), at))
    server.destroy()
    return RealWal(segments, started, int(node[0]))
