"""The destructive-event finder for real: a DROP TABLE, a TRUNCATE and a DELETE without
WHERE, each 1 ms or less after the last rows written; the finder lists each with its
relation, and a restore "before" each has every row committed before it and nothing of it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from paas_pitr.cli import app
from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import switch_wal

TABLES = ("dropped", "truncated", "emptied")


@pytest.fixture
def cli(local_api: LocalApi, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PAAS_PITR_URL", local_api.running.url)
    monkeypatch.setenv("PAAS_PITR_TOKEN", local_api.running.token())
    return CliRunner()


def contents(uri: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(uri) as conn:
        present = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        return {
            table: conn.execute(f"SELECT id, note FROM {table} ORDER BY id").fetchall()
            for table in TABLES
            if table in present
        }


def rows_then(conn: psycopg.Connection[Any], table: str, first: int, mistake: str) -> None:
    """Rows committed one by one, the last within a millisecond of ``mistake``."""
    for i in range(first, first + 20):
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, f"row {i}"))
    conn.execute(mistake)


def test_finder_lists_each_mistake_and_restoring_before_each_is_exact(
    local_api: LocalApi, cli: CliRunner
) -> None:
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    started = datetime.now(UTC) - timedelta(seconds=1)
    with psycopg.connect(uri, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
            conn.execute(
                f"INSERT INTO {table} SELECT g, 'seed ' || g FROM generate_series(1, 500) g"
            )
        dropped_node = conn.execute("SELECT pg_relation_filenode('dropped')").fetchone()
        database = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert dropped_node is not None and database is not None
        before: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
        rows_then(conn, "dropped", 1000, "SELECT 1")  # the rows, then the mistake below
        before["drop"] = contents(uri)
        conn.execute("DROP TABLE dropped")
        rows_then(conn, "truncated", 1000, "SELECT 1")
        before["truncate"] = contents(uri)
        conn.execute("TRUNCATE truncated")
        rows_then(conn, "emptied", 1000, "SELECT 1")
        before["delete"] = contents(uri)
        conn.execute("DELETE FROM emptied")
    after = contents(uri)
    assert "dropped" not in after and after["truncated"] == [] and after["emptied"] == []
    switch_wal(local_api, addon_id)

    url = f"/v1/apps/app-1/addons/{addon_id}/events"
    query = {"from": format_api_time(started), "min_rows": "100"}

    def listed() -> dict[str, Any] | None:
        response = local_api.client.get(
            url, params={**query, "to": format_api_time(datetime.now(UTC))}
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        kinds = {e["kind"] for e in data["items"]}
        return data if {"drop", "truncate", "delete"} <= kinds else None

    listing = wait_for(listed, timeout=120, interval=2, what="the three events archived")
    assert listing["scan"]["segments"] >= 1 and listing["scan"]["mib"] > 0
    events = {e["kind"]: e for e in listing["items"] if e["kind"] != "update"}
    assert [e["kind"] for e in listing["items"] if e["kind"] != "update"] == [
        "drop",
        "truncate",
        "delete",
    ]
    drop, truncate, delete = events["drop"], events["truncate"], events["delete"]
    assert drop["database"] == "app" and drop["database_oid"] == database[0]
    # A dropped table is gone from the catalog and the WAL has no names: its file node.
    first = drop["relations"][0]
    assert first["file_node"] == f"base/{database[0]}/{dropped_node[0]}"
    assert first["name"] is None
    # The table, its TOAST table and index, its primary key: each got a new file.
    names = [r["name"] for r in truncate["relations"]]
    assert names[0] == "public.truncated" and names[-1] == "public.truncated_pkey", names
    assert len(names) == 4 and all(n.startswith("pg_toast.pg_toast_") for n in names[1:3])
    assert {r["resolved_by"] for r in truncate["relations"]} == {"oid"}
    assert delete["rows"] == 520
    assert [(r["name"], r["rows"]) for r in delete["relations"]] == [("public.emptied", 520)]
    for event in (drop, truncate, delete):
        assert event["restore_before"]["recovery_target"] == {
            "targetXID": str(event["xid"]),
            "exclusive": True,
        }
    # The same scan streamed: its progress from nothing to every segment, then the same
    # events (a segment archived since may be read too: it holds nothing before `to`).
    stream = {**query, "to": listing["scan"]["to"]}
    headers = {"Accept": "application/x-ndjson"}
    with local_api.client.stream("GET", url, params=stream, headers=headers) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    steps = [(p["progress"]["segments_done"], p["progress"]["segments_total"]) for p in lines[:-1]]
    total = steps[0][1]
    assert steps[0] == (0, total) and steps[-1] == (total, total)
    assert total in (listing["scan"]["segments"], listing["scan"]["segments"] + 1)
    assert [done for done, _ in steps] == sorted({done for done, _ in steps})
    assert [e["id"] for e in lines[-1]["result"]["items"]] == [e["id"] for e in listing["items"]]

    # Only the kinds asked for.
    only = local_api.client.get(url, params={**query, "kind": "truncate"})
    assert [e["id"] for e in only.json()["data"]["items"]] == [truncate["id"]]

    # The CLI shows the same events, and restores before one of them.
    addon_args = ["--app", "app-1", "--addon", addon_id]
    shown = cli.invoke(
        app, ["events", "list", *addon_args, "--from", query["from"], "--min-rows", "100"]
    )
    assert shown.exit_code == 0, shown.stderr
    assert all(e["id"] in shown.stdout for e in (drop, truncate, delete)), shown.stdout
    assert "public.truncated" in shown.stdout and "public.emptied" in shown.stdout
    by_cli = cli.invoke(app, ["restore", *addon_args, "--before-event", delete["id"], "--no-wait"])
    assert by_cli.exit_code == 0, by_cli.stderr
    restores = {"delete": json.loads(by_cli.stdout)["restore_id"]}
    for kind, event in (("drop", drop), ("truncate", truncate)):
        response = local_api.client.post(
            f"/v1/apps/app-1/addons/{addon_id}/restore", json={"before_event": event["id"]}
        )
        assert response.status_code == 202, response.text
        data = response.json()["data"]
        assert data["recovery_target"] == {"kind": "before_event", "value": event["id"]}
        restores[kind] = data["restore_id"]
    for kind, restore_id in restores.items():
        restore = local_api.wait_restore("app-1", addon_id, restore_id)
        assert restore["status"] == "ready", restore
        assert contents(restore["connection"]["uri"]) == before[kind], kind
