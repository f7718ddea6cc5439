"""Deleted addons over real HTTP, on both engines (the in-memory one, and the Kubernetes
engine through the API double): the archive is recorded, listed and restorable into a new
cluster until its retention has passed; the bucket is the in-memory fake both expose."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from paas_pitr.api.state import AppState
from paas_pitr.bucket import InMemoryBucket
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.tombstones import TOMBSTONE_ROOT, tombstone_key
from tests.integration.api.test_api import iso, make_addon, wait_for_rows
from tests.integration.conftest import RunningApi

T = TypeVar("T")
DESTINATION = "s3://paas-pg-backups/acme/app-1"
ADDON = "db-acme-app-1"
NOW = datetime.now(UTC).replace(microsecond=0)
# The deleted incarnation's archive: two backups a day apart, WAL until an hour ago.
FIRST_BEGIN = NOW - timedelta(days=3)
FIRST_END = FIRST_BEGIN + timedelta(minutes=2)
SECOND_BEGIN = NOW - timedelta(days=2)
SECOND_END = SECOND_BEGIN + timedelta(minutes=2, microseconds=250_000)
NEWEST_WAL = NOW - timedelta(hours=1)


def bucket_of(engine: Any) -> InMemoryBucket:
    bucket = engine.bucket
    assert isinstance(bucket, InMemoryBucket)
    return bucket


def server_of(engine: Any, addon: str = ADDON) -> str:
    return str(
        engine.objects[("Cluster", addon)]["metadata"]["annotations"]["paas-pitr.io/server-name"]
    )


def fill_archive(engine: Any, server: str, pg_major: int = 15) -> None:
    bucket = bucket_of(engine)
    bucket.add_backup(DESTINATION, server, FIRST_BEGIN, FIRST_END, pg_major=pg_major)
    bucket.add_backup(DESTINATION, server, SECOND_BEGIN, SECOND_END, pg_major=pg_major)
    bucket.add_wal(DESTINATION, server, "000000010000000000000007", NEWEST_WAL)


def on_api_loop(state: AppState, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the API's own event loop (its clients and the audit log's
    wake-up live there)."""
    loop = state.audit.loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)


def deleted_addon(client: httpx.Client, engine: Any) -> str:
    """A pro addon with an archive, deleted; its server folder."""
    make_addon(client, engine)
    server = server_of(engine)
    fill_archive(engine, server)
    deleted = client.delete(f"/v1/apps/app-1/addons/{ADDON}")
    assert deleted.status_code == 204, deleted.text
    return server


def test_a_deleted_addon_is_listed_and_restored_into_a_new_cluster(
    api: RunningApi, engine: InMemoryEngine, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        before = datetime.now(UTC)
        server = deleted_addon(client, engine)
        assert ("Cluster", ADDON) not in engine.objects
        assert client.get(f"/v1/apps/app-1/addons/{ADDON}/backups").status_code == 404

        listed = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations")
        assert listed.status_code == 200, listed.text
        (inc,) = listed.json()["data"]
        assert inc["server_name"] == server and inc["current"] is False
        deleted_at = datetime.fromisoformat(inc["deleted_at"])
        assert before <= deleted_at <= datetime.now(UTC)
        assert datetime.fromisoformat(inc["retained_until"]) - deleted_at == timedelta(days=35)
        assert (inc["plan"], inc["tier"], inc["retention"]) == ("pro", "pitr", "35d")
        assert [b["backup_id"] for b in inc["base_backups"]] == [
            SECOND_BEGIN.strftime("%Y%m%dT%H%M%S"),
            FIRST_BEGIN.strftime("%Y%m%dT%H%M%S"),
        ]
        assert inc["base_backups"][1]["stopped_at"] == iso(FIRST_END)
        assert inc["base_backups"][1]["major_version"] == 15
        assert inc["earliest"] == iso(FIRST_END + timedelta(seconds=2))
        assert inc["latest"] == inc["newest_wal_at"] == iso(NEWEST_WAL)

        target = SECOND_END + timedelta(hours=3)
        response = client.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(target), "incarnation": server},
        )
        assert response.status_code == 202, response.text
        data = response.json()["data"]
        assert data["status"] == "restore_triggered"
        assert data["incarnation"] == server
        assert data["backup_id"] == SECOND_BEGIN.strftime("%Y%m%dT%H%M%S")
        assert data["restores_to"] == iso(target)
        assert response.headers["location"].endswith(f"/restores/{data['restore_id']}")

        recovery = engine.objects[("Cluster", data["cluster_name"])]
        external = recovery["spec"]["externalClusters"][0]["barmanObjectStore"]
        assert external["serverName"] == server
        assert external["destinationPath"] == DESTINATION
        # From the base backup chosen here: the operator does not list the catalog again.
        assert recovery["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
            "targetTime": target.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
            "backupID": SECOND_BEGIN.strftime("%Y%m%dT%H%M%S"),
        }
        # The data's own major (from the catalog), not the setting's default.
        assert recovery["spec"]["imageName"].endswith(":15")
        assert recovery["metadata"]["labels"]["paas-pitr.io/plan"] == "pro"
        own = recovery["metadata"]["annotations"]["paas-pitr.io/server-name"]
        assert own != server and own.startswith(data["cluster_name"])

        # Its restores stay listable although the addon is gone.
        restores = client.get(f"/v1/apps/app-1/addons/{ADDON}/restores")
        assert restores.status_code == 200, restores.text
        assert [r["restore_id"] for r in restores.json()["data"]] == [data["restore_id"]]
        one = client.get(f"/v1/apps/app-1/addons/{ADDON}/restores/{data['restore_id']}")
        assert one.status_code == 200 and one.json()["data"]["incarnation"] == server

    (row,) = wait_for_rows(audit_dsn, 1)
    assert row[1] == ADDON
    assert row[2]["incarnation"] == server
    assert row[2]["restore_id"] == data["restore_id"]
    (deletion,) = wait_for_rows(audit_dsn, 1, "addon.delete")
    assert deletion[2]["server_name"] == server
    assert deletion[2]["retained_until"] == inc["retained_until"]


def test_targets_outside_the_incarnation_are_refused_with_its_range(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token()) as client:
        server = deleted_addon(client, engine)
        before = set(engine.objects)
        url = f"/v1/apps/app-1/addons/{ADDON}/restore"
        too_old = client.post(url, json={"timestamp": iso(FIRST_END), "incarnation": server})
        too_new = client.post(
            url, json={"timestamp": iso(NEWEST_WAL + timedelta(seconds=1)), "incarnation": server}
        )
        in_place = client.post(
            url,
            json={
                "timestamp": iso(NOW - timedelta(days=1)),
                "incarnation": server,
                "target": "in_place",
            },
        )
    for response in (too_old, too_new):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "outside_recoverability_window"
        assert error["details"]["incarnation"] == server
        assert error["details"]["window"]["earliest"] == iso(FIRST_END + timedelta(seconds=2))
        assert error["details"]["window"]["latest"] == iso(NEWEST_WAL)
    assert "before the end of its oldest base backup" in too_old.json()["error"]["message"]
    assert "after its newest archived WAL" in too_new.json()["error"]["message"]
    assert in_place.status_code == 501
    # Nothing was created (the garbage collector may meanwhile have removed the deleted
    # Cluster's Backups: on Kubernetes it runs after the deletion, not within it).
    assert set(engine.objects) <= before


def test_incarnations_are_the_callers_and_the_addons_only(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token()) as acme, api.client(api.token("globex")) as globex:
        server = deleted_addon(acme, engine)
        # Another addon id's folder in the same app is not an incarnation of this one.
        other = "db-acme-app-1x-0a1b2c3d"
        fill_archive(engine, other)
        missing = acme.get("/v1/apps/app-1/addons/db-acme-nothing/incarnations")
        foreign = globex.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations")
        foreign_restore = globex.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(NOW - timedelta(days=1)), "incarnation": server},
        )
        foreign_restores = globex.get(f"/v1/apps/app-1/addons/{ADDON}/restores")
        wrong = acme.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(NOW - timedelta(days=1)), "incarnation": other},
        )
        bad_name = acme.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(NOW - timedelta(days=1)), "incarnation": "../x"},
        )
    for response in (missing, foreign, foreign_restore, foreign_restores):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert foreign.json()["error"]["message"] == missing.json()["error"]["message"].replace(
        "db-acme-nothing", ADDON
    )
    assert wrong.status_code == 404
    assert wrong.json()["error"]["details"] == {"incarnation": other}
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["code"] == "invalid_name"


def test_a_re_created_addon_lists_both_and_restores_either(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token()) as client:
        old = deleted_addon(client, engine)
        old_objects = dict(bucket_of(engine).objects)
        make_addon(client, engine)
        new = server_of(engine)
        assert new != old
        bucket_of(engine).add_backup(
            DESTINATION, new, NOW - timedelta(hours=3), NOW - timedelta(hours=2), pg_major=16
        )
        listed = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations").json()["data"]
        assert [(i["server_name"], i["current"]) for i in listed] == [(new, True), (old, False)]
        assert listed[0]["deleted_at"] is None and listed[0]["retained_until"] is None
        # The new incarnation never wrote into the old one's folder.
        assert {
            k: v for k, v in bucket_of(engine).objects.items() if k in old_objects
        } == old_objects

        at = iso(NOW - timedelta(days=1))
        from_old = client.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore", json={"timestamp": at, "incarnation": old}
        )
        assert from_old.status_code == 202, from_old.text
        cluster = engine.objects[("Cluster", from_old.json()["data"]["cluster_name"])]
        assert cluster["spec"]["externalClusters"][0]["barmanObjectStore"]["serverName"] == old
        # Naming the live incarnation is the ordinary restore (its window, not the bucket's).
        from_new = client.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(NOW - timedelta(hours=2)), "incarnation": new},
        )
        assert from_new.status_code == 202, from_new.text
        assert from_new.json()["data"]["incarnation"] == new
        restores = client.get(f"/v1/apps/app-1/addons/{ADDON}/restores").json()["data"]
        assert {r["incarnation"] for r in restores} == {old, new}


def test_a_standard_incarnation_restores_a_backup_end(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token()) as client:
        make_addon(client, engine, plan="standard")
        server = server_of(engine)
        fill_archive(engine, server)
        assert client.delete(f"/v1/apps/app-1/addons/{ADDON}").status_code == 204
        (inc,) = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations").json()["data"]
        assert datetime.fromisoformat(inc["retained_until"]) - datetime.fromisoformat(
            inc["deleted_at"]
        ) == timedelta(days=7)
        # Each backup serves from its consistency point: two seconds after a whole-second
        # end, one after a sub-second one.
        assert (inc["earliest"], inc["latest"], inc["ranges"]) == (
            iso(FIRST_END + timedelta(seconds=2)),
            iso(SECOND_END + timedelta(seconds=1)),
            [],
        )
        response = client.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(NOW - timedelta(hours=5)), "incarnation": server},
        )
        refused = client.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(FIRST_BEGIN), "incarnation": server},
        )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["backup_id"] == SECOND_BEGIN.strftime("%Y%m%dT%H%M%S")
    assert response.json()["data"]["restores_to"] == iso(SECOND_END + timedelta(seconds=1))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "no_backup_before_timestamp"


def test_the_archive_goes_when_retention_has_passed(
    api: RunningApi, engine: InMemoryEngine, audit_dsn: str
) -> None:
    with api.client(api.token()) as client:
        server = deleted_addon(client, engine)
        (inc,) = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations").json()["data"]
        retained_until = datetime.fromisoformat(inc["retained_until"])
        assert on_api_loop(api.state, api.state.archives.sweep(now=retained_until)) == []
        (expired,) = on_api_loop(
            api.state, api.state.archives.sweep(now=retained_until + timedelta(seconds=1))
        )
        assert expired.server_name == server
        assert bucket_of(engine).keys(f"acme/app-1/{server}/") == []
        assert bucket_of(engine).keys(TOMBSTONE_ROOT) == []
        gone = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations")
    assert gone.status_code == 404
    (row,) = wait_for_rows(audit_dsn, 1, "addon.archive_expired")
    assert row[1] == ADDON
    assert row[2]["server_name"] == server
    assert row[2]["retained_until"] == inc["retained_until"]


def test_an_unreachable_bucket_refuses_the_delete(api: RunningApi, engine: InMemoryEngine) -> None:
    with api.client(api.token()) as client:
        make_addon(client, engine)
        bucket_of(engine).down = True
        refused = client.delete(f"/v1/apps/app-1/addons/{ADDON}")
        listing = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations")
        bucket_of(engine).down = False
        still_there = client.get(f"/v1/apps/app-1/addons/{ADDON}")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "object_store_unavailable"
    assert listing.status_code == 503
    assert still_there.status_code == 200
    assert bucket_of(engine).keys(TOMBSTONE_ROOT) == []


def test_without_bucket_credentials_the_error_names_the_settings(
    api: RunningApi, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = getattr(engine, "engine", engine)
    if isinstance(real, InMemoryEngine):
        monkeypatch.setattr(real, "archive_bucket", lambda: None)
    else:
        monkeypatch.setattr(real, "bucket", None)  # as without PAAS_PITR_S3_* settings
    with api.client(api.token()) as client:
        make_addon(client, engine)
        listing = client.get(f"/v1/apps/app-1/addons/{ADDON}/incarnations")
        refused = client.delete(f"/v1/apps/app-1/addons/{ADDON}")
        restore = client.post(
            f"/v1/apps/app-1/addons/{ADDON}/restore",
            json={"timestamp": iso(NOW - timedelta(days=1)), "incarnation": f"{ADDON}-00000000"},
        )
    for response in (listing, refused, restore):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "archive_bucket_not_configured"
        assert error["details"]["missing_settings"] == [
            "PAAS_PITR_S3_ACCESS_KEY_ID",
            "PAAS_PITR_S3_SECRET_ACCESS_KEY",
        ]
        assert "PAAS_PITR_S3_ACCESS_KEY_ID" in error["message"]


def test_the_tombstone_lives_outside_every_tenant_prefix(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    with api.client(api.token()) as client:
        server = deleted_addon(client, engine)
    key = tombstone_key("acme", "app-1", server)
    assert key == f"_paas-pitr/deleted/acme/app-1/{server}.json"
    assert bucket_of(engine).keys("_paas-pitr/") == [key]


def test_an_addon_named_like_another_addons_folder_never_reads_it(
    api: RunningApi, engine: InMemoryEngine
) -> None:
    """An addon id equal to another addon's archive folder is its own addon: it neither
    lists nor restores that folder (nor skips the other addon's gaps through it)."""
    with api.client(api.token()) as client:
        make_addon(client, engine)
        server = server_of(engine)
        fill_archive(engine, server)
        alias = client.post(
            "/v1/apps/app-1/addons", json={"plan": "pro", "version": "16", "addon_id": server}
        )
        assert alias.status_code == 201, alias.text
        listed = client.get(f"/v1/apps/app-1/addons/{server}/incarnations")
        assert listed.status_code == 200, listed.text
        assert server not in [i["server_name"] for i in listed.json()["data"]]
        refused = client.post(
            f"/v1/apps/app-1/addons/{server}/restore",
            json={"timestamp": iso(SECOND_END + timedelta(hours=1)), "incarnation": server},
        )
        assert refused.status_code == 404, refused.text


@pytest.mark.parametrize("named", [False, True])
def test_an_identical_retry_after_the_delete_replays_the_restore(
    api: RunningApi, engine: InMemoryEngine, named: bool
) -> None:
    with api.client(api.token()) as client:
        make_addon(client, engine)
        server = server_of(engine)
        fill_archive(engine, server)
        body: dict[str, str] = {"timestamp": iso(NOW - timedelta(hours=2))}
        if named:
            body["incarnation"] = server
        url = f"/v1/apps/app-1/addons/{ADDON}/restore"
        first = client.post(url, json=body, headers={"Idempotency-Key": "retry-1"})
        assert first.status_code == 202, first.text
        assert client.delete(f"/v1/apps/app-1/addons/{ADDON}").status_code == 204
        again = client.post(url, json=body, headers={"Idempotency-Key": "retry-1"})
    assert again.status_code == 202, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["data"]["restore_id"] == first.json()["data"]["restore_id"]
