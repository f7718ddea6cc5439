"""Restorable ranges for real: a plan gap (pro -> free -> pro) and the window opening.

WAL written while the addon was on the free plan was never archived: the window is made of
what can be replayed, an instant of the gap is refused before anything is created, and
instants on both sides of it restore exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from paas_pitr.timestamps import format_api_time
from tests.integration.local.conftest import LocalApi, wait_for
from tests.integration.local.test_pitr import instant_between_commits, snapshot, write_initial_data


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
