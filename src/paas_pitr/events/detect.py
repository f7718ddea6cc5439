"""Destructive transactions, found in a stream of WAL records read in LSN order.

A transaction's records are gathered until its commit or abort record; an aborted one is
forgotten, a committed one becomes zero or more :class:`Finding` values:

- ``drop``: its commit drops relation files and it created none (``DROP TABLE``, ``DROP
  INDEX``, ``DROP SCHEMA ... CASCADE``);
- ``truncate``: its commit drops files and it created new, empty ones (``TRUNCATE`` gives a
  table and its indexes new files; an index's new file only gets its metapage), or a
  ``Storage TRUNCATE`` to 0 blocks inside a transaction. A transaction that wrote rows into
  its new files rewrote a table (``VACUUM FULL``, ``CLUSTER``, ``ALTER TABLE ... TYPE``) and
  is not reported; one that rewrote a table of a single page still looks like a truncate;
- ``delete`` / ``update``: at least ``threshold`` heap rows deleted (updated) in user
  relations, subtransactions included.

Only the transactions still open are held in memory, whatever the volume scanned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from paas_pitr.events.waldump import (
    FIRST_NORMAL_OID,
    FileCreate,
    FileNode,
    FileTruncate,
    FileWrite,
    Record,
    RelationLock,
    RowChange,
    TransactionEnd,
)

EventKind = Literal["drop", "truncate", "delete", "update"]
EVENT_KINDS: tuple[EventKind, ...] = ("drop", "truncate", "delete", "update")


@dataclass(frozen=True, slots=True)
class Finding:
    """One destructive action of one committed transaction."""

    kind: EventKind
    xid: int
    commit_lsn: int
    committed_at: datetime
    database: int
    files: tuple[FileNode, ...]
    """The files dropped or emptied, or the files whose rows were changed."""
    rows: dict[FileNode, int] = field(default_factory=dict)
    """Rows deleted (updated) per file; empty for a drop or a truncate."""
    locked: tuple[int, ...] = ()
    """The relation OIDs the transaction locked AccessExclusive in that database."""
    created: tuple[FileNode, ...] = ()
    """The files the transaction created (a truncated table's new files)."""

    @property
    def total_rows(self) -> int | None:
        return sum(self.rows.values()) if self.rows else None


@dataclass(slots=True)
class _Open:
    rows: Counter[tuple[FileNode, str]] = field(default_factory=Counter)
    created: set[FileNode] = field(default_factory=set)
    written: set[FileNode] = field(default_factory=set)
    emptied: set[FileNode] = field(default_factory=set)
    locks: set[tuple[int, int]] = field(default_factory=set)

    def absorb(self, other: _Open) -> None:
        self.rows.update(other.rows)
        self.created |= other.created
        self.written |= other.written
        self.emptied |= other.emptied
        self.locks |= other.locks


class Detector:
    """Feed records in LSN order (:meth:`feed`); :attr:`findings` grows as transactions
    commit. ``threshold``: the fewest rows a DELETE/UPDATE transaction must touch."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.findings: list[Finding] = []
        self.open: dict[int, _Open] = {}
        self.records = 0
        self.last_lsn: int | None = None
        self.last_commit_at: datetime | None = None

    def _tx(self, xid: int) -> _Open:
        found = self.open.get(xid)
        if found is None:
            found = self.open[xid] = _Open()
        return found

    def feed(self, records: Iterable[Record]) -> None:
        for record in records:
            self.records += 1
            self.last_lsn = record.lsn
            if isinstance(record, RowChange):
                if record.file.node >= FIRST_NORMAL_OID and record.xid:
                    self._tx(record.xid).rows[(record.file, record.action)] += 1
            elif isinstance(record, FileCreate):
                if record.xid:
                    self._tx(record.xid).created.add(record.file)
            elif isinstance(record, FileWrite):
                tx = self.open.get(record.xid)
                # A new index's metapage is written at creation, data never at block 0 only.
                if (
                    tx is not None
                    and record.file in tx.created
                    and (not record.image or record.block > 0)
                ):
                    tx.written.add(record.file)
            elif isinstance(record, FileTruncate):
                if record.xid and record.blocks == 0 and record.file.node >= FIRST_NORMAL_OID:
                    self._tx(record.xid).emptied.add(record.file)
            elif isinstance(record, RelationLock):
                if record.relation >= FIRST_NORMAL_OID and record.xid:
                    self._tx(record.xid).locks.add((record.database, record.relation))
            elif isinstance(record, TransactionEnd):
                self._end(record)

    def _end(self, end: TransactionEnd) -> None:
        tx = self.open.pop(end.xid, None) or _Open()
        for sub in end.subxacts:
            found = self.open.pop(sub, None)
            if found is not None:
                tx.absorb(found)
        if not end.committed:
            return
        self.last_commit_at = end.at
        self.findings.extend(self._findings(end, tx))

    def _findings(self, end: TransactionEnd, tx: _Open) -> list[Finding]:
        found: list[Finding] = []
        dropped = [f for f in end.dropped if f.node >= FIRST_NORMAL_OID and f not in tx.created]
        new_files = tx.created - set(end.dropped)
        by_database: dict[int, list[FileNode]] = {}
        for file in dropped:
            by_database.setdefault(file.database, []).append(file)
        for file in sorted(tx.emptied - tx.created, key=lambda f: (f.database, f.node)):
            by_database.setdefault(file.database, [])
        for database, files in sorted(by_database.items()):
            created = tuple(sorted((f for f in new_files if f.database == database), key=_key))
            emptied = [f for f in tx.emptied if f.database == database and f not in tx.created]
            if files and not created:
                kind: EventKind | None = "drop"
            elif (files and not (tx.written & set(created))) or emptied:
                kind = "truncate"
            else:
                kind = None  # a rewrite: the rows went into the new files
            if kind is None:
                continue
            found.append(
                Finding(
                    kind=kind,
                    xid=end.xid,
                    commit_lsn=end.lsn,
                    committed_at=end.at,
                    database=database,
                    files=tuple(sorted({*files, *emptied}, key=_key)),
                    locked=tuple(sorted(r for d, r in tx.locks if d == database)),
                    created=created,
                )
            )
        for action in ("delete", "update"):
            rows = {file: n for (file, act), n in tx.rows.items() if act == action}
            if not rows or sum(rows.values()) < self.threshold:
                continue
            for database in sorted({f.database for f in rows}):
                mine = {f: n for f, n in rows.items() if f.database == database}
                found.append(
                    Finding(
                        kind="delete" if action == "delete" else "update",
                        xid=end.xid,
                        commit_lsn=end.lsn,
                        committed_at=end.at,
                        database=database,
                        files=tuple(sorted(mine, key=_key)),
                        rows=mine,
                    )
                )
        return found


def _key(file: FileNode) -> tuple[int, int]:
    return (file.database, file.node)
