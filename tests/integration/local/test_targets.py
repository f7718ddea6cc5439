"""Recovery targets for real: a named restore point, an LSN, a transaction id and "latest"
restore exactly; an unreachable target of each kind is refused before anything is created."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from paas_pitr.cli import app
from paas_pitr.lsn import format_lsn, parse_lsn
from paas_pitr.settings import Settings
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import switch_wal


@pytest.fixture
def slow_archive_api(workdir: Path, audit_dsn: str) -> Iterator[LocalApi]:
    """A segment archived every 10 s, not 2: a restore to "latest" replays the source's
    archive to its end, which it must outpace on a loaded machine."""
    settings = Settings(
        state_dir=workdir / f"local-{uuid.uuid4().hex[:8]}",
        cnpg_mode="in-tree",
        archive_timeout_seconds=10,
        heartbeat_seconds=1,
        backup_timeout_seconds=300,
        restore_timeout_seconds=600,
    )
    api = LocalApi(settings, audit_dsn)
    yield api
    api.stop()


@pytest.fixture
def cli(slow_archive_api: LocalApi, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PAAS_PITR_URL", slow_archive_api.running.url)
    monkeypatch.setenv("PAAS_PITR_TOKEN", slow_archive_api.running.token())
    return CliRunner()


def ids(uri: str) -> list[int]:
    with psycopg.connect(uri) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM marks ORDER BY id")]


def insert(uri: str, first: int, last: int) -> int:
    """Rows ``first``..``last`` in one transaction; its id."""
    with psycopg.connect(uri) as conn:
        conn.execute("INSERT INTO marks SELECT generate_series(%s::int, %s::int)", (first, last))
        row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def superuser_value(api: LocalApi, addon_id: str, sql: str) -> Any:
    with api.engine.instances[addon_id].connect() as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def restore(api: LocalApi, addon_id: str, body: dict[str, Any]) -> Any:
    return api.client.post(f"/v1/apps/app-1/addons/{addon_id}/restore", json=body)


def restore_clusters(api: LocalApi) -> set[str]:
    return {c["metadata"]["name"] for c in api.engine.objects.list("Cluster")}


def test_restore_point_lsn_xid_and_latest_restore_exactly(
    slow_archive_api: LocalApi, cli: CliRunner
) -> None:
    local_api = slow_archive_api
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE marks (id int PRIMARY KEY)")
    insert(uri, 1, 100)
    points_url = f"/v1/apps/app-1/addons/{addon_id}/restore-points"
    created = local_api.client.post(points_url, json={"name": "before migration 42"})
    assert created.status_code == 201, created.text
    point = created.json()["data"]
    again = local_api.client.post(points_url, json={"name": "before migration 42"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "restore_point_exists"
    listed = local_api.client.get(points_url).json()["data"]
    assert [(p["name"], p["lsn"]) for p in listed] == [("before migration 42", point["lsn"])]
    shown = cli.invoke(app, ["restore-points", "list", "--app", "app-1", "--addon", addon_id])
    assert shown.exit_code == 0, shown.stderr
    assert [p["name"] for p in json.loads(shown.stdout)] == ["before migration 42"]
    by_cli = cli.invoke(
        app, ["restore-points", "create", "--app", "app-1", "--addon", addon_id, "--name", "x"]
    )
    assert by_cli.exit_code == 0, by_cli.stderr
    assert json.loads(by_cli.stdout)["name"] == "x"
    xid = insert(uri, 101, 200)
    # Every record written so far is before this LSN; the rows after it are not.
    mark = superuser_value(local_api, addon_id, "SELECT pg_current_wal_insert_lsn()::text")
    insert(uri, 201, 300)
    switch_wal(local_api, addon_id)

    def archived() -> bool:
        # The LSN is restorable once a later segment is archived.
        response = restore(local_api, addon_id, {"lsn": "0/1"})
        details = response.json()["error"]["details"]
        return parse_lsn(details["latest_lsn"]) > parse_lsn(mark)

    wait_for(archived, timeout=120, interval=2, what=f"WAL past {mark} archived")
    latest_ids = ids(uri)
    wait_for(
        lambda: local_api.backups("app-1", addon_id)["window"]["latest"],
        what="a newest restorable instant",
    )
    made = {}
    for name, body in {
        "point": {"restore_point": "before migration 42"},
        "lsn": {"lsn": mark.lower()},
        "xid": {"xid": xid, "inclusive": False},
    }.items():
        response = restore(local_api, addon_id, body)
        assert response.status_code == 202, response.text
        made[name] = response.json()["data"]
    assert made["lsn"]["recovery_target"] == {"kind": "lsn", "value": format_lsn(parse_lsn(mark))}
    assert made["point"]["restores_to"] == point["created_at"]
    results = {
        name: local_api.wait_restore("app-1", addon_id, view["restore_id"])
        for name, view in made.items()
    }
    for name, result in results.items():
        assert result["status"] == "ready", (name, result)
    assert ids(results["point"]["connection"]["uri"]) == list(range(1, 101))
    assert ids(results["lsn"]["connection"]["uri"]) == list(range(1, 201))
    # Just before the transaction that wrote 101..200: everything committed before it.
    assert ids(results["xid"]["connection"]["uri"]) == list(range(1, 101))
    assert made["xid"]["restores_to"] is not None
    # "latest" replays the whole archive from the newest base backup, and this one grows by
    # a segment every archive_timeout (2 s here): a fresh backup keeps the replay short.
    taken = local_api.client.post(f"/v1/apps/app-1/addons/{addon_id}/backups")
    assert taken.status_code == 202, taken.text
    local_api.wait_backups_completed("app-1", addon_id, count=2)
    response = restore(local_api, addon_id, {"timestamp": "latest"})
    assert response.status_code == 202, response.text
    assert response.json()["data"]["recovery_target"] == {"kind": "latest", "value": "latest"}
    latest = local_api.wait_restore("app-1", addon_id, response.json()["data"]["restore_id"])
    assert latest["status"] == "ready", latest
    assert ids(latest["connection"]["uri"]) == latest_ids == list(range(1, 301))


def test_unreachable_targets_are_refused_before_anything_is_created(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id = addon["addon_id"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    clusters = restore_clusters(local_api)
    refused: dict[str, tuple[dict[str, Any], int, str]] = {
        "lsn before the first backup": ({"lsn": "0/10"}, 422, "target_not_reachable"),
        "lsn past the archive": ({"lsn": "FF/0"}, 422, "target_not_reachable"),
        "lsn exclusive past the archive": (
            {"lsn": "FF/0", "inclusive": False},
            422,
            "target_not_reachable",
        ),
        "unknown restore point": ({"restore_point": "nope"}, 422, "unknown_restore_point"),
        "xid never committed": ({"xid": 4000000000}, 422, "target_not_reachable"),
        "event not in the archive": (
            {"before_event": "00000000FF000028-12345-drop"},
            404,
            "unknown_event",
        ),
        "two targets": ({"lsn": "0/10", "xid": "5"}, 422, "invalid_recovery_target"),
        "malformed lsn": ({"lsn": "zz"}, 422, "invalid_recovery_target"),
        "inclusive with a name": (
            {"restore_point": "x", "inclusive": False},
            422,
            "invalid_recovery_target",
        ),
    }
    for what, (body, status, code) in refused.items():
        response = restore(local_api, addon_id, body)
        assert response.status_code == status, (what, response.text)
        assert response.json()["error"]["code"] == code, (what, response.text)
    assert restore_clusters(local_api) == clusters
