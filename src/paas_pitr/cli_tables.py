"""Tables the CLI prints: instants are never cut, and ``--output json`` is there for
programs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

# The longest instant the API writes (microseconds, UTC): a column of instants is never
# narrower, so an instant is never cut or wrapped.
INSTANT_WIDTH = len("2026-05-04T15:30:00.123456Z")


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table (for people) or json (for programs)")
]


def instant_column(table: Table, header: str) -> None:
    table.add_column(header, no_wrap=True, min_width=INSTANT_WIDTH)


def id_column(table: Table, header: str) -> None:
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


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` no narrower than :func:`needed_width`: on a narrow terminal or in a
    pipe the free-text columns wrap, and nothing else is cut."""
    width = console.width
    # Console.print never renders wider than the console: widen it for this table only.
    console.width = max(width, needed_width(table))
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
