from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paas_pitr.cnpg.schedule import daily_schedule_for, next_run, validate_schedule
from paas_pitr.errors import InvalidSchedule


def test_five_field_schedules_are_refused() -> None:
    # robfig/cron reads "0 2 * * *" as every hour at :02 (REFERENCE §5): never accept it.
    with pytest.raises(InvalidSchedule, match="exactly 6"):
        validate_schedule("0 2 * * *")


@pytest.mark.parametrize("bad", ["@daily", "61 0 0 * * *", "0 0 0 * * * 2026", "a b c d e f"])
def test_other_invalid_schedules(bad: str) -> None:
    with pytest.raises(InvalidSchedule):
        validate_schedule(bad)


def test_six_fields_are_normalised() -> None:
    assert validate_schedule(" 0  30 2 * * * ") == "0 30 2 * * *"


def test_daily_schedule_is_stable_and_inside_the_night_window() -> None:
    names = [f"db-tenant{i}-app" for i in range(200)]
    schedules = [daily_schedule_for(name) for name in names]
    assert schedules == [daily_schedule_for(name) for name in names]
    for schedule in schedules:
        second, minute, hour, *rest = validate_schedule(schedule).split()
        assert second == "0" and 0 <= int(minute) < 60 and 0 <= int(hour) < 6
        assert rest == ["*", "*", "*"]
    assert len(set(schedules)) > 100  # spread, not all at once


def test_next_run_honours_the_seconds_field() -> None:
    start = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert next_run("15 30 2 * * *", start) == datetime(2026, 1, 1, 2, 30, 15, tzinfo=UTC)
    assert next_run("*/10 * * * * *", start) == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
