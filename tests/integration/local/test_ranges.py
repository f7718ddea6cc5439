"""Restorable ranges for real: a plan gap (pro -> free -> pro) and the window opening.

WAL written while the addon was on the free plan was never archived: the window is made of
what can be replayed, an instant of the gap is refused before anything is created, and
instants on both sides of it restore exactly.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import psycopg

from paas_pitr.bucket import destination_prefix
from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import (
    instant_between_commits,
    server_name,
    snapshot,
    write_initial_data,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _insert(uri: str, first: int, last: int, note: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orders SELECT g, 1, 0, %s FROM generate_series(%s::int, %s::int) g",
            (note, first, last),
        )


def test_a_plan_gap_is_cut_out_of_the_window(local_api: LocalApi) -> None:
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    url = f"/v1/apps/app-1/addons/{addon_id}"
    local_api.wait_backups_completed("app-1", addon_id)
    local_api.wait_current_range("app-1", addon_id)
    write_initial_data(uri)
    before_gap = instant_between_commits()
    expected_before = snapshot(uri)
    local_api.wait_restorable("app-1", addon_id, format_api_time(before_gap))

    assert local_api.client.patch(url, json={"plan": "free"}).status_code == 200
    _insert(uri, 3001, 3100, "written on the free plan")
    in_the_gap = instant_between_commits()

    assert local_api.client.patch(url, json={"plan": "pro"}).status_code == 200
    # The first base backup since archiving came back opens the current range.
    local_api.wait_backups_completed("app-1", addon_id, count=2)
    local_api.wait_current_range("app-1", addon_id)
    _insert(uri, 4001, 4100, "written after the gap")
    after_gap = instant_between_commits()
    expected_after = snapshot(uri)
    listing = local_api.wait_restorable("app-1", addon_id, format_api_time(after_gap))

    window = listing["window"]
    assert [r["current"] for r in window["ranges"]] == [False, True]
    first, current = window["ranges"]
    assert at(first["earliest"]) <= before_gap <= at(first["latest"])
    assert at(first["latest"]) < in_the_gap < at(current["earliest"])
    assert "switched off" in first["ended_because"]
    assert window["earliest"] == current["earliest"]

    clusters_before = {c["metadata"]["name"] for c in local_api.engine.objects.list("Cluster")}
    refused = local_api.restore("app-1", addon_id, format_api_time(in_the_gap))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "outside_recoverability_window"
    assert {c["metadata"]["name"] for c in local_api.engine.objects.list("Cluster")} == (
        clusters_before
    )

    for target, expected in ((before_gap, expected_before), (after_gap, expected_after)):
        restore = local_api.restore_when_restorable("app-1", addon_id, format_api_time(target))
        assert snapshot(restore["connection"]["uri"]) == expected


def test_the_window_says_when_it_opens(local_api: LocalApi) -> None:
    """Right after the first backup, before WAL past its end is archived, the window is
    'opening' with an expected time, never an earliest later than its latest."""
    created = local_api.client.post("/v1/apps/app-1/addons", json={"plan": "pro"})
    assert created.status_code == 201, created.text
    addon_id = created.json()["data"]["addon_id"]
    seen: set[str] = set()

    def opened() -> bool:
        window = local_api.backups("app-1", addon_id)["window"]
        seen.add(window["state"])
        if window["state"] == "opening":
            assert window["opens_at"] is not None and window["ranges"] == []
            assert window["message"] and "expected by" in window["message"]
        if window["state"] != "open":
            return False
        (only,) = window["ranges"]
        assert at(only["earliest"]) <= at(only["latest"])
        return True

    wait_for(opened, interval=0.1, what="the window to open")
    assert "open" in seen
    assert seen <= {"waiting_for_backup", "opening", "open"}
    assert (
        format_api_time(datetime.now(UTC))
        > local_api.backups("app-1", addon_id)["window"]["earliest"]
    )


def test_a_target_at_a_backups_recorded_end_on_a_busy_database(local_api: LocalApi) -> None:
    """Barman reads a backup's end time a moment before the end-of-backup record; on a busy
    database commits land in between. A target at that recorded end must be served by an
    earlier backup (or refused), never by this one, which is not consistent yet there."""
    addon = local_api.create_addon("pro")
    addon_id, uri = addon["addon_id"], addon["connection"]["uri"]
    local_api.wait_backups_completed("app-1", addon_id)
    bucket = local_api.engine.archive_bucket()
    assert bucket is not None
    prefix = destination_prefix("s3://paas-pg-backups/acme/app-1", bucket.name)
    server = server_name(local_api, addon_id)
    (first,) = asyncio.run(bucket.base_backups(prefix, server))
    first_end = first.end_time
    assert first_end is not None
    # The next backup must end after the first one is surely consistent (its end plus the
    # margin), so that an earlier backup can serve its end: a base backup takes well under
    # a second here, and a target before the first is consistent is refused instead.
    wait_for(
        lambda: datetime.now(UTC) > first_end + timedelta(seconds=3),
        interval=0.2,
        what="the first backup to be consistent",
    )
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE busy (id bigserial PRIMARY KEY)")
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(uri, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO busy DEFAULT VALUES")

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        made = local_api.client.post(f"/v1/apps/app-1/addons/{addon_id}/backups")
        assert made.status_code == 202, made.text
        local_api.wait_backups_completed("app-1", addon_id, count=2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    catalog = asyncio.run(bucket.base_backups(prefix, server))
    newest = max(catalog, key=lambda b: b.end_time or datetime.min.replace(tzinfo=UTC))
    assert newest.end_time is not None
    target = format_api_time(newest.end_time)
    local_api.wait_restorable("app-1", addon_id, target)
    response = local_api.restore("app-1", addon_id, target)
    assert response.status_code == 202, response.text
    assert response.json()["data"]["backup_id"] != newest.backup_id
    restore = local_api.wait_restore("app-1", addon_id, response.json()["data"]["restore_id"])
    assert restore["status"] == "ready", restore
    # It holds what the busy writers had committed by the target.
    with psycopg.connect(restore["connection"]["uri"]) as conn:
        row = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM busy").fetchone()
    assert row is not None and row[0] > 0
