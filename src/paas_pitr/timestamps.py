"""Parsing user timestamps and rendering the one targetTime spelling every CNPG accepts."""

from __future__ import annotations

from datetime import UTC, datetime

from paas_pitr.errors import InvalidTimestamp, TimestampWithoutOffset

# The instants a caller may name. No WAL is older than the Unix epoch, and both bounds
# keep a year between them and what ``datetime`` holds, so that adding a retention period,
# a scan range or a consistency margin to an accepted instant can never overflow.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 instant that names its offset (``Z`` or ``+hh:mm``); return it in UTC.

    A naive time is refused: PostgreSQL would read it in the server's time zone while CNPG
    picks the base backup assuming UTC, restoring the wrong data.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidTimestamp("timestamp must be a non-empty ISO 8601 string")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidTimestamp(
            f"timestamp {value!r} is not ISO 8601 (example: 2026-05-04T15:30:00Z)",
            details={"timestamp": value},
        ) from exc
    if "T" not in text.upper() and " " not in text:
        # A bare date parses as midnight; nobody means that for a restore target.
        raise InvalidTimestamp(
            f"timestamp {value!r} has no time of day (example: 2026-05-04T15:30:00Z)",
            details={"timestamp": value},
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise TimestampWithoutOffset(
            f"timestamp {value!r} has no UTC offset; add 'Z' or '+hh:mm' "
            "(example: 2026-05-04T15:30:00Z)",
            details={"timestamp": value},
        )
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00 is in year 0 in UTC, which datetime cannot hold.
        raise InvalidTimestamp(
            f"timestamp {value!r} is out of range once converted to UTC",
            details={"timestamp": value},
        ) from exc
    if not EARLIEST_INSTANT <= moment <= LATEST_INSTANT:
        raise InvalidTimestamp(
            f"timestamp {value!r} is out of range: instants from "
            f"{format_api_time(EARLIEST_INSTANT)} to {format_api_time(LATEST_INSTANT)} "
            "are accepted",
            details={"timestamp": value},
        )
    return moment


def require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimestampWithoutOffset("a naive datetime cannot be a recovery target")
    return moment.astimezone(UTC)


def render_target_time(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff+00:00``: parsed identically by every CNPG version and
    passed to ``recovery_target_time`` unchanged, which PostgreSQL reads with its offset."""
    utc = require_aware(moment)
    return utc.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00:00"


def format_api_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as the API returns every instant."""
    utc = require_aware(moment)
    text = utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_k8s_time(value: object) -> datetime | None:
    """Read a date-time written by Kubernetes/CNPG; ``None`` for anything absent or garbled."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # Kubernetes always writes UTC; a missing offset means UTC, not local time.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_k8s_time(moment: datetime | None) -> str | None:
    """RFC 3339 in whole seconds with a ``Z``: how Kubernetes and CNPG write status times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
