"""Tables the CLI prints: identifiers, instants and statuses are never cut (only free-text
columns wrap, and only on a terminal), and ``--output json`` is there for programs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table (for people) or json (for programs)")
]


def instant_column(table: Table, header: str) -> None:
    """A column of instants: as wide as its widest instant, never cut or wrapped."""
    table.add_column(header, no_wrap=True)


def id_column(table: Table, header: str) -> None:
    """A column of identifiers or statuses: as wide as its widest value, never cut."""
    table.add_column(header, no_wrap=True)


def text_column(table: Table, header: str) -> None:
    table.add_column(header, overflow="fold")


# A free-text column is never squeezed narrower than this (it wraps within it).
TEXT_MIN_WIDTH = 16


def _width(renderable: object) -> int:
    return max((cell_len(line) for line in str(renderable).splitlines()), default=0)


def needed_width(table: Table) -> int:
    """The width at which every unbreakable column (instants, ids) shows whole: their
    widest cell, each text column ``TEXT_MIN_WIDTH``, plus padding and borders."""
    total = len(table.columns) + 1  # vertical borders
    for column in table.columns:
        widest = max([_width(column.header), *(_width(cell) for cell in column.cells)])
        total += (widest if column.no_wrap else min(widest, TEXT_MIN_WIDTH)) + 2
    return total


def natural_width(console: Console, table: Table) -> int:
    """The width at which nothing in ``table`` wraps."""
    return Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum


_UNBOUNDED = 1_000_000


def print_table(console: Console, table: Table) -> None:
    """Print ``table``: on a terminal no narrower than :func:`needed_width`, the free-text
    columns wrapping when the terminal is narrower than the table; anywhere else (a pipe, a
    file) at its natural width, nothing wrapped, since a pipe has no width to fit."""
    width = console.width
    wanted = (
        max(width, needed_width(table))
        if console.is_terminal
        else max(needed_width(table), natural_width(console, table))
    )
    # Console.print never renders wider than the console: widen it for this table only.
    console.width = wanted
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
