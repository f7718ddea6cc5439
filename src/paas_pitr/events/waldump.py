"""``pg_waldump`` output, one line per WAL record, read into values.

Only what the finder needs is interpreted: heap row changes, commits and aborts (with the
files they drop and their subtransactions), file creations and truncations, the
AccessExclusiveLocks a standby must replay (they name the relation OIDs a DROP or TRUNCATE
locked) and full-page writes of new files. The line format is PostgreSQL 15's::

    rmgr: Heap        len (rec/tot):     54/    54, tx:        726, lsn: 0/02048C68, prev
    0/02048C00, desc: DELETE off 1 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/16394 blk 0

Times in commit records are printed in pg_waldump's own time zone: the scanner runs it with
``TZ=UTC`` and :func:`parse_line` reads only UTC times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

_LINE = re.compile(
    r"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(?P<xid>\d+), "
    r"lsn: (?P<hi>[0-9A-F]+)/(?P<lo>[0-9A-F]+), prev [0-9A-F]+/[0-9A-F]+, desc: (?P<desc>.*)$"
)
_BLOCK_REF = re.compile(r"rel (\d+)/(\d+)/(\d+)(?: fork \w+)? blk (\d+)")
_LOCK = re.compile(r"xid (\d+) db (\d+) rel (\d+)")
_XACT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
# base/<db>/<node>, global/<node>, pg_tblspc/<spc>/<version dir>/<db>/<node>; a fork or a
# temporary relation's prefix never shows in a commit's dropped files.
_FILE = re.compile(r"^(?:base/(\d+)/(\d+)|global/(\d+)|pg_tblspc/\d+/[^/]+/(\d+)/(\d+))$")

# The descriptions read; any other line (most are heap INSERTs) is skipped before the regex,
# which is what bounds the scan rate. A heap INSERT into a file created in the same
# transaction (TRUNCATE then a reload) is therefore not seen as a rewrite.
WANTED_DESCRIPTIONS = (
    "DELETE",
    "UPDATE",
    "HOT_UPDATE",
    "COMMIT",
    "ABORT",
    "CREATE",
    "TRUNCATE",
    "LOCK xid",
    "FPI",
)
_DESC = ", desc: "

# Relations (and OIDs) below this are the system catalogs: their row changes are DDL.
FIRST_NORMAL_OID = 16384


@dataclass(frozen=True, slots=True)
class FileNode:
    """A relation's file: its database OID (0: shared) and relfilenode."""

    database: int
    node: int

    def path(self) -> str:
        return f"base/{self.database}/{self.node}" if self.database else f"global/{self.node}"


@dataclass(frozen=True, slots=True)
class RowChange:
    """A heap DELETE, UPDATE or HOT_UPDATE of one row."""

    xid: int
    lsn: int
    file: FileNode
    action: str  # "delete" | "update"


@dataclass(frozen=True, slots=True)
class FileWrite:
    """A record writing a page of a file: a heap record, or a full-page image (``image``)
    as a table rewrite or an index build writes them."""

    xid: int
    lsn: int
    file: FileNode
    block: int
    image: bool = False


@dataclass(frozen=True, slots=True)
class FileCreate:
    xid: int
    lsn: int
    file: FileNode


@dataclass(frozen=True, slots=True)
class FileTruncate:
    """``Storage TRUNCATE ... to N blocks``: a file cut in place (VACUUM, or TRUNCATE of a
    table created or truncated earlier in the same transaction)."""

    xid: int
    lsn: int
    file: FileNode
    blocks: int


@dataclass(frozen=True, slots=True)
class RelationLock:
    """An AccessExclusiveLock a standby replays: ``relation`` is a pg_class OID."""

    xid: int
    lsn: int
    database: int
    relation: int


@dataclass(frozen=True, slots=True)
class TransactionEnd:
    """A COMMIT or ABORT record: its time, the files it drops, its subtransactions."""

    xid: int
    lsn: int
    committed: bool
    at: datetime
    dropped: tuple[FileNode, ...] = ()
    subxacts: tuple[int, ...] = field(default=())


Record = RowChange | FileWrite | FileCreate | FileTruncate | RelationLock | TransactionEnd


def _file(text: str) -> FileNode | None:
    match = _FILE.match(text)
    if match is None:
        return None
    base_db, base_node, global_node, spc_db, spc_node = match.groups()
    if base_node is not None:
        return FileNode(int(base_db), int(base_node))
    if global_node is not None:
        return FileNode(0, int(global_node))
    return FileNode(int(spc_db), int(spc_node))


def _first_block(desc: str) -> tuple[FileNode, int] | None:
    match = _BLOCK_REF.search(desc)
    if match is None:
        return None
    _, database, node, block = (int(g) for g in match.groups())
    return FileNode(database, node), block


def _transaction(xid: int, lsn: int, desc: str) -> TransactionEnd | None:
    kind, _, rest = desc.partition(" ")
    if kind not in ("COMMIT", "ABORT"):
        return None  # PREPARE, COMMIT_PREPARED, ASSIGNMENT...: not followed
    moment = _XACT_TIME.match(rest)
    if moment is None:
        return None
    at = datetime.fromisoformat(moment.group(1)).replace(tzinfo=UTC)
    dropped: list[FileNode] = []
    subxacts: list[int] = []
    for part in rest.split("; ")[1:]:
        label, _, values = part.partition(": ")
        if label == "rels":
            dropped.extend(f for f in map(_file, values.split()) if f is not None)
        elif label == "subxacts":
            subxacts.extend(int(v) for v in values.split() if v.isdigit())
    return TransactionEnd(xid, lsn, kind == "COMMIT", at, tuple(dropped), tuple(subxacts))


def _heap_change(line: str, desc: int) -> list[Record]:
    """A heap DELETE or UPDATE line, read by slicing: the bulk of a scan's lines, where the
    full regular expression would set the scan rate."""
    try:
        xid = int(line[line.index("tx:") + 3 : line.index(", lsn:")])
        hi, lo = line[line.index("lsn: ") + 5 : line.index(", prev")].split("/")
        ref = line.index(" rel ", desc) + 5
        _, database, node = line[ref : line.index(" ", ref)].split("/")
        block = int(line[line.index(" blk ", ref) + 5 :].split(",", 1)[0].split()[0])
    except ValueError:
        return []
    lsn = (int(hi, 16) << 32) | int(lo, 16)
    file = FileNode(int(database), int(node))
    action = "delete" if line.startswith("DELETE", desc) else "update"
    return [FileWrite(xid, lsn, file, block), RowChange(xid, lsn, file, action)]


def parse_line(line: str) -> list[Record]:
    """The records of interest in one output line (most lines: none). A line that is not
    a record (pg_waldump's closing error about the end of WAL, say) gives none."""
    at = line.find(_DESC)
    if at < 0 or not line.startswith(WANTED_DESCRIPTIONS, at + len(_DESC)):
        return []
    if line.startswith("rmgr: Heap "):
        return _heap_change(line, at + len(_DESC))
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        return []
    rmgr, desc = match.group("rmgr"), match.group("desc")
    xid = int(match.group("xid"))
    lsn = (int(match.group("hi"), 16) << 32) | int(match.group("lo"), 16)
    if rmgr == "Heap":
        block = _first_block(desc)
        if block is None:
            return []
        file, number = block
        operation = desc.split(" ", 1)[0]
        records: list[Record] = [FileWrite(xid, lsn, file, number)]
        if operation == "DELETE":
            records.append(RowChange(xid, lsn, file, "delete"))
        elif operation in ("UPDATE", "HOT_UPDATE"):
            records.append(RowChange(xid, lsn, file, "update"))
        return records
    if rmgr == "Transaction":
        end = _transaction(xid, lsn, desc)
        return [end] if end is not None else []
    if rmgr == "Storage":
        operation, _, rest = desc.partition(" ")
        target = _file(rest.split(" ", 1)[0])
        if target is None:
            return []
        if operation == "CREATE":
            return [FileCreate(xid, lsn, target)]
        if operation == "TRUNCATE":
            blocks = re.search(r" to (\d+) blocks", rest)
            return [FileTruncate(xid, lsn, target, int(blocks.group(1)) if blocks else 0)]
        return []
    if rmgr == "Standby" and desc.startswith("LOCK "):
        return [RelationLock(int(x), lsn, int(db), int(rel)) for x, db, rel in _LOCK.findall(desc)]
    if rmgr == "XLOG" and desc.startswith("FPI"):
        block = _first_block(desc)
        return [FileWrite(xid, lsn, *block, image=True)] if block is not None else []
    return []
