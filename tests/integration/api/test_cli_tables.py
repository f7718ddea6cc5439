"""CLI tables with values of their real width, in a pipe and on an 80-column terminal:
identifiers, instants and statuses are never cut; only free text (an error, a reason)
wraps, and only on a terminal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from paas_pitr.engines.memory import InMemoryEngine
from tests.integration.api.test_cli_ops import (
    addon_with_backups,
    in_pipe,
    in_terminal,
    plain,
    start_restore,
)
from tests.integration.conftest import RunningApi
from tests.integration.operator_play import fail_restore

REASON = "recovery ended before configured recovery target was reached"


@pytest.fixture
def engine() -> InMemoryEngine:
    return InMemoryEngine(mode="in-tree")


def rows(shown: str) -> list[list[str]]:
    """The cells of each table line (a wrapped row continues on lines of its own)."""
    return [
        [cell.strip() for cell in line.strip("\r").strip("│").split("│")]
        for line in shown.splitlines()
        if line.startswith("│")
    ]


def row_of(shown: str, key: str) -> list[str]:
    """The cells of the one table row that starts with ``key``."""
    (row,) = [cells for cells in rows(shown) if cells[0] == key]
    return row


def test_backups_and_restores_in_a_pipe_are_one_line_per_row(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    fail_restore(engine, restore["cluster_name"], REASON)
    args = ("--app", "shop", "--addon", addon)
    listing = json.loads(in_pipe(api, "backups", "list", *args, "-o", "json").stdout)
    shown = in_pipe(api, "backups", "list", *args).stdout
    assert len(listing["items"]) == 3
    for item in listing["items"]:
        assert [
            item["backup_id"] or item["name"],
            item["status"],
            item["started_at"],
            item["stopped_at"],
            item["error"] or "",
        ] in rows(shown), shown
    # A column of instants is as wide as its widest instant, no wider.
    widest = max(len(item["started_at"]) for item in listing["items"])
    header = next(line for line in shown.splitlines() if "started" in line)
    assert "┃ started" + " " * (widest - len("started")) + " ┃" in header, header

    (listed,) = json.loads(in_pipe(api, "restores", "list", *args, "-o", "json").stdout)
    shown = in_pipe(api, "restores", "list", *args).stdout
    assert row_of(shown, restore["restore_id"]) == [
        restore["restore_id"],
        "failed",
        listed["timestamp"],
        restore["cluster_name"],
        listed["created_at"],
        REASON,
    ]


def test_an_80_column_terminal_wraps_only_free_text(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    addon = addon_with_backups(api, engine)
    restore = start_restore(api, addon, datetime.now(UTC) - timedelta(hours=1))
    fail_restore(engine, restore["cluster_name"], REASON)
    args = ("--app", "shop", "--addon", addon)
    listing = json.loads(in_pipe(api, "backups", "list", *args, "-o", "json").stdout)
    code, shown = in_terminal(api, "backups", "list", *args, columns=80)
    assert code == 0, shown
    shown = plain(shown)
    for item in listing["items"]:
        assert [
            item["backup_id"] or item["name"],
            item["status"],
            item["started_at"],
            item["stopped_at"],
        ] in [cells[:4] for cells in rows(shown)], shown
    # The error is whole, wrapped over lines of its own column.
    (failed,) = [i for i in listing["items"] if i["status"] == "failed"]
    assert " ".join(cells[-1] for cells in rows(shown) if cells[-1]) == failed["error"]

    (listed,) = json.loads(in_pipe(api, "restores", "list", *args, "-o", "json").stdout)
    code, shown = in_terminal(api, "restores", "list", *args, columns=80)
    assert code == 0, shown
    shown = plain(shown)
    cells = row_of(shown, restore["restore_id"])
    assert cells[:5] == [
        restore["restore_id"],
        "failed",
        listed["timestamp"],
        restore["cluster_name"],
        listed["created_at"],
    ]
    assert " ".join(cells[-1] for cells in rows(shown) if cells[-1]) == REASON


def test_drills_list_as_a_table_and_as_json(api: RunningApi, engine: InMemoryEngine) -> None:
    addon = addon_with_backups(api, engine)
    args = ("--app", "shop", "--addon", addon)
    with api.client(api.token("acme")) as client:
        drill = client.post(f"/v1/apps/shop/addons/{addon}/drills").json()["data"]
    listing = json.loads(in_pipe(api, "drills", "list", *args, "--output", "json").stdout)
    assert [item["drill_id"] for item in listing["items"]] == [drill["drill_id"]]
    shown = in_pipe(api, "drills", "list", *args).stdout
    (item,) = listing["items"]
    cells = row_of(shown, drill["drill_id"])
    assert cells[:4] == [
        drill["drill_id"],
        item["status"],
        item["requested_at"],
        item.get("target_time") or "",
    ]
