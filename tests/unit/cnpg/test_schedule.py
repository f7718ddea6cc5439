from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from paas_pitr.cnpg.schedule import (
    daily_schedule_for,
    next_run,
    validate_daily_schedule,
    validate_schedule,
)
from paas_pitr.errors import InvalidSchedule


def test_five_field_schedules_are_refused() -> None:
    # robfig/cron reads "0 2 * * *" as every hour at :02 (seconds first): never accept it.
    with pytest.raises(InvalidSchedule, match="exactly 6"):
        validate_schedule("0 2 * * *")


@pytest.mark.parametrize(
    "bad",
    ["@daily", "61 0 0 * * *", "0 0 0 * * * 2026", "a b c d e f", "0 0 ² * * *", "0 0 ٣ * * *"],
)
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


# --- the daily base backup runs exactly once a day ------------------------------------------

NOW = datetime(2026, 5, 1, 0, 0, 0, tzinfo=UTC)
EXAMPLE = "the daily base backup needs exactly one run every 24h, e.g. '0 30 2 * * *'"


@pytest.mark.parametrize(
    ("schedule", "how", "interval", "next_runs"),
    [
        (
            "0 2 * * * *",
            "more than once a day (runs as little as 1h apart",
            3600,
            ["2026-05-01T00:02:00Z", "2026-05-01T01:02:00Z", "2026-05-01T02:02:00Z"],
        ),
        (
            "*/30 * * * * *",
            "more than once a day (runs as little as 30s apart",
            30,
            ["2026-05-01T00:00:30Z", "2026-05-01T00:01:00Z", "2026-05-01T00:01:30Z"],
        ),
        (
            "0 0 2 * * 1",
            "less than once a day (runs as much as 7d apart",
            7 * 86400,
            ["2026-05-04T02:00:00Z", "2026-05-11T02:00:00Z", "2026-05-18T02:00:00Z"],
        ),
        (
            "0 0 2,14 * * *",
            "more than once a day (runs as little as 12h apart",
            12 * 3600,
            ["2026-05-01T02:00:00Z", "2026-05-01T14:00:00Z", "2026-05-02T02:00:00Z"],
        ),
    ],
)
def test_daily_schedules_that_are_not_daily_are_refused(
    schedule: str, how: str, interval: int, next_runs: list[str]
) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate_daily_schedule(schedule, now=NOW)
    assert caught.value.message == (
        f"schedule {schedule!r} runs {how}; next runs: {', '.join(next_runs)}): {EXAMPLE}"
    )
    assert caught.value.details == {
        "schedule": schedule,
        "interval_seconds": interval,
        "next_runs": next_runs,
    }


@pytest.mark.parametrize(
    ("schedule", "longest"),
    [
        ("0 0 2 1-27 * *", 5 * 86400),  # skips the 28th to the 31st: only months end it
        ("0 0 2 * 1-11 *", 32 * 86400),  # skips December
        ("0 0 2 * * 1-5", 3 * 86400),  # weekdays only
    ],
)
def test_day_restrictions_cannot_hide_from_the_check(schedule: str, longest: int) -> None:
    with pytest.raises(InvalidSchedule, match="less than once a day") as caught:
        validate_daily_schedule(schedule, now=NOW)
    assert caught.value.details["interval_seconds"] == longest


@pytest.mark.parametrize(
    "schedule",
    [
        "0 30 2 * * *",
        " 0  30 2 * * * ",
        "15 59 23 * * *",
        "0 0 2 1-31 * *",
        "0 0 2 * 1-12 0-6",
        # Day of month and day of week both restricted: cron runs when either matches.
        "0 0 2 1-31 * 1-5",
    ],
)
def test_once_a_day_schedules_are_accepted(schedule: str) -> None:
    assert validate_daily_schedule(schedule, now=NOW) == " ".join(schedule.split())


def test_derived_schedules_are_daily() -> None:
    for name in [f"db-tenant{i}-app" for i in range(60)] + ["db-acme-app-1"]:
        schedule = daily_schedule_for(name)
        assert validate_daily_schedule(schedule, now=NOW) == schedule


@pytest.mark.parametrize("bad", ["0 2 * * *", "61 0 0 * * *", "@daily"])
def test_daily_validation_keeps_the_generic_errors(bad: str) -> None:
    with pytest.raises(InvalidSchedule) as generic:
        validate_schedule(bad)
    with pytest.raises(InvalidSchedule) as daily:
        validate_daily_schedule(bad, now=NOW)
    assert daily.value.message == generic.value.message


def test_the_next_runs_default_to_now() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate_daily_schedule("0 2 * * * *")
    first = datetime.fromisoformat(caught.value.details["next_runs"][0])
    assert first > datetime.now(UTC) - timedelta(minutes=1)


def test_rendering_refuses_a_schedule_that_is_not_daily() -> None:
    # RenderConfig can be built without Settings (the CLI's render does): check there too.
    from paas_pitr.cnpg.builders import (
        RenderConfig,
        build_cluster_spec_full,
        build_scheduled_backup,
    )

    config = RenderConfig(backup_schedule="0 0 2 * * 1")
    cluster = build_cluster_spec_full("16", "pro", "pitr", "acme", "app-1", config=config)
    with pytest.raises(InvalidSchedule, match="less than once a day"):
        build_scheduled_backup(cluster, config)


def test_days_are_read_as_cnpg_reads_them() -> None:
    """robfig/cron ANDs the day fields when either starts with * or ? (even */1): this one
    runs on Sundays only for CNPG, whatever a Python cron library would say."""
    with pytest.raises(InvalidSchedule, match="less than once a day") as refused:
        validate_daily_schedule("0 0 2 */1 * 0", now=datetime(2026, 12, 1, tzinfo=UTC))
    assert refused.value.details["interval_seconds"] == 7 * 86400
    assert refused.value.details["next_runs"] == [
        "2026-12-06T02:00:00Z",
        "2026-12-13T02:00:00Z",
        "2026-12-20T02:00:00Z",
    ]
    # Both fields restricted: either matches (every weekday, and the 1st to the 31st).
    assert validate_daily_schedule("0 0 2 1-31 * 1-5") == "0 0 2 1-31 * 1-5"
    assert next_run("0 0 2 */1 * 0", datetime(2026, 12, 1, tzinfo=UTC)) == datetime(
        2026, 12, 6, 2, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 0 2 * * 0-7", "day of week field '0-7' is outside 0-6"),
        ("0 0 2 * * 7", "day of week field '7' is outside 0-6"),
        ("0 0 2 * * MON-SUN", "day of week field 'MON-SUN' ends before it starts"),
        ("0 0 2 L * *", "day of month field 'L' is not a number or a name"),
        ("0 0 2 * * 1#1", "day of week field '1#1' is not N, N-M"),
        ("0 0 ? * * *", "'?' is only for the day fields"),
        ("0 0 2 * * */0", "zero step"),
    ],
)
def test_what_cnpg_would_refuse_is_refused(schedule: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(message)):
        validate_schedule(schedule)


@pytest.mark.parametrize("schedule", ["0 0 2-2 * * *", "0 0 2 ? * *", "0 0 2 * JAN-DEC SUN-SAT"])
def test_daily_spellings_cnpg_accepts_are_accepted(schedule: str) -> None:
    assert validate_daily_schedule(schedule) == schedule
