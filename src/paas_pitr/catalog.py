"""Barman's catalog as the bucket stores it: one ``<server>/base/<backup_id>/backup.info``
per base backup (``key=value`` lines), read by the control plane without barman-cloud.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

DONE = "DONE"


@dataclass(frozen=True, slots=True)
class CatalogBackup:
    """One base backup as barman's ``backup.info`` describes it."""

    backup_id: str
    status: str
    begin_time: datetime | None
    end_time: datetime | None
    pg_major: int | None
    """The PostgreSQL major the backup was taken from (a restore needs the same one)."""


def _aware(value: str | None, *, field: str, backup_id: str) -> datetime | None:
    """An instant written with its offset, in UTC; ``None`` for anything else.

    A time without an offset is never read as UTC: barman writes wall-clock times in the
    zone of the process that took the backup, so guessing shifts a backup's end by the
    host's offset and a restore could start from a backup taken after its target.
    """
    if value is None or value in ("", "None"):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        log.warning("backup %s: %s %r is not an ISO 8601 time; ignored", backup_id, field, value)
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        log.warning("backup %s: %s %r has no UTC offset; ignored", backup_id, field, value)
        return None
    return parsed.astimezone(UTC)


def _major(value: str | None) -> int | None:
    # ``version`` is server_version_num: 150004 is 15.4. Before 10 the major had two parts,
    # which no supported CNPG image runs.
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number // 10000 if number >= 100000 else None


def parse_backup_info(text: str, backup_id: str) -> CatalogBackup:
    """Read barman's ``backup.info`` (``key=value`` lines).

    The ``*_time_iso`` fields (barman's JSON spelling) are preferred where present; the
    ``begin_time`` / ``end_time`` lines that barman-cloud writes are ``str()`` of an aware
    datetime (``2026-05-04 10:00:00.123456+00:00``) and are read only when they carry an
    offset.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()

    def when(name: str) -> datetime | None:
        iso = fields.get(f"{name}_iso")
        if iso not in (None, "", "None"):
            return _aware(iso, field=f"{name}_iso", backup_id=backup_id)
        return _aware(fields.get(name), field=name, backup_id=backup_id)

    return CatalogBackup(
        backup_id=fields.get("backup_id") or backup_id,
        status=fields.get("status", ""),
        begin_time=when("begin_time"),
        end_time=when("end_time"),
        pg_major=_major(fields.get("version")),
    )


def render_backup_info(backup: CatalogBackup) -> str:
    """``backup.info`` as barman-cloud writes it (for fakes and tests)."""
    lines = {
        "backup_id": backup.backup_id,
        "status": backup.status,
        "begin_time": str(backup.begin_time) if backup.begin_time else "None",
        "end_time": str(backup.end_time) if backup.end_time else "None",
        "version": str(backup.pg_major * 10000) if backup.pg_major else "None",
    }
    return "".join(f"{key}={value}\n" for key, value in sorted(lines.items()))
