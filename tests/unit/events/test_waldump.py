"""The pg_waldump output parser and the detector, on lines captured from PostgreSQL 15's
pg_waldump (a DELETE without WHERE, a TRUNCATE, a DROP TABLE, a subtransaction, an abort)."""

from __future__ import annotations

from datetime import UTC, datetime

from paas_pitr.events.detect import Detector
from paas_pitr.events.waldump import (
    FileCreate,
    FileNode,
    FileTruncate,
    FileWrite,
    RelationLock,
    RowChange,
    TransactionEnd,
    parse_line,
)

DELETE = (
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        726, lsn: 0/02048C68, prev "
    "0/02048C00, desc: DELETE off 1 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/16394 blk 0"
)
COMMIT = (
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        726, lsn: 0/0204E430, prev "
    "0/0204E3F8, desc: COMMIT 2026-11-29 18:34:11.751202 UTC"
)
UPDATE = (
    "rmgr: Heap        len (rec/tot):     78/    78, tx:        727, lsn: 0/0204E490, prev "
    "0/0204E458, desc: UPDATE off 1 xmax 727 flags 0x00 ; new off 75 xmax 0, blkref #0: rel "
    "1663/5/16391 blk 1, blkref #1: rel 1663/5/16391 blk 0"
)
HOT_UPDATE = (
    "rmgr: Heap        len (rec/tot):     71/    71, tx:        733, lsn: 0/02061308, prev "
    "0/020612C8, desc: HOT_UPDATE off 1 xmax 733 flags 0x60 ; new off 11 xmax 0, blkref #0: "
    "rel 1663/5/16400 blk 0"
)
TRUNCATE = [
    "rmgr: Standby     len (rec/tot):     42/    42, tx:        728, lsn: 0/02058458, prev "
    "0/02058430, desc: LOCK xid 728 db 5 rel 16391 ",
    "rmgr: Storage     len (rec/tot):     42/    42, tx:        728, lsn: 0/02058488, prev "
    "0/02058458, desc: CREATE base/5/16399",
    "rmgr: Transaction len (rec/tot):    114/   114, tx:        728, lsn: 0/020585F8, prev "
    "0/020585B8, desc: COMMIT 2026-11-29 18:34:11.768577 UTC; rels: base/5/16391; inval msgs: "
    "catcache 55 catcache 54 relcache 16391",
]
DROP = [
    "rmgr: Standby     len (rec/tot):     42/    42, tx:        729, lsn: 0/02058670, prev "
    "0/020585F8, desc: LOCK xid 729 db 5 rel 16384 ",
    "rmgr: Standby     len (rec/tot):     42/    42, tx:        729, lsn: 0/020586A0, prev "
    "0/02058670, desc: LOCK xid 729 db 5 rel 16387 ",
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        729, lsn: 0/02058A48, prev "
    "0/02058A00, desc: DELETE off 36 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/1259 blk 5",
    "rmgr: Transaction len (rec/tot):   1245/  1245, tx:        729, lsn: 0/02058F48, prev "
    "0/02058F10, desc: COMMIT 2026-11-29 18:34:11.777895 UTC; rels: base/5/16384 base/5/16387 "
    "base/5/16388 base/5/16389; dropped stats: 2/5/16389 2/5/16388 2/5/16387 2/5/16384; inval "
    "msgs: catcache 32 catcache 7",
]
SUBTRANSACTION = [
    "rmgr: Heap        len (rec/tot):     61/    61, tx:        731, lsn: 0/0205BF80, prev "
    "0/0205BF48, desc: INSERT+INIT off 1 flags 0x00, blkref #0: rel 1663/5/16394 blk 0",
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        732, lsn: 0/0205BFC0, prev "
    "0/0205BF80, desc: DELETE off 1 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/16394 blk 0",
    "rmgr: Transaction len (rec/tot):     46/    46, tx:        731, lsn: 0/0205BFF8, prev "
    "0/0205BFC0, desc: COMMIT 2026-11-29 18:35:24.411769 UTC; subxacts: 732",
]
ABORTED = [
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        734, lsn: 0/03000060, prev "
    "0/03000028, desc: DELETE off 11 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/16400 blk 0",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        734, lsn: 0/030000D0, prev "
    "0/03000098, desc: ABORT 2026-11-29 18:35:30.540285 UTC",
]
END_OF_WAL = (
    "pg_waldump: error: error in WAL record at 0/3000028: invalid record length at 0/3000060: "
    "wanted 24, got 0"
)
T3 = FileNode(5, 16394)


def feed(detector: Detector, lines: list[str]) -> None:
    for line in lines:
        detector.feed(parse_line(line))


def test_heap_records() -> None:
    assert parse_line(DELETE) == [
        FileWrite(726, 0x2048C68, T3, 0),
        RowChange(726, 0x2048C68, T3, "delete"),
    ]
    assert parse_line(UPDATE)[1] == RowChange(727, 0x204E490, FileNode(5, 16391), "update")
    assert parse_line(HOT_UPDATE)[1] == RowChange(733, 0x2061308, FileNode(5, 16400), "update")


def test_transaction_ends() -> None:
    assert parse_line(COMMIT) == [
        TransactionEnd(726, 0x204E430, True, datetime(2026, 11, 29, 18, 34, 11, 751202, UTC))
    ]
    (drop,) = parse_line(DROP[-1])
    assert isinstance(drop, TransactionEnd)
    assert drop.dropped == tuple(FileNode(5, n) for n in (16384, 16387, 16388, 16389))
    (sub,) = parse_line(SUBTRANSACTION[-1])
    assert isinstance(sub, TransactionEnd) and sub.subxacts == (732,)
    (abort,) = parse_line(ABORTED[-1])
    assert isinstance(abort, TransactionEnd) and not abort.committed


def test_storage_and_locks() -> None:
    assert parse_line(TRUNCATE[0]) == [RelationLock(728, 0x2058458, 5, 16391)]
    assert parse_line(TRUNCATE[1]) == [FileCreate(728, 0x2058488, FileNode(5, 16399))]
    truncated = (
        "rmgr: Storage     len (rec/tot):     46/    46, tx:        740, lsn: 0/03001000, prev "
        "0/03000F00, desc: TRUNCATE base/5/16400 to 0 blocks flags 7"
    )
    assert parse_line(truncated) == [FileTruncate(740, 0x3001000, FileNode(5, 16400), 0)]


def test_lines_that_are_not_records_give_nothing() -> None:
    assert parse_line(END_OF_WAL) == []
    assert parse_line("") == []
    restore_point = (
        "rmgr: XLOG        len (rec/tot):     98/    98, tx:          0, lsn: 0/02048C00, prev "
        "0/02048BD8, desc: RESTORE_POINT before migration 42"
    )
    assert parse_line(restore_point) == []


def test_detector_finds_a_delete_a_truncate_and_a_drop() -> None:
    detector = Detector(threshold=2)
    feed(detector, [DELETE, DELETE.replace("0/02048C68", "0/02048CA0"), COMMIT])
    feed(detector, TRUNCATE)
    feed(detector, DROP)
    delete, truncate, drop = detector.findings
    assert (delete.kind, delete.xid, delete.commit_lsn) == ("delete", 726, 0x204E430)
    assert delete.rows == {T3: 2} and delete.total_rows == 2
    assert (truncate.kind, truncate.files, truncate.locked) == (
        "truncate",
        (FileNode(5, 16391),),
        (16391,),
    )
    assert truncate.created == (FileNode(5, 16399),)
    assert (drop.kind, drop.database, drop.locked) == ("drop", 5, (16384, 16387))
    assert [f.node for f in drop.files] == [16384, 16387, 16388, 16389]
    # The catalog rows a DROP deletes (pg_class, 1259) are not user rows.
    assert drop.rows == {}
    assert detector.open == {}


def test_rows_below_the_threshold_aborts_and_subtransactions() -> None:
    detector = Detector(threshold=2)
    feed(detector, [DELETE, COMMIT])  # one row: below the threshold
    feed(detector, ABORTED)
    assert detector.findings == []
    once = Detector(threshold=1)
    feed(once, SUBTRANSACTION)
    (found,) = once.findings
    assert (found.kind, found.xid, found.rows) == ("delete", 731, {T3: 1})


def test_a_rewrite_is_not_a_truncate() -> None:
    # VACUUM FULL: a new file, rows written into it, the old one dropped at commit.
    rewrite = [
        TRUNCATE[1],
        "rmgr: XLOG        len (rec/tot):     49/  8241, tx:        728, lsn: 0/02058500, prev "
        "0/02058488, desc: FPI , blkref #0: rel 1663/5/16399 blk 1 FPW",
        TRUNCATE[2],
    ]
    detector = Detector(threshold=1)
    feed(detector, rewrite)
    assert detector.findings == []
