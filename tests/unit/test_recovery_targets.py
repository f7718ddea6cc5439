from __future__ import annotations

import pytest

from paas_pitr.errors import InvalidBody, InvalidRecoveryTarget, UnknownEvent
from paas_pitr.recovery_targets import TargetAsk, parse_target_ask


def test_each_kind() -> None:
    assert parse_target_ask(timestamp="latest") == TargetAsk("latest", "latest")
    assert parse_target_ask(timestamp="2026-05-04T15:30:00Z", inclusive=False) == TargetAsk(
        "timestamp", "2026-05-04T15:30:00Z", False
    )
    assert parse_target_ask(lsn="0/5000abc") == TargetAsk("lsn", "0/5000ABC")
    assert parse_target_ask(xid=729, inclusive=True) == TargetAsk("xid", "729", True)
    assert parse_target_ask(xid="4294967295") == TargetAsk("xid", "4294967295")
    assert parse_target_ask(restore_point="before migration 42") == TargetAsk(
        "restore_point", "before migration 42"
    )
    event = "00000000020585F8-728-truncate"
    assert parse_target_ask(before_event=event) == TargetAsk("before_event", event)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lsn": "0/1", "xid": 5},
        {"lsn": "5000ABC"},
        {"xid": 2},
        {"xid": 4294967296},
        {"xid": "-5"},
        {"xid": True},
        # Digits to str.isdigit but not ASCII: "²" was a 500, "٣٣٣" was read as 333.
        {"xid": "1²"},
        {"xid": "٣٣٣"},
        {"restore_point": ""},
        {"restore_point": "x" * 64},
        {"restore_point": "tab\there"},
        {"restore_point": "p", "inclusive": False},
        {"timestamp": "latest", "inclusive": True},
        {"before_event": "00000000020585F8-728-truncate", "inclusive": False},
    ],
)
def test_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRecoveryTarget):
        parse_target_ask(**kwargs)  # type: ignore[arg-type]


def test_no_target_is_a_malformed_body() -> None:
    with pytest.raises(InvalidBody):
        parse_target_ask()


@pytest.mark.parametrize(
    "event", ["", "2058F8-728-drop", "00000000020585F8-728-explode", "00000000020585F8-x-drop"]
)
def test_malformed_event_ids(event: str) -> None:
    with pytest.raises(UnknownEvent):
        parse_target_ask(before_event=event)


def test_fingerprints_differ_by_target() -> None:
    one = parse_target_ask(lsn="0/1").fingerprint()
    assert one == parse_target_ask(lsn="0/01").fingerprint()
    assert one != parse_target_ask(lsn="0/1", inclusive=False).fingerprint()
    assert one != parse_target_ask(xid=5).fingerprint()
