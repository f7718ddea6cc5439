"""The API over real HTTP (uvicorn on loopback), audit trail in a real PostgreSQL; the engine
is the in-memory one, the test playing the CNPG operator by writing statuses."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time
from tests.integration.conftest import RunningApi, make_state, start_api

NOW = datetime.now(UTC).replace(microsecond=0)
BACKUP_1_END = NOW - timedelta(days=2)
BACKUP_2_END = NOW - timedelta(days=1)
LAST_ARCHIVED = NOW - timedelta(minutes=1)
SEED_QUERY = (
    "SELECT created_at, target_id, details_jsonb FROM paas_audit_events "
    "WHERE action = 'addon.restore_pitr' ORDER BY created_at DESC LIMIT 10;"
)


def iso(moment: datetime) -> str:
    return format_api_time(moment)


def backup_obj(cluster: str, name: str, end: datetime, phase: str = "completed") -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": "paas-apps",
            "labels": {"cnpg.io/cluster": cluster},
            "creationTimestamp": iso(end - timedelta(minutes=2)),
        },
        "spec": {"cluster": {"name": cluster}, "method": "barmanObjectStore"},
        "status": {
            "phase": phase,
            "backupId": end.strftime("%Y%m%dT%H%M%S"),
            "startedAt": iso(end - timedelta(minutes=2)),
            "stoppedAt": iso(end),
            "beginWal": "000000010000000000000002",
            "endWal": "000000010000000000000003",
            "beginLSN": "0/2000028",
            "endLSN": "0/3000100",
        },
    }


def make_addon(
    client: httpx.Client, engine: InMemoryEngine, plan: str = "pro", app: str = "app-1"
) -> str:
    created = client.post(f"/v1/apps/{app}/addons", json={"plan": plan, "version": "16"})
    assert created.status_code == 201, created.text
    addon = str(created.json()["data"]["addon_id"])
    if plan != "free":
        engine.set_status(
            "Cluster",
            addon,
            {
                "phase": "Cluster in healthy state",
                "firstRecoverabilityPoint": iso(BACKUP_1_END),
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "ClusterIsReady"},
                    {"type": "ContinuousArchiving", "status": "True", "reason": "ok"},
                ],
            },
        )
        # Owned by the Cluster, as CNPG makes the Backups of a ScheduledBackup with
        # backupOwnerReference: cluster.
        owner = {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "name": addon,
            "uid": engine.objects[("Cluster", addon)]["metadata"]["uid"],
        }
        for name, end in ((f"{addon}-daily-1", BACKUP_1_END), (f"{addon}-daily-2", BACKUP_2_END)):
            owned = backup_obj(addon, name, end)
            owned["metadata"]["ownerReferences"] = [owner]
            engine.put(owned)
        engine.archived_at[addon] = LAST_ARCHIVED
    return addon


def audit_rows(dsn: str, action: str = "addon.restore_pitr") -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        try:
            return conn.execute(
                "SELECT id, target_id, details_jsonb FROM paas_audit_events WHERE action = %s",
                (action,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def wait_for_rows(dsn: str, count: int, action: str = "addon.restore_pitr") -> list[Any]:
    deadline = time.monotonic() + 20
    rows: list[Any] = []
    while time.monotonic() < deadline:
        try:
            rows = audit_rows(dsn, action)
        except psycopg.OperationalError:
            rows = []
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    return rows


# --- the seed's restore flow ------------------------------------------------------------


def test_restore_seed_shape_audit_and_new_cluster(
    api: RunningApi, engine: InMemoryEngine, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        calls_before = len(engine.calls)
        target = BACKUP_1_END + timedelta(hours=5)
        response = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(target).replace("Z", "+00:00")},
            headers={"X-Request-ID": "req-123"},
        )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "req-123"
    data = response.json()["data"]
    assert data["status"] == "restore_triggered"
    assert data["app_id"] == "app-1"
    assert data["addon_id"] == addon == "db-acme-app-1"
    assert data["timestamp"] == iso(target)
    assert data["target"] == "new_cluster"
    assert data["restore_id"]
    assert data["cluster_name"] == f"{addon}-r{data['restore_id'][:8]}"
    assert data["backup_id"] == BACKUP_1_END.strftime("%Y%m%dT%H%M%S")
    # A NEW cluster, the source untouched.
    recovery = engine.objects[("Cluster", data["cluster_name"])]
    assert recovery["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == (
        target.strftime("%Y-%m-%d %H:%M:%S.000000+00:00")
    )
    # It reads the source incarnation's own folder, and archives to a fresh one.
    source = engine.objects[("Cluster", addon)]
    source_server = source["metadata"]["annotations"]["paas-pitr.io/server-name"]
    assert source_server.startswith(f"{addon}-") and source_server != addon
    assert source["spec"]["backup"]["barmanObjectStore"]["serverName"] == source_server
    external = recovery["spec"]["externalClusters"][0]["barmanObjectStore"]
    assert external["serverName"] == source_server
    own = recovery["spec"]["backup"]["barmanObjectStore"]["serverName"]
    assert own.startswith(data["cluster_name"] + "-") and own != source_server
    assert [c for c in engine.calls[calls_before:] if c[2] == addon] == []
    # The audit row, by the seed's query verbatim.
    rows = wait_for_rows(audit_dsn, 1)
    assert len(rows) == 1
    with psycopg.connect(audit_dsn) as conn:
        seed_rows = conn.execute(SEED_QUERY).fetchall()
    assert len(seed_rows) == 1
    _, target_id, details = seed_rows[0]
    assert target_id == addon
    assert details["app_id"] == "app-1"
    assert details["addon_id"] == addon
    assert details["timestamp"] == iso(target)
    assert details["restore_id"] == data["restore_id"]
    assert details["target"] == "new_cluster"
    assert details["actor"] == "tenant:acme"
    assert details["request_id"] == "req-123"


def test_seed_curl_path_under_api_prefix(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        response = client.post(
            f"/api/v1/apps/app-1/addons/{addon}/restore",
            content=json.dumps({"timestamp": iso(NOW - timedelta(hours=1))}),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 202, response.text


def test_restore_states_follow_the_recovery_cluster(
    api: RunningApi, engine: InMemoryEngine, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        data = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(NOW - timedelta(hours=1))},
        ).json()["data"]
        url = f"/v1/apps/app-1/addons/{addon}/restores/{data['restore_id']}"
        assert client.get(url).json()["data"]["status"] == "restore_triggered"
        engine.set_status("Cluster", data["cluster_name"], {"phase": "Setting up primary"})
        assert client.get(url).json()["data"]["status"] == "recovering"
        engine.set_status(
            "Cluster",
            data["cluster_name"],
            {
                "phase": "Cluster in healthy state",
                "readyInstances": 3,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        )
        assert client.get(url).json()["data"]["status"] == "ready"
        watched = hasattr(engine, "engine")  # the Kubernetes engine watches clusters
        if watched:
            # The outcome is audited once, from the watch (deterministic event id).
            (row,) = wait_for_rows(audit_dsn, 1, "addon.restore_ready")
            assert row[2]["restore_id"] == data["restore_id"]
        engine.set_status(
            "Cluster",
            data["cluster_name"],
            {
                "phase": "Setting up primary",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "RecoveryFailed",
                        "message": "recovery ended before configured recovery target was reached",
                    }
                ],
            },
        )
        failed = client.get(url).json()["data"]
        assert failed["status"] == "failed"
        assert "recovery target" in failed["reason"]
        if watched:
            (row,) = wait_for_rows(audit_dsn, 1, "addon.restore_failed")
            assert "recovery target" in row[2]["reason"]
        listed = client.get(f"/v1/apps/app-1/addons/{addon}/restores").json()["data"]
        assert [r["restore_id"] for r in listed] == [data["restore_id"]]
        assert client.get(f"/v1/apps/app-1/addons/{addon}/restores/nope").status_code == 404


def test_standard_plan_restores_the_newest_backup_ending_before(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine, plan="standard")
        response = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(BACKUP_2_END + timedelta(hours=3))},
        )
        assert response.status_code == 202, response.text
        data = response.json()["data"]
        assert data["backup_id"] == BACKUP_2_END.strftime("%Y%m%dT%H%M%S")
        # What it contains: the backup as of its consistency point, at most 2 s past its
        # (whole-second) recorded end.
        consistent = BACKUP_2_END + timedelta(seconds=2)
        assert data["restores_to"] == iso(consistent)
        assert data["message"] == (
            f"you asked for {iso(BACKUP_2_END + timedelta(hours=3))}; you get the end of backup "
            f"{data['backup_id']} at {iso(consistent)} (3.0 hours earlier)"
        )
        listing = client.get(f"/v1/apps/app-1/addons/{addon}/backups").json()["data"]
        assert listing["window"]["state"] == "open"
        assert listing["window"]["ranges"] == []
        assert [(p["backup_id"], p["at"]) for p in listing["window"]["restore_points"]] == [
            (BACKUP_2_END.strftime("%Y%m%dT%H%M%S"), iso(consistent)),
            (BACKUP_1_END.strftime("%Y%m%dT%H%M%S"), iso(BACKUP_1_END + timedelta(seconds=2))),
        ]
        recovery = engine.objects[("Cluster", data["cluster_name"])]
        assert recovery["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
            "backupID": data["backup_id"],
            "targetImmediate": True,
        }
        before_all = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(BACKUP_1_END - timedelta(seconds=1))},
        )
    assert before_all.status_code == 422
    assert before_all.json()["error"]["code"] == "no_backup_before_timestamp"


def test_a_plan_gap_splits_the_window_and_its_instants_are_refused(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """pro -> free -> pro: WAL of the free period was never archived. The window is made
    of what can be replayed; an instant of the gap is refused before anything is created."""
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        url = f"/v1/apps/app-1/addons/{addon}"
        assert client.patch(url, json={"plan": "free"}).status_code == 200
        in_the_gap = datetime.now(UTC)
        time.sleep(0.05)
        assert client.patch(url, json={"plan": "pro"}).status_code == 200
        switched_on = datetime.now(UTC)
        cluster = engine.objects[("Cluster", addon)]
        history = json.loads(cluster["metadata"]["annotations"]["paas-pitr.io/archive-history"])
        assert [(h["on"] is None, h["off"] is None, h["latest"]) for h in history] == [
            (True, False, iso(LAST_ARCHIVED)),
            (False, True, None),
        ]
        # The first base backup since archiving came back, then WAL past its end.
        started = max(datetime.fromisoformat(history[1]["on"]), switched_on)
        new_backup = backup_obj(addon, f"{addon}-daily-3", started + timedelta(milliseconds=300))
        new_backup["status"]["startedAt"] = iso(started + timedelta(milliseconds=100))
        engine.put(new_backup)
        time.sleep(2.1)
        engine.archived_at[addon] = started + timedelta(seconds=2)
        listing = client.get(f"{url}/backups").json()["data"]
        window = listing["window"]
        # Whole-second ends serve from two seconds later, sub-second ones from one.
        first_end = BACKUP_1_END + timedelta(seconds=2)
        current_start = started + timedelta(milliseconds=1300)
        assert [(r["earliest"], r["latest"], r["current"]) for r in window["ranges"]] == [
            (iso(first_end), iso(LAST_ARCHIVED), False),
            (iso(current_start), iso(started + timedelta(seconds=2)), True),
        ]
        assert "switched off" in window["ranges"][0]["ended_because"]
        assert (window["state"], window["earliest"]) == ("open", iso(current_start))
        before = set(engine.objects)
        refused = client.post(f"{url}/restore", json={"timestamp": iso(in_the_gap)})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "outside_recoverability_window"
        assert "gap" in error["message"]
        assert len(error["details"]["window"]["ranges"]) == 2
        assert set(engine.objects) == before
        # Both ranges restore.
        for target in (BACKUP_2_END, started + timedelta(milliseconds=1500)):
            accepted = client.post(f"{url}/restore", json={"timestamp": iso(target)})
            assert accepted.status_code == 202, accepted.text


def test_a_re_created_addon_is_a_new_incarnation(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        first = engine.objects[("Cluster", addon)]
        first_server = first["metadata"]["annotations"]["paas-pitr.io/server-name"]
        # What the operator leaves behind: Backups owned by the deleted Cluster, collected by
        # Kubernetes in the background (the in-memory engine never collects them).
        owned = backup_obj(addon, f"{addon}-daily-9", BACKUP_2_END + timedelta(hours=1))
        owned["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Cluster",
                "name": addon,
                "uid": first["metadata"]["uid"],
            }
        ]
        owned["status"]["serverName"] = first_server
        engine.put(owned)
        assert client.delete(f"/v1/apps/app-1/addons/{addon}").status_code == 204
        created = client.post("/v1/apps/app-1/addons", json={"plan": "pro", "version": "16"})
        assert created.status_code == 201, created.text
        view = created.json()["data"]
        assert view["addon_id"] == addon
        second = engine.objects[("Cluster", addon)]
        second_server = second["metadata"]["annotations"]["paas-pitr.io/server-name"]
        assert second_server != first_server and second_server.startswith(f"{addon}-")
        assert view["backups"]["server_name"] == second_server
        assert second["spec"]["backup"]["barmanObjectStore"]["serverName"] == second_server
        engine.set_status(
            "Cluster",
            addon,
            {"conditions": [{"type": "ContinuousArchiving", "status": "True", "reason": "ok"}]},
        )
        listing = client.get(f"/v1/apps/app-1/addons/{addon}/backups").json()["data"]
        assert owned["metadata"]["name"] not in [b["name"] for b in listing["items"]]
        assert listing["window"]["state"] == "waiting_for_backup"
        assert listing["window"]["earliest"] is None and listing["window"]["ranges"] == []
        refused = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore", json={"timestamp": iso(BACKUP_2_END)}
        )
        assert refused.status_code == 422
        assert "no completed base backup yet" in refused.json()["error"]["message"]


# --- validation: each with its own code, nothing created on failure ----------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            {
                "content": b'{"timestamp": "2026-01-01T00:00:00Z"}',
                "headers": {"Content-Type": "text/plain"},
            },
            415,
            "unsupported_media_type",
        ),
        (
            {"content": b'{"timestamp": "2026-01-01T00:00:00Z"}', "headers": {}},
            415,
            "unsupported_media_type",
        ),
        ({"json": {}}, 422, "invalid_request"),
        ({"json": ["2026-01-01T00:00:00Z"]}, 422, "invalid_request"),
        ({"json": {"timestamp": 1714836600}}, 422, "invalid_request"),
        ({"json": {"timestamp": "2026-01-01T00:00:00Z", "extra": 1}}, 422, "invalid_request"),
        (
            {"json": {"timestamp": "2026-01-01T00:00:00Z", "target": "elsewhere"}},
            422,
            "invalid_request",
        ),
        ({"json": {"timestamp": "2026-05-04T15:30:00"}}, 422, "timestamp_without_offset"),
        ({"json": {"timestamp": "last tuesday"}}, 422, "invalid_timestamp"),
        ({"json": {"timestamp": "2999-01-01T00:00:00Z"}}, 422, "timestamp_in_future"),
        ({"json": {"timestamp": "0001-01-01T00:00:00+01:00"}}, 422, "invalid_timestamp"),
        (
            {
                "content": b'{"timestamp": "' + b"x" * 70000 + b'"}',
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "body_too_large",
        ),
    ],
)
def test_restore_body_errors(
    api: RunningApi, engine: InMemoryEngine, kwargs: dict[str, Any], status: int, code: str
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        before = set(engine.objects)
        response = client.post(f"/v1/apps/app-1/addons/{addon}/restore", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert set(engine.objects) == before


def test_outside_window_carries_the_window(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        before = set(engine.objects)
        too_old = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(BACKUP_1_END - timedelta(minutes=1))},
        )
        too_new = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(LAST_ARCHIVED + timedelta(seconds=20))},
        )
    for response in (too_old, too_new):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "outside_recoverability_window"
        assert error["details"]["window"] == {
            "state": "open",
            "earliest": iso(BACKUP_1_END + timedelta(seconds=2)),
            "latest": iso(LAST_ARCHIVED),
            "ranges": [
                {"earliest": iso(BACKUP_1_END + timedelta(seconds=2)), "latest": iso(LAST_ARCHIVED)}
            ],
        }
    assert "before the oldest base backup is consistent" in too_old.json()["error"]["message"]
    assert "after the newest archived WAL" in too_new.json()["error"]["message"]
    assert set(engine.objects) == before


def test_free_plan_has_no_backups(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine, plan="free")
        response = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore", json={"timestamp": iso(NOW)}
        )
        backup = client.post(f"/v1/apps/app-1/addons/{addon}/backups")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "plan_has_no_backups"
    assert backup.status_code == 409


def test_what_was_archived_stays_restorable_on_the_free_plan(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """The window of an addon moved to free lists the range archived before; a restore into
    it is served (the window never shows what a restore then refuses)."""
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        url = f"/v1/apps/app-1/addons/{addon}"
        assert client.patch(url, json={"plan": "free"}).status_code == 200
        window = client.get(f"{url}/backups").json()["data"]["window"]
        assert window["state"] == "open"
        assert [(r["earliest"], r["latest"], r["current"]) for r in window["ranges"]] == [
            (iso(BACKUP_1_END + timedelta(seconds=2)), iso(LAST_ARCHIVED), False)
        ]
        inside = client.post(f"{url}/restore", json={"timestamp": iso(BACKUP_2_END)})
        after = client.post(
            f"{url}/restore", json={"timestamp": iso(LAST_ARCHIVED + timedelta(seconds=5))}
        )
    assert inside.status_code == 202, inside.text
    assert after.status_code == 422
    assert after.json()["error"]["code"] == "outside_recoverability_window"


def test_in_place_passes_validation_then_501(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        before = set(engine.objects)
        response = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(NOW - timedelta(hours=1)), "target": "in_place"},
        )
        invalid = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": "2026-05-04T15:30:00", "target": "in_place"},
        )
    assert invalid.json()["error"]["code"] == "timestamp_without_offset"
    if isinstance(engine, InMemoryEngine):
        assert response.status_code == 501
        assert response.json()["error"]["code"] == "in_place_not_available"
        assert "new_cluster" in response.json()["error"]["message"]
        assert set(engine.objects) == before
        return
    # The Kubernetes engine switches addons: the restore starts like a new_cluster one
    # (tests/integration/kubernetes/test_inplace.py follows it to the switch).
    assert response.status_code == 202, response.text
    assert response.json()["data"]["target"] == "in_place"
    assert set(engine.objects) - before == {("Cluster", response.json()["data"]["cluster_name"])}


def test_idempotency_key(api: RunningApi, engine: InMemoryEngine, audit_dsn: str) -> None:
    body = {"timestamp": iso(NOW - timedelta(hours=2))}
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        url = f"/v1/apps/app-1/addons/{addon}/restore"
        first = client.post(url, json=body, headers={"Idempotency-Key": "k-1"})
        second = client.post(url, json=body, headers={"Idempotency-Key": "k-1"})
        other = client.post(
            url,
            json={"timestamp": iso(NOW - timedelta(hours=3))},
            headers={"Idempotency-Key": "k-1"},
        )
        fresh = client.post(url, json=body, headers={"Idempotency-Key": "k-2"})
    assert first.status_code == second.status_code == 202
    assert second.headers.get("idempotent-replayed") == "true"
    assert first.json()["data"]["restore_id"] == second.json()["data"]["restore_id"]
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert fresh.json()["data"]["restore_id"] != first.json()["data"]["restore_id"]
    recoveries = [k for k in engine.objects if k[0] == "Cluster" and k[1] != addon]
    assert len(recoveries) == 2
    assert len(wait_for_rows(audit_dsn, 2)) == 2


# --- auth and tenancy -------------------------------------------------------------------


def test_missing_and_bad_tokens(api: RunningApi) -> None:
    with api.client() as client:
        missing = client.get("/v1/apps/app-1/addons")
        bad = client.get("/v1/apps/app-1/addons", headers={"Authorization": "Bearer nope"})
        forged = client.get(
            "/v1/apps/app-1/addons",
            headers={"Authorization": f"Bearer {api.token()[:-4]}AAAA"},
        )
    for response in (missing, bad, forged):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_other_tenants_addon_is_indistinguishable_from_missing(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token("acme")) as acme:
        addon = make_addon(acme, engine)
    with api.client(api.token("globex")) as globex:
        responses = [
            globex.get(f"/v1/apps/app-1/addons/{addon}"),
            globex.get(f"/v1/apps/app-1/addons/{addon}/backups"),
            globex.post(f"/v1/apps/app-1/addons/{addon}/restore", json={"timestamp": iso(NOW)}),
            globex.get(f"/v1/addons/{addon}/backups"),
            globex.delete(f"/v1/apps/app-1/addons/{addon}"),
        ]
        missing = globex.get("/v1/apps/app-1/addons/db-none-here")
        listed = globex.get("/v1/apps/app-1/addons").json()["data"]
    for response in responses:
        assert response.status_code == 404
        assert response.json()["error"] == {
            **missing.json()["error"],
            "message": response.json()["error"]["message"],
        }
    assert listed == []
    assert ("Cluster", addon) in engine.objects


def test_operator_may_act_for_a_tenant(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token("acme")) as acme:
        addon = make_addon(acme, engine)
    with api.client(api.token("platform", role="operator")) as operator:
        seen = operator.get(f"/v1/apps/app-1/addons/{addon}", headers={"X-PaaS-Tenant": "acme"})
    with api.client(api.token("globex")) as tenant:
        refused = tenant.get(f"/v1/apps/app-1/addons/{addon}", headers={"X-PaaS-Tenant": "acme"})
    assert seen.status_code == 200
    assert refused.status_code == 404


# --- addons and backups -----------------------------------------------------------------


def test_addon_lifecycle(api: RunningApi, engine: InMemoryEngine, audit_dsn: str) -> None:
    with api.client(api.token()) as client:
        created = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
        assert created.status_code == 201, created.text
        view = created.json()["data"]
        assert view["addon_id"] == "db-acme-app-1"
        assert view["plan"] == "pro"
        assert view["tier"] == "pitr"
        assert view["version"] == "16"
        assert view["backups"]["retention"] == "35d"
        assert view["backups"]["destination"] == "s3://paas-pg-backups/acme/app-1"
        assert len(view["backups"]["schedule"].split()) == 6
        scheduled = engine.objects[("ScheduledBackup", "db-acme-app-1-daily")]
        assert (
            scheduled["metadata"]["ownerReferences"][0]["uid"]
            == (engine.objects[("Cluster", "db-acme-app-1")]["metadata"]["uid"])
        )
        duplicate = client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
        assert duplicate.status_code == 409
        assert duplicate.json()["error"]["code"] == "addon_exists"
        bad_plan = client.post("/v1/apps/app-1/addons", json={"plan": "gold"})
        assert bad_plan.json()["error"]["code"] == "unknown_plan"
        bad_name = client.post("/v1/apps/App_1/addons", json={"plan": "pro"})
        assert bad_name.json()["error"]["code"] == "invalid_name"
        assert [a["addon_id"] for a in client.get("/v1/apps/app-1/addons").json()["data"]] == [
            "db-acme-app-1"
        ]

        down = client.patch("/v1/apps/app-1/addons/db-acme-app-1", json={"plan": "free"})
        assert down.status_code == 200, down.text
        assert down.json()["data"]["backups"] is None
        cluster = engine.objects[("Cluster", "db-acme-app-1")]
        assert "backup" not in cluster["spec"]
        assert ("ScheduledBackup", "db-acme-app-1-daily") not in engine.objects

        up = client.patch("/v1/apps/app-1/addons/db-acme-app-1", json={"plan": "standard"})
        assert up.json()["data"]["backups"]["retention"] == "7d"
        assert ("ScheduledBackup", "db-acme-app-1-daily") in engine.objects

        assert client.delete("/v1/apps/app-1/addons/db-acme-app-1").status_code == 204
        assert client.get("/v1/apps/app-1/addons/db-acme-app-1").status_code == 404
    assert [k for k in engine.objects if k[1].startswith("db-acme-app-1")] == []
    actions = ["addon.create", "addon.plan_change", "addon.delete"]
    for action in actions:
        assert wait_for_rows(audit_dsn, 1, action), action


def test_backup_listing_newest_first_paginated(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        for day in range(3, 8):
            end = NOW - timedelta(days=day)
            engine.put(backup_obj(addon, f"{addon}-daily-old-{day}", end))
        engine.put(backup_obj(addon, f"{addon}-running", NOW, phase="running"))
        page1 = client.get(f"/v1/apps/app-1/addons/{addon}/backups?per_page=3").json()["data"]
        page3 = client.get(f"/v1/apps/app-1/addons/{addon}/backups?per_page=3&page=3").json()[
            "data"
        ]
        legacy = client.get(f"/v1/addons/{addon}/backups?per_page=3").json()["data"]
        bad_page = client.get(f"/v1/apps/app-1/addons/{addon}/backups?page=0")
    assert page1["pagination"] == {"page": 1, "per_page": 3, "total": 8, "pages": 3}
    assert [b["status"] for b in page1["items"]] == ["running", "completed", "completed"]
    assert page1["items"][1]["stopped_at"] > page1["items"][2]["stopped_at"]
    assert len(page3["items"]) == 2
    assert page1["wal_archive"]["kind"] == "wal"
    assert page1["wal_archive"]["status"] == "healthy"
    window = page1["window"]
    assert datetime.fromisoformat(window["earliest"]) == BACKUP_1_END + timedelta(seconds=2)
    assert datetime.fromisoformat(window["latest"]) == LAST_ARCHIVED
    assert legacy == page1
    assert bad_page.status_code == 422
    assert bad_page.json()["error"]["code"] == "invalid_request"


def test_on_demand_backup(api: RunningApi, engine: InMemoryEngine, audit_dsn: str) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        response = client.post(f"/v1/apps/app-1/addons/{addon}/backups")
    assert response.status_code == 202, response.text
    name = response.json()["data"]["name"]
    assert response.json()["data"]["status"] == "pending"
    stored = engine.objects[("Backup", name)]
    assert stored["spec"]["cluster"]["name"] == addon
    assert wait_for_rows(audit_dsn, 1, "addon.backup")


def test_legacy_restore_path(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        response = client.post(
            f"/v1/addons/{addon}/restore", json={"timestamp": iso(NOW - timedelta(hours=1))}
        )
        spec = client.get("/openapi.json").json()
    assert response.status_code == 202
    assert response.json()["data"]["app_id"] == "app-1"
    assert spec["paths"]["/v1/addons/{addon_id}/restore"]["post"]["deprecated"] is True
    assert "deprecated" not in spec["paths"]["/v1/apps/{app_id}/addons/{addon_id}/restore"]["post"]


# --- operations -------------------------------------------------------------------------


def test_health_ready_metrics_docs(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client() as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["data"]["checks"]["database"]["ok"] is True
        engine.down = True
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["data"]["checks"]["engine"]["ok"] is False
        assert "engine" in not_ready.json()["error"]["message"]
        engine.down = False
        client.get("/v1/apps/app-1/addons")
        metrics = client.get("/metrics").text
        assert "paas_pitr_http_requests_total" in metrics
        assert 'route="/v1/apps/{app_id}/addons"' in metrics
        assert client.get("/docs").status_code == 200
        assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_engine_outage_is_a_503_not_a_hang(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        engine.down = True
        response = client.get(f"/v1/apps/app-1/addons/{addon}/backups")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "engine_unavailable"


def test_dashboard_is_served_with_a_strict_csp(api: RunningApi) -> None:
    with api.client() as client:
        page = client.get("/dashboard")
        script = client.get("/dashboard/dashboard.js")
        missing = client.get("/dashboard/../../etc/passwd")
        root = client.get("/", follow_redirects=False)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert '<script src="/dashboard/dashboard.js">' in page.text
    assert script.status_code == 200
    assert "innerHTML" not in script.text  # user data only ever goes through textContent
    assert missing.status_code == 404
    assert root.status_code == 307
    assert root.headers["location"] == "/dashboard"


# --- limits and cleanup -------------------------------------------------------------------


def test_a_restore_cluster_can_be_deleted(
    api: RunningApi, engine: InMemoryEngine, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        made = client.post(
            f"/v1/apps/app-1/addons/{addon}/restore",
            json={"timestamp": iso(NOW - timedelta(hours=2))},
        )
        assert made.status_code == 202, made.text
        restore = made.json()["data"]
        url = f"/v1/apps/app-1/addons/{addon}/restores/{restore['restore_id']}"
        with api.client(api.token("globex")) as other:
            assert other.delete(url).status_code == 404  # another tenant's: not found
        assert ("Cluster", restore["cluster_name"]) in engine.objects
        assert client.delete(url).status_code == 204
        assert ("Cluster", restore["cluster_name"]) not in engine.objects
        assert client.get(f"/v1/apps/app-1/addons/{addon}/restores").json()["data"] == []
        assert client.delete(url).status_code == 404
    (row,) = wait_for_rows(audit_dsn, 1, "addon.restore_delete")
    assert row[2]["restore_id"] == restore["restore_id"]
    assert row[2]["cluster_name"] == restore["cluster_name"]


def mark_ready(engine: InMemoryEngine, cluster_name: str) -> None:
    """The operator reporting a recovery cluster ready (its restore is no longer under way)."""
    engine.set_status(
        "Cluster",
        cluster_name,
        {
            "phase": "Cluster in healthy state",
            "readyInstances": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
        },
    )


def test_per_tenant_limits(
    settings: Settings, engine: InMemoryEngine, audit_dsn: str, workdir: Path
) -> None:
    limited = settings.model_copy(
        update={
            "max_addons_per_tenant": 2,
            "max_restores_per_addon": 2,
            "max_concurrent_restores_per_tenant": 1,
        }
    )
    real_engine = getattr(engine, "engine", engine)
    journal = limited.state_dir / "audit" / "journal.jsonl"
    api = start_api(make_state(limited, real_engine, audit_dsn, journal))
    try:
        with api.client(api.token()) as client:
            addon = make_addon(client, engine)
            make_addon(client, engine, plan="free", app="app-2")
            third = client.post("/v1/apps/app-3/addons", json={"plan": "pro"})
            assert third.status_code == 409, third.text
            assert third.json()["error"]["code"] == "limit_reached"
            assert third.json()["error"]["details"]["setting"] == "PAAS_PITR_MAX_ADDONS_PER_TENANT"
            assert ("Cluster", "db-acme-app-3") not in engine.objects
            url = f"/v1/apps/app-1/addons/{addon}/restore"
            body = {"timestamp": iso(NOW - timedelta(hours=2))}
            first = client.post(url, json=body)
            assert first.status_code == 202, first.text
            # Under way: a second restore of the tenant waits its turn.
            busy = client.post(url, json=body)
            assert busy.status_code == 429, busy.text
            assert busy.json()["error"]["code"] == "too_many_concurrent_restores"
            mark_ready(engine, first.json()["data"]["cluster_name"])
            second = client.post(url, json=body)
            assert second.status_code == 202, second.text
            mark_ready(engine, second.json()["data"]["cluster_name"])
            kept = client.post(url, json=body)
            assert kept.status_code == 409, kept.text
            assert kept.json()["error"]["code"] == "limit_reached"
            assert "DELETE" in kept.json()["error"]["message"]
            restore_id = first.json()["data"]["restore_id"]
            assert client.delete(f"{url}s/{restore_id}").status_code == 204
            assert client.post(url, json=body).status_code == 202
    finally:
        api.stop()
