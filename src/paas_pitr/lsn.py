"""Log sequence numbers (LSN) and WAL segment file names, as PostgreSQL spells them.

An LSN is a 64-bit byte position in the WAL, written ``X/Y`` (two hex halves). A WAL
segment file is named ``TTTTTTTTLLLLLLLLSSSSSSSS``: its timeline, then the high 32 bits of
its start LSN, then the segment number within that 4 GiB "log" (hex, 8 digits each). The
segment size is fixed at initdb; CNPG and the local engine keep PostgreSQL's default of
16 MiB, which is what :data:`WAL_SEGMENT_SIZE` assumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paas_pitr.errors import InvalidInput

WAL_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENTS_PER_LOG = 0x1_0000_0000 // WAL_SEGMENT_SIZE
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


def parse_lsn(text: str) -> int:
    """``"0/3000060"`` -> 50331744; ``InvalidInput`` for anything that is not ``X/Y``."""
    match = _LSN.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(
            f"invalid LSN {text!r}: expected two hexadecimal halves, as in '0/3000060'",
            details={"lsn": text},
        )
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    """50331744 -> ``"0/3000060"`` (PostgreSQL's own spelling: upper case, no padding)."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    """One WAL segment file: its timeline and its number (start LSN // segment size)."""

    number: int
    timeline: int

    @property
    def start(self) -> int:
        """The LSN of the segment's first byte."""
        return self.number * WAL_SEGMENT_SIZE

    @property
    def end(self) -> int:
        """The LSN one past its last byte (the next segment's start)."""
        return self.start + WAL_SEGMENT_SIZE

    @property
    def name(self) -> str:
        log, seg = divmod(self.number, _SEGMENTS_PER_LOG)
        return f"{self.timeline:08X}{log:08X}{seg:08X}"


def parse_segment(name: str) -> Segment | None:
    """The segment a WAL file name stands for; ``None`` for anything else (``.history``,
    ``.backup`` and ``.partial`` files live in the same folders)."""
    match = _SEGMENT.match(name)
    if match is None:
        return None
    timeline, log, seg = (int(part, 16) for part in match.groups())
    if seg >= _SEGMENTS_PER_LOG or timeline == 0:
        return None
    return Segment(log * _SEGMENTS_PER_LOG + seg, timeline)
