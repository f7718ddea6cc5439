"""ScheduledBackup schedules: exactly 6 cron fields, seconds first.

CNPG parses schedules with robfig/cron where the day-of-week field is optional, so a
5-field string such as ``0 2 * * *`` is accepted and silently means "every hour at :02"
(REFERENCE §5, pain point 1). We only ever render 6 fields and refuse anything else.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from croniter import croniter

from paas_pitr.errors import InvalidSchedule


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
