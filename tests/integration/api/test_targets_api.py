"""Recovery targets through the API, on both engines (the in-memory one and the Kubernetes
engine against the API double, whose CRD schemas validate every recovery Cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from paas_pitr.bucket import InMemoryBucket
from paas_pitr.engines.memory import InMemoryEngine
from tests.integration.api.test_api import BACKUP_2_END, make_addon
from tests.integration.conftest import KubernetesHarness, RunningApi

DESTINATION = "s3://paas-pg-backups/acme/app-1"


def bucket_of(engine: Any) -> InMemoryBucket:
    bucket = engine.bucket
    assert isinstance(bucket, InMemoryBucket)
    return bucket


def archive(engine: Any, addon: str, last_segment: int = 8) -> str:
    """WAL segments 2..last_segment in the addon's folder; its server name."""
    cluster = engine.objects[("Cluster", addon)]
    server = str(cluster["metadata"]["annotations"]["paas-pitr.io/server-name"])
    for number in range(2, last_segment + 1):
        bucket_of(engine).add_wal(
            DESTINATION, server, f"0000000100000000{number:08X}", datetime.now(UTC)
        )
    return server


def restore(client: httpx.Client, addon: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/apps/app-1/addons/{addon}/restore", json=body)


def recovery_target(engine: Any, response: httpx.Response) -> dict[str, Any] | None:
    assert response.status_code == 202, response.text
    cluster = engine.objects[("Cluster", response.json()["data"]["cluster_name"])]
    recovery = cluster["spec"]["bootstrap"]["recovery"]
    found: dict[str, Any] | None = recovery.get("recoveryTarget")
    return found


def test_lsn_targets_render_and_are_bounded(api: RunningApi, engine: Any) -> None:
    backup_id = BACKUP_2_END.strftime("%Y%m%dT%H%M%S")
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        archive(engine, addon)
        inclusive = restore(client, addon, {"lsn": "0/5000abc"})
        assert recovery_target(engine, inclusive) == {
            "backupID": backup_id,
            "targetLSN": "0/5000ABC",
        }
        exclusive = restore(client, addon, {"lsn": "0/5000ABC", "inclusive": False})
        assert recovery_target(engine, exclusive) == {
            "backupID": backup_id,
            "targetLSN": "0/5000ABC",
            "exclusive": True,
        }
        assert exclusive.json()["data"]["recovery_target"] == {
            "kind": "lsn",
            "value": "0/5000ABC",
            "inclusive": False,
        }
        # Both backups end at 0/3000100; the newest segment, 8, is not proven complete.
        for lsn in ("0/3000100", "0/8000000", "1/0"):
            refused = restore(client, addon, {"lsn": lsn})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "target_not_reachable"
            assert error["details"]["earliest_lsn"] == "0/3000100"
            assert error["details"]["latest_lsn"] == "0/8000000"


def test_latest_replays_the_whole_archive(api: RunningApi, engine: Any) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        response = restore(client, addon, {"timestamp": "latest"})
        assert recovery_target(engine, response) is None
        data = response.json()["data"]
        assert data["recovery_target"] == {"kind": "latest", "value": "latest"}
        assert data["restores_to"] is not None


def test_restore_point_targets_need_a_recorded_name(api: RunningApi, engine: Any) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        archive(engine, addon)
        unknown = restore(client, addon, {"restore_point": "before migration 42"})
        assert unknown.status_code == 422
        assert unknown.json()["error"]["code"] == "unknown_restore_point"


def test_restore_points_are_created_unique_and_restorable(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    if not isinstance(engine, InMemoryEngine):
        pytest.skip("the in-memory primary; Kubernetes: test_kubernetes_primary_needs_...")
    engine.fake_primary.next_lsn = 0x4000028
    url_points = "/v1/apps/app-1/addons/{}/restore-points"
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        archive(engine, addon)
        created = client.post(url_points.format(addon), json={"name": "before migration 42"})
        assert created.status_code == 201, created.text
        assert created.json()["data"]["lsn"] == "0/4000028"
        again = client.post(url_points.format(addon), json={"name": "before migration 42"})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "restore_point_exists"
        bad = client.post(url_points.format(addon), json={"name": "x" * 64})
        assert bad.status_code == 422
        listed = client.get(url_points.format(addon)).json()["data"]
        assert [(p["name"], p["lsn"]) for p in listed] == [("before migration 42", "0/4000028")]
        response = restore(client, addon, {"restore_point": "before migration 42"})
        assert recovery_target(engine, response) == {
            "backupID": BACKUP_2_END.strftime("%Y%m%dT%H%M%S"),
            "targetName": "before migration 42",
        }
    assert engine.fake_primary.points == [(addon, "before migration 42")]


def test_kubernetes_primary_needs_the_superuser_secret(api: RunningApi, engine: Any) -> None:
    if not isinstance(engine, KubernetesHarness):
        pytest.skip("Kubernetes only")
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)  # type: ignore[arg-type]
        archive(engine, addon)
        response = client.post(f"/v1/apps/app-1/addons/{addon}/restore-points", json={"name": "p1"})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "primary_unreachable"
    assert f"{addon}-superuser" in error["message"]
    assert "enableSuperuserAccess" in error["message"]


def test_events_without_the_control_planes_keys_name_what_is_missing(
    api: RunningApi, engine: Any
) -> None:
    if not isinstance(engine, KubernetesHarness):
        pytest.skip("Kubernetes only: the local and in-memory engines always have a bucket")
    engine.engine.bucket = None
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)  # type: ignore[arg-type]
        response = client.get(f"/v1/apps/app-1/addons/{addon}/events")
        refused = restore(client, addon, {"lsn": "0/5000000"})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "archive_bucket_not_configured"
    assert error["details"]["missing_settings"] == [
        "PAAS_PITR_S3_ACCESS_KEY_ID",
        "PAAS_PITR_S3_SECRET_ACCESS_KEY",
    ]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "archive_bucket_not_configured"


def test_events_range_and_kind_are_validated(api: RunningApi, engine: Any) -> None:
    now = datetime.now(UTC)
    with api.client(api.token(), contract=True) as client:
        addon = make_addon(client, engine)
        url = f"/v1/apps/app-1/addons/{addon}/events"
        backwards = client.get(
            url,
            params={"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()},
        )
        unknown = client.get(url, params={"kind": "drop,explode"})
        # An hour before this instant is before what a datetime holds (was a 500).
        ancient = client.get(url, params={"to": "0001-01-01T00:30:00Z"})
        empty = client.get(url)
    assert backwards.status_code == 422 and backwards.json()["error"]["code"] == "invalid_input"
    assert unknown.status_code == 422 and "explode" in unknown.json()["error"]["message"]
    assert ancient.status_code == 422 and ancient.json()["error"]["code"] == "invalid_timestamp"
    assert empty.status_code == 200, empty.text
    assert empty.json()["data"]["items"] == []
    scan = empty.json()["data"]["scan"]
    assert scan["segments"] == 0 and scan["warnings"] == []
    assert datetime.fromisoformat(scan["to"]) - datetime.fromisoformat(scan["from"]) == timedelta(
        hours=1
    )


def test_invalid_targets_are_refused_with_one_code(api: RunningApi, engine: Any) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        clusters = {k for k in engine.objects if k[0] == "Cluster"}
        empty = restore(client, addon, {})
        assert empty.status_code == 422 and empty.json()["error"]["code"] == "invalid_request"
        for body in (
            {"lsn": "0/1", "xid": 5},
            {"lsn": "nope"},
            {"xid": 2},
            {"xid": "12a"},
            {"restore_point": "p", "inclusive": True},
            {"timestamp": "latest", "inclusive": False},
        ):
            response = restore(client, addon, body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"]["code"] == "invalid_recovery_target", body
        assert {k for k in engine.objects if k[0] == "Cluster"} == clusters


def test_restore_points_need_a_wal_archive(api: RunningApi, engine: Any) -> None:
    url = "/v1/apps/{}/addons/{}/restore-points"
    with api.client(api.token(), contract=True) as client:
        free = make_addon(client, engine, plan="free", app="app-2")
        standard = make_addon(client, engine, plan="standard", app="app-3")
        on_free = client.post(url.format("app-2", free), json={"name": "p1"})
        on_standard = client.post(url.format("app-3", standard), json={"name": "p1"})
    assert on_free.status_code == 409, on_free.text
    assert on_free.json()["error"] == {
        "code": "plan_has_no_backups",
        "message": f"addon {free!r} is on the 'free' plan, which has no WAL archive: a restore "
        "point needs archived WAL to replay (the pro plan)",
        "details": {"plan": "free"},
    }
    assert on_standard.status_code == 422, on_standard.text
    assert on_standard.json()["error"]["code"] == "invalid_recovery_target"
