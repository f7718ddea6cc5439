from __future__ import annotations

import pytest

from paas_pitr.errors import InvalidInput
from paas_pitr.lsn import Segment, format_lsn, parse_lsn, parse_segment


def test_lsn_round_trip() -> None:
    assert parse_lsn("0/3000060") == 0x3000060
    assert parse_lsn("1/0") == 1 << 32
    assert format_lsn(0x1_0000_00AB) == "1/AB"
    assert format_lsn(parse_lsn("0/5000abc")) == "0/5000ABC"


@pytest.mark.parametrize("bad", ["", "0", "0/", "x/1", "123456789/0", "0/1/2"])
def test_invalid_lsn(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_lsn(bad)


def test_segments() -> None:
    segment = parse_segment("000000010000000100000002")
    assert segment == Segment(256 + 2, 1)
    assert segment.start == parse_lsn("1/2000000") and segment.end == parse_lsn("1/3000000")
    assert segment.name == "000000010000000100000002"
    for other in ("00000002.history", "000000010000000000000002.00000028.backup", "0" * 24):
        assert parse_segment(other) is None
