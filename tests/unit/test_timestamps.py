from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from paas_pitr.errors import InvalidTimestamp, TimestampWithoutOffset
from paas_pitr.timestamps import (
    format_api_time,
    parse_k8s_time,
    parse_timestamp,
    render_target_time,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-04T15:30:00Z", datetime(2026, 5, 4, 15, 30, tzinfo=UTC)),
        ("2026-05-04T17:30:00+02:00", datetime(2026, 5, 4, 15, 30, tzinfo=UTC)),
        ("2026-05-04T15:30:00.123456-01:00", datetime(2026, 5, 4, 16, 30, 0, 123456, tzinfo=UTC)),
        ("2026-05-04 15:30:00+00:00", datetime(2026, 5, 4, 15, 30, tzinfo=UTC)),
    ],
)
def test_parse_normalises_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["2026-05-04T15:30:00", "2026-05-04 15:30:00.5"])
def test_naive_times_are_refused(text: str) -> None:
    with pytest.raises(TimestampWithoutOffset) as caught:
        parse_timestamp(text)
    assert caught.value.code == "timestamp_without_offset"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-05-04",
        "1714",
        # Valid ISO 8601, but outside what a datetime holds once in UTC (was a 500).
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-00:30",
    ],
)
def test_malformed_times_are_refused(text: str) -> None:
    with pytest.raises(InvalidTimestamp):
        parse_timestamp(text)


def test_target_time_has_the_one_spelling_every_cnpg_accepts() -> None:
    moment = datetime(2026, 5, 4, 17, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert render_target_time(moment) == "2026-05-04 15:30:00.000005+00:00"


def test_target_time_refuses_naive_datetimes() -> None:
    with pytest.raises(TimestampWithoutOffset):
        render_target_time(datetime(2026, 5, 4, 15, 30))  # noqa: DTZ001


def test_api_time_uses_z() -> None:
    assert format_api_time(datetime(2026, 5, 4, 15, 30, tzinfo=UTC)) == "2026-05-04T15:30:00Z"


@pytest.mark.parametrize("garbage", [None, "", 42, "not a time", {"a": 1}])
def test_k8s_time_tolerates_garbage(garbage: object) -> None:
    assert parse_k8s_time(garbage) is None


def test_k8s_time_without_offset_is_utc() -> None:
    assert parse_k8s_time("2026-05-04T15:30:00") == datetime(2026, 5, 4, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_instants_outside_the_representable_range_are_invalid(value: str) -> None:
    with pytest.raises(InvalidTimestamp, match="out of range"):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:30:00Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ],
)
def test_instants_where_arithmetic_could_overflow_are_refused(value: str) -> None:
    with pytest.raises(InvalidTimestamp) as raised:
        parse_timestamp(value)
    assert raised.value.message == (
        f"timestamp {value!r} is out of range: instants from 1970-01-01T00:00:00Z to "
        "9998-12-31T23:59:59.999999Z are accepted"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("9998-12-31T23:59:59.999999Z", datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_the_range_bounds_are_accepted(value: str, expected: datetime) -> None:
    assert parse_timestamp(value) == expected
