"""Restore drills over real HTTP, on the in-memory engine and on the Kubernetes engine
against the API double: the test plays the CNPG operator (the drill cluster's status, its
generated app Secret) and a real PostgreSQL server stands for the recovered cluster."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paas_pitr.cnpg import naming
from paas_pitr.drills.access import MemoryAccess
from paas_pitr.drills.service import INTERRUPTED
from paas_pitr.postgres.server import PostgresServer
from paas_pitr.settings import Settings
from tests.integration.api.test_api import (
    BACKUP_2_END,
    LAST_ARCHIVED,
    iso,
    make_addon,
    wait_for_rows,
)
from tests.integration.conftest import KubernetesHarness, RunningApi, make_state, start_api

Engine = Any  # InMemoryEngine or KubernetesHarness: the same test helpers


def wait(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}: {last!r}")


def drill_clusters(engine: Engine) -> list[dict[str, Any]]:
    return [
        obj
        for (kind, _), obj in engine.objects.items()
        if kind == "Cluster" and obj["metadata"]["labels"][naming.LABEL_ROLE] == naming.ROLE_DRILL
    ]


def bring_up(api: RunningApi, engine: Engine, pg: PostgresServer, name: str) -> None:
    """The operator: the drill cluster is ready, with its connection published."""
    if isinstance(engine, KubernetesHarness):
        secret = {
            "username": "postgres",
            "password": pg.password,
            "host": "127.0.0.1",
            "port": str(pg.port),
            "dbname": "postgres",
        }
        engine.double.secrets[f"{name}-app"] = {
            k: base64.b64encode(v.encode()).decode() for k, v in secret.items()
        }
    else:
        access = api.state.drills.access
        assert isinstance(access, MemoryAccess)
        access.conninfos[name] = pg.dsn()
    engine.set_status(
        "Cluster",
        name,
        {
            "phase": "Cluster in healthy state",
            "readyInstances": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady"}],
        },
    )


def sample(client: httpx.Client, name: str, **labels: str) -> float | None:
    """The value of the metric sample ``name`` whose labels are exactly ``labels``."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def finished(client: httpx.Client, url: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        record: dict[str, Any] = client.get(url).json()["data"]
        return record if record["status"] in ("passed", "failed") else None

    result: dict[str, Any] = wait(done, "the drill to finish")
    return result


def test_a_pro_drill_restores_checks_records_and_deletes_its_cluster(
    api: RunningApi, engine: Engine, pg: PostgresServer, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        started = client.post(f"/v1/apps/app-1/addons/{addon}/drills")
        assert started.status_code == 202, started.text
        drill = started.json()["data"]
        url = f"/v1/apps/app-1/addons/{addon}/drills/{drill['drill_id']}"
        assert started.headers["Location"] == url
        assert (drill["status"], drill["trigger"], drill["target"]) == (
            "queued",
            "api",
            "point_in_time",
        )
        assert drill["target_time"] == iso(LAST_ARCHIVED)
        assert drill["backup_id"] == BACKUP_2_END.strftime("%Y%m%dT%H%M%S")

        (cluster,) = wait(lambda: drill_clusters(engine), "the drill cluster")
        name = cluster["metadata"]["name"]
        assert name == drill["cluster_name"]
        assert cluster["metadata"]["labels"][naming.LABEL_DRILL_ID] == drill["drill_id"]
        spec = cluster["spec"]
        assert spec["instances"] == 1
        assert "backup" not in spec
        assert spec["bootstrap"]["recovery"]["recoveryTarget"] == {
            "targetTime": LAST_ARCHIVED.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
        }
        assert spec["managed"]["roles"][0]["superuser"] is True
        # Not a user's restore: not listed, and a second drill is refused while it runs.
        assert client.get(f"/v1/apps/app-1/addons/{addon}/restores").json()["data"] == []
        again = client.post(f"/v1/apps/app-1/addons/{addon}/drills")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "drill_in_progress"
        assert client.get(url).json()["data"]["status"] == "running"

        bring_up(api, engine, pg, name)
        record = finished(client, url)

        assert record["status"] == "passed", record
        assert [c["name"] for c in record["checks"]] == [
            "recovery",
            "promoted_and_writable",
            "reached_target",
            "amcheck",
            "user_tables",
        ]
        assert all(c["passed"] for c in record["checks"])
        assert record["rto_seconds"] > 0
        assert record["data_bytes"] > 0
        assert record["failing_check"] is None
        assert record["ready_at"] is not None
        wait(lambda: not drill_clusters(engine), "the drill cluster's deletion")

        view = client.get(f"/v1/apps/app-1/addons/{addon}").json()["data"]
        assert view["last_drill"] == {
            "drill_id": drill["drill_id"],
            "status": "passed",
            "finished_at": record["finished_at"],
            "rto_seconds": record["rto_seconds"],
            "failing_check": None,
        }
        listing = client.get(f"/v1/apps/app-1/addons/{addon}/drills").json()["data"]
        assert listing["total"] == 1
        assert [d["drill_id"] for d in listing["items"]] == [drill["drill_id"]]
        assert client.get(f"/v1/apps/app-1/addons/{addon}/drills/nope").status_code == 404
        (row,) = wait_for_rows(audit_dsn, 1, "addon.drill")
        assert row[1] == addon
        assert row[2]["outcome"] == "passed"
        assert row[2]["rto_seconds"] == record["rto_seconds"]
        labels = {"tenant": "acme", "app": "app-1", "addon": addon}
        assert sample(client, "paas_pitr_drill_last_rto_seconds", **labels) == record["rto_seconds"]
        passed_at = sample(client, "paas_pitr_drill_last_passed_timestamp_seconds", **labels)
        assert passed_at is not None
        assert abs(passed_at - datetime.fromisoformat(record["finished_at"]).timestamp()) < 0.01


def test_a_standard_drill_restores_the_newest_backup(
    api: RunningApi, engine: Engine, pg: PostgresServer
) -> None:
    with api.client(api.token()) as client:
        addon = make_addon(client, engine, plan="standard")
        drill = client.post(f"/v1/apps/app-1/addons/{addon}/drills").json()["data"]
        assert drill["target"] == "backup_end"
        backup_id = BACKUP_2_END.strftime("%Y%m%dT%H%M%S")
        assert drill["backup_id"] == backup_id
        (cluster,) = wait(lambda: drill_clusters(engine), "the drill cluster")
        assert cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
            "backupID": backup_id,
            "targetImmediate": True,
        }
        bring_up(api, engine, pg, cluster["metadata"]["name"])
        record = finished(client, f"/v1/apps/app-1/addons/{addon}/drills/{drill['drill_id']}")
        assert record["status"] == "passed", record


def test_a_failed_recovery_fails_the_drill_with_its_reason_everywhere(
    api: RunningApi, engine: Engine, audit_dsn: str
) -> None:
    reason = "recovery ended before configured recovery target was reached"
    with api.client(api.token()) as client:
        addon = make_addon(client, engine)
        drill = client.post(f"/v1/apps/app-1/addons/{addon}/drills").json()["data"]
        (cluster,) = wait(lambda: drill_clusters(engine), "the drill cluster")
        engine.set_status(
            "Cluster",
            cluster["metadata"]["name"],
            {
                "phase": "Setting up primary",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "RecoveryFailed",
                        "message": reason,
                    }
                ],
            },
        )
        record = finished(client, f"/v1/apps/app-1/addons/{addon}/drills/{drill['drill_id']}")

        assert (record["status"], record["failing_check"], record["reason"]) == (
            "failed",
            "recovery",
            reason,
        )
        assert record["hint"]
        assert record["rto_seconds"] is None
        wait(lambda: not drill_clusters(engine), "the drill cluster's deletion")
        (row,) = wait_for_rows(audit_dsn, 1, "addon.drill")
        assert (row[2]["outcome"], row[2]["failing_check"], row[2]["reason"]) == (
            "failed",
            "recovery",
            reason,
        )
        labels = {"tenant": "acme", "app": "app-1", "addon": addon}
        assert sample(client, "paas_pitr_drills_failed_total", check="recovery", **labels) == 1
        assert (
            sample(
                client, "paas_pitr_drill_last_failure", check="recovery", reason=reason, **labels
            )
            == 1
        )
        view = client.get(f"/v1/apps/app-1/addons/{addon}").json()["data"]
        assert view["last_drill"]["status"] == "failed"
        assert view["last_drill"]["failing_check"] == "recovery"


def test_plans_without_backups_and_bad_timestamps_are_refused(
    api: RunningApi, engine: Engine
) -> None:
    with api.client(api.token(), contract=True) as client:
        free = make_addon(client, engine, plan="free", app="app-2")
        refused = client.post(f"/v1/apps/app-2/addons/{free}/drills")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "plan_has_no_backups"
        pro = make_addon(client, engine)
        for body, code in (
            ({"timestamp": "2026-01-01T00:00:00"}, "timestamp_without_offset"),
            ({"timestamp": iso(LAST_ARCHIVED + timedelta(days=1))}, "timestamp_in_future"),
            ({"timestamp": iso(LAST_ARCHIVED), "extra": 1}, "invalid_request"),
        ):
            answer = client.post(f"/v1/apps/app-1/addons/{pro}/drills", json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["code"] == code
        assert client.post("/v1/apps/app-1/addons/nope/drills").status_code == 404
        assert not drill_clusters(engine)


def test_a_drill_cut_short_by_a_restart_leaves_no_cluster(
    kube: KubernetesHarness, settings: Settings, audit_dsn: str
) -> None:
    """On Kubernetes: a graceful stop deletes the running drill's cluster and records the
    drill as interrupted in its ConfigMap, where the next process reads it."""
    journal = settings.state_dir / "audit" / "journal.jsonl"
    api = start_api(make_state(settings, kube.engine, audit_dsn, journal))
    with api.client(api.token()) as client:
        addon = make_addon(client, kube)  # type: ignore[arg-type]  # the same helpers
        drill = client.post(f"/v1/apps/app-1/addons/{addon}/drills").json()["data"]
        wait(lambda: drill_clusters(kube), "the drill cluster")
    api.stop()

    assert not drill_clusters(kube)
    assert f"{addon}-drills" in kube.double.configmaps
    again = start_api(make_state(settings, kube.engine, audit_dsn, journal))
    try:
        with again.client(again.token()) as client:
            url = f"/v1/apps/app-1/addons/{addon}/drills/{drill['drill_id']}"
            record = client.get(url).json()["data"]
    finally:
        again.stop()
    assert (record["status"], record["failing_check"]) == ("failed", "interrupted")
    assert record["reason"] == INTERRUPTED
