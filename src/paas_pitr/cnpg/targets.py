"""Recovery targets besides an instant and a base backup's end, as CNPG's ``recoveryTarget``
renders them: an LSN, a transaction id, a named restore point, the end of the archive.

Every one names its base backup (``backupID``): CNPG requires it for ``targetXID`` and
``targetName``, and picks the newest backup otherwise, which may end after the target (then
PostgreSQL stops with "requested recovery stop point is before consistent recovery point").
``inclusive`` is PostgreSQL's ``recovery_target_inclusive`` (CNPG: ``exclusive`` negated);
PostgreSQL's and CNPG's default is inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AtLsn:
    """Replay up to the WAL record at this LSN (``X/Y``): including it, or stopping just
    before it."""

    lsn: str
    backup_id: str
    inclusive: bool = True


@dataclass(frozen=True, slots=True)
class AtXid:
    """Replay up to the commit of this transaction id: including it, or stopping just
    before it (every transaction committed earlier is restored, it is not)."""

    xid: int
    backup_id: str
    inclusive: bool = True


@dataclass(frozen=True, slots=True)
class AtRestorePoint:
    """Replay up to a named restore point (``pg_create_restore_point``)."""

    name: str
    backup_id: str


@dataclass(frozen=True, slots=True)
class EndOfArchive:
    """Replay every archived WAL segment: the newest restorable instant ("latest")."""

    backup_id: str | None = None


ExtendedTarget = AtLsn | AtXid | AtRestorePoint | EndOfArchive


def render_extended(target: ExtendedTarget) -> Manifest | None:
    """The ``recoveryTarget`` of ``target``; ``None`` (no recoveryTarget at all) to replay
    the whole archive, which is how CNPG is told "latest"."""
    if isinstance(target, EndOfArchive):
        return None
    rendered: Manifest = {"backupID": target.backup_id}
    if isinstance(target, AtLsn):
        rendered["targetLSN"] = target.lsn
    elif isinstance(target, AtXid):
        rendered["targetXID"] = str(target.xid)
    else:
        rendered["targetName"] = target.name
    if not isinstance(target, AtRestorePoint) and not target.inclusive:
        rendered["exclusive"] = True
    return rendered
