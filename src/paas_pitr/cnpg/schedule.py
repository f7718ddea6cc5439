"""ScheduledBackup schedules: exactly 6 cron fields, seconds first.

CNPG parses schedules with robfig/cron (v3, seconds first), where the day-of-week field is
optional, so a 5-field string such as ``0 2 * * *`` is accepted and silently means "every
hour at :02". We only ever render 6 fields and refuse anything else, and we read a schedule
the way robfig/cron does, not the way a Python cron library would:

- fields: seconds 0-59, minutes 0-59, hours 0-23, day of month 1-31, month 1-12 or
  JAN-DEC, day of week 0-6 or SUN-SAT (7 is refused, as robfig refuses it); each a list of
  ``*``, ``?``, ``N`` or ``N-M``, with an optional ``/step``; nothing else (no ``L``, ``#``,
  ``W``);
- days: when the day-of-month or the day-of-week field starts with ``*`` or ``?`` (and has
  no step above 1, so ``*/1`` counts), a day must match BOTH fields; otherwise either.
  ``0 0 2 */1 * 0`` is Sundays only for CNPG (croniter alone would say daily).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
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


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS = ("seconds", "minutes", "hours", "day of month", "month", "day of week")
_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {},
    {m: i for i, m in enumerate(_MONTHS, 1)},
    {d: i for i, d in enumerate(_WEEKDAYS)},
)
_PART = re.compile(r"^(?P<range>\*|\?|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[0-9]+))?$")


def _value(text: str, index: int) -> int | None:
    named = _NAMES[index].get(text.upper())
    if named is not None:
        return named
    # ASCII digits only: "²" is a digit to str.isdigit, not to int() nor to cron.
    return int(text) if text.isascii() and text.isdigit() else None


def _field_problem(field: str, index: int) -> str | None:
    """Why robfig/cron would refuse ``field`` at position ``index``; ``None`` if it would not."""
    low, high = _BOUNDS[index]
    for part in field.split(","):
        match = _PART.match(part)
        if match is None:
            return f"{part!r} is not N, N-M, * or ?, with an optional /step"
        step = match.group("step")
        if step is not None and int(step) == 0:
            return f"{part!r} has a zero step"
        bounds = match.group("range")
        if bounds in ("*", "?"):
            if bounds == "?" and index not in (3, 5):
                return "'?' is only for the day fields"
            continue
        ends = [_value(end, index) for end in bounds.split("-")]
        if any(end is None for end in ends):
            return f"{part!r} is not a number or a name"
        numbers = [end for end in ends if end is not None]
        if any(not low <= end <= high for end in numbers):
            return f"{part!r} is outside {low}-{high}"
        if len(numbers) == 2 and numbers[0] > numbers[1]:
            return f"{part!r} ends before it starts"
    return None


def _starred(field: str) -> bool:
    """robfig/cron's star bit: the field starts with * or ? and has no step above 1."""
    match = _PART.match(field.split(",")[0])
    return bool(
        match
        and match.group("range") in ("*", "?")
        and (match.group("step") is None or int(match.group("step")) <= 1)
    )


def validate_schedule(expression: str) -> str:
    """A 6-field schedule as CNPG's robfig/cron reads it, normalised (single spaces).

    Raises :class:`InvalidSchedule` for another field count or a field robfig/cron refuses.
    """
    fields = expression.split()
    if len(fields) != 6:
        raise InvalidSchedule(
            f"schedule {expression!r} has {len(fields)} fields; CNPG schedules need exactly 6 "
            "(seconds minutes hours day-of-month month day-of-week), e.g. '0 30 2 * * *'",
            details={"schedule": expression},
        )
    for index, field in enumerate(fields):
        problem = _field_problem(field, index)
        if problem is not None:
            raise InvalidSchedule(
                f"schedule {expression!r} is not a valid CNPG cron expression: its "
                f"{_FIELDS[index]} field {problem}",
                details={"schedule": expression, "field": _FIELDS[index]},
            )
    normalized = " ".join(fields)
    if not croniter.is_valid(_for_croniter(normalized), second_at_beginning=True):
        raise InvalidSchedule(
            f"schedule {expression!r} is not a valid cron expression",
            details={"schedule": expression},
        )
    return normalized


def _for_croniter(expression: str) -> str:
    # croniter misreads a one-value range such as 2-2; robfig reads it as 2.
    return re.sub(r"\b(\d+)-\1\b", r"\1", expression)


def _iterator(expression: str, after: datetime) -> croniter:
    """croniter walking ``expression`` with robfig/cron's rule for the two day fields."""
    fields = expression.split()
    both_days = _starred(fields[3]) or _starred(fields[5])
    return croniter(
        _for_croniter(expression), after, second_at_beginning=True, day_or=not both_days
    )


def _runs(expression: str, after: datetime, count: int) -> list[datetime]:
    iterator = _iterator(expression, after)
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
    result: datetime = _iterator(validate_schedule(expression), after).get_next(datetime)
    return result


def previous_run(expression: str, at: datetime) -> datetime:
    """The newest instant at or before ``at`` matching the schedule (same tz as ``at``)."""
    iterator = _iterator(validate_schedule(expression), at + timedelta(microseconds=1))
    result: datetime = iterator.get_prev(datetime)
    return result
