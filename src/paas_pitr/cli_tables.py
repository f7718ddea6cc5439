"""Tables the CLI prints: instants are never cut, and ``--output json`` is there for
programs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
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


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` at least as wide as its unbreakable columns (instants, ids) need:
    on a narrow terminal or in a pipe the free-text columns wrap, nothing is cut."""
    needed = Measurement.get(console, console.options, table).minimum
    console.print(table, width=max(console.width, needed), crop=False)
