"""ScheduledBackup schedules: exactly 6 cron fields, seconds first.

CNPG parses schedules with robfig/cron where the day-of-week field is optional, so a
5-field string such as ``0 2 * * *`` is accepted and silently means "every hour at :02"
(the fields are read seconds first). We only ever render 6 fields and refuse anything else.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from datetime import UTC, datetime, timedelta

from croniter import croniter

from paas_pitr.errors import InvalidSchedule
from paas_pitr.timestamps import format_api_time

DAY = timedelta(days=1)
# Daily schedules are checked on their runs from the start of a leap year over a bit more
# than a year: every month length, February 29th, and every weekday on every day of the
# month go by, so a day-of-month, month or weekday restriction cannot hide. UTC has no DST:
# a daily run is exactly 24 h after the previous one.
_DAILY_CHECK_FROM = datetime(2024, 1, 1, tzinfo=UTC)
_DAILY_CHECK_RUNS = 400
_EXAMPLE = "'0 30 2 * * *'"


def validate_schedule(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 6:
        raise InvalidSchedule(
            f"schedule {expression!r} has {len(fields)} fields; CNPG schedules need exactly 6 "
            "(seconds minutes hours day-of-month month day-of-week), e.g. '0 30 2 * * *'",
            details={"schedule": expression},
        )
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized, second_at_beginning=True):
        raise InvalidSchedule(
            f"schedule {expression!r} is not a valid cron expression",
            details={"schedule": expression},
        )
    return normalized


def _runs(expression: str, after: datetime, count: int) -> list[datetime]:
    iterator = croniter(expression, after, second_at_beginning=True)
    return [iterator.get_next(datetime) for _ in range(count)]


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@functools.lru_cache(maxsize=256)
def _irregular_gap(expression: str) -> timedelta | None:
    """``None`` when every two consecutive runs are 24 h apart; otherwise the shortest
    interval if it is under 24 h (the schedule runs too often), else the longest (cached:
    builders check the same setting for every addon they render)."""
    runs = _runs(expression, _DAILY_CHECK_FROM, _DAILY_CHECK_RUNS)
    gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
    if min(gaps) < DAY:
        return min(gaps)
    if max(gaps) > DAY:
        return max(gaps)
    return None


def validate_daily_schedule(expression: str, *, now: datetime | None = None) -> str:
    """A valid 6-field schedule (see :func:`validate_schedule`) that runs exactly once a
    day, in UTC: every two consecutive runs are 24 h apart. Returns it normalised.

    Raises :class:`InvalidSchedule` otherwise; for a valid cron that runs more or less
    often, the message and ``details`` show what it would do instead: ``schedule``,
    ``interval_seconds`` (the shortest interval between two runs when under 24 h, else
    the longest) and ``next_runs`` (the next 3 runs after ``now``, default the current
    time, as RFC 3339 UTC strings).
    """
    normalized = validate_schedule(expression)
    gap = _irregular_gap(normalized)
    if gap is None:
        return normalized
    upcoming = [format_api_time(run) for run in _runs(normalized, now or datetime.now(UTC), 3)]
    how = (
        f"more than once a day (runs as little as {_duration(gap)} apart"
        if gap < DAY
        else f"less than once a day (runs as much as {_duration(gap)} apart"
    )
    raise InvalidSchedule(
        f"schedule {expression!r} runs {how}; next runs: {', '.join(upcoming)}): the daily "
        f"base backup needs exactly one run every 24h, e.g. {_EXAMPLE}",
        details={
            "schedule": expression,
            "interval_seconds": int(gap.total_seconds()),
            "next_runs": upcoming,
        },
    )


def daily_schedule_for(cluster_name: str) -> str:
    """A stable daily time between 00:00 and 05:59 UTC derived from the cluster name.

    Thousands of addons backing up at the same second would hammer the object store and
    the nodes; hashing spreads them while keeping every re-render identical.
    """
    digest = int.from_bytes(hashlib.sha256(cluster_name.encode()).digest()[:4], "big")
    minute_of_window = digest % (6 * 60)
    return f"0 {minute_of_window % 60} {minute_of_window // 60} * * *"


def next_run(expression: str, after: datetime) -> datetime:
    """The first instant strictly after ``after`` matching the schedule (same tz as ``after``)."""
    iterator = croniter(validate_schedule(expression), after, second_at_beginning=True)
    result: datetime = iterator.get_next(datetime)
    return result
