"""Table layout: a column of instants is as wide as its values (seconds-precision instants
are 20 characters, not padded to the 27 of microseconds); in a pipe nothing wraps."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.table import Table

from paas_pitr.cli_tables import id_column, instant_column, print_table, text_column

ERROR = "can't upload: AccessDenied: the bucket policy refuses PutObject for this key"


def render(terminal: bool) -> list[str]:
    sink = io.StringIO()
    console = Console(file=sink, width=80, force_terminal=terminal, no_color=True)
    table = Table()
    id_column(table, "backup id")
    id_column(table, "status")
    instant_column(table, "started")
    text_column(table, "error")
    table.add_row("db-acme-shop-1-20261129T194512", "completed", "2026-11-29T19:45:12Z", "")
    table.add_row("db-acme-shop-1-20261129T194513", "failed", "2026-11-29T19:45:13Z", ERROR)
    print_table(console, table)
    return sink.getvalue().splitlines()


def test_in_a_pipe_every_row_is_one_line_whatever_the_width() -> None:
    lines = render(terminal=False)
    assert lines[1] == (
        "┃ backup id                      ┃ status    ┃ started              ┃ error"
        + " " * (len(ERROR) - len("error"))
        + " ┃"
    )
    assert lines[4] == (
        f"│ db-acme-shop-1-20261129T194513 │ failed    │ 2026-11-29T19:45:13Z │ {ERROR} │"
    )
    assert len(lines) == 6


def test_on_an_80_column_terminal_only_the_error_wraps() -> None:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in render(terminal=True)]
    # The ids, status and instant need 70 columns: the error keeps its 16 and wraps.
    assert {len(line) for line in lines} == {88}, lines
    assert "│ db-acme-shop-1-20261129T194513 │ failed    │ 2026-11-29T19:45:13Z │ can't " in (
        "\n".join(lines)
    )
    wrapped = [line.split("│")[-2].strip() for line in lines[3:-1]]
    assert " ".join(part for part in wrapped if part) == ERROR
