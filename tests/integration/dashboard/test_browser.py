"""The dashboard in a real headless Chromium (the OS package, driven through its
chromedriver) against the real HTTP server: the timeline, a restore started from the page
and its progress, failures with their hint, empty states, shared links. Screenshots go to
``artifacts/`` at the repository root (kept by CI)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.settings import Settings
from paas_pitr.timestamps import format_api_time
from tests.integration.browser import (
    card,
    clicked,
    headless_chromium,
    needs_chromium,
    open_app,
    screenshot,
    until,
)
from tests.integration.conftest import RunningApi
from tests.integration.operator_play import create_addon, fail_restore
from tests.integration.real_wal import RealWal

pytestmark = needs_chromium


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    yield from headless_chromium()


@pytest.fixture
def engine() -> InMemoryEngine:
    return InMemoryEngine(mode="in-tree")


@pytest.fixture
def settings(workdir: Path) -> Settings:
    # The real WAL's DELETE touches 500 rows: listed from 100 on.
    return Settings(
        state_dir=workdir / f"state-{uuid.uuid4().hex[:8]}",
        cnpg_mode="in-tree",
        events_row_threshold=100,
    )


def test_timeline_restore_and_its_progress(
    api: RunningApi, engine: InMemoryEngine, browser: WebDriver
) -> None:
    now = datetime.now(UTC)
    with api.client(api.token("acme")) as client:
        pro = create_addon(
            client,
            engine,
            app="shop",
            plan="pro",
            backups_ending=[now - timedelta(hours=30), now - timedelta(hours=6)],
            archived_at=now - timedelta(seconds=20),
            failed_backups=1,
        )
        standard = create_addon(
            client,
            engine,
            app="shop",
            plan="standard",
            addon_id="db-acme-shop-reports",
            backups_ending=[now - timedelta(hours=26), now - timedelta(hours=2)],
            archived_at=now - timedelta(seconds=20),
        )
        window = client.get(f"/v1/apps/shop/addons/{pro}/backups").json()["data"]["window"]
        points = client.get(f"/v1/apps/shop/addons/{standard}/backups").json()["data"]["window"][
            "restore_points"
        ]

    open_app(browser, api.url, api.token("acme"), "shop")
    # The shared link's fragment (the token) leaves the address bar at once.
    until(lambda: "#" not in browser.current_url, "the fragment to be cleared")
    until(lambda: card(browser, pro), "the pro addon's card")
    pro_card = card(browser, pro)
    (bar,) = until(
        lambda: pro_card.find_elements(By.CSS_SELECTOR, "svg.timeline rect.range"), "the range"
    )
    (current,) = window["ranges"]
    title = bar.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert title == f"restorable: {current['earliest']} .. {current['latest']}"
    marks = pro_card.find_elements(By.CSS_SELECTOR, "svg.timeline path.backup")
    assert len(marks) == 3  # two completed, one failed
    assert (
        len(pro_card.find_elements(By.CSS_SELECTOR, "svg.timeline path.backup.status-failed")) == 1
    )
    # The failed backup's error and its hint are both shown.
    backups_text = pro_card.find_element(By.CSS_SELECTOR, "table.backups").text
    assert "can't upload: AccessDenied" in backups_text
    assert "Hint: " in backups_text

    # A half-typed instant survives the refreshes.
    target = pro_card.find_element(By.CSS_SELECTOR, "input.target")
    target.send_keys("2026-0")
    time.sleep(6)
    assert (
        card(browser, pro).find_element(By.CSS_SELECTOR, "input.target").get_attribute("value")
        == "2026-0"
    )
    feedback = pro_card.find_element(By.CSS_SELECTOR, ".target-feedback")
    assert feedback.text == "Not an instant: type UTC as 2026-05-04T15:30:00.123456Z"

    # A click on the range picks the instant under the pointer, with microseconds, in UTC.
    target.clear()
    # The timeline is redrawn at each refresh: find the bar again until a click lands.
    until(
        lambda: clicked(browser, pro, "rect.range"),
        "a click on the range",
    )
    picked = until(lambda: target.get_attribute("value"), "the picked instant")
    assert len(picked) == len("2026-05-04T15:30:00.123456Z") and picked.endswith("Z")
    assert current["earliest"] <= picked <= current["latest"]
    assert feedback.text.startswith("Restorable (range ")

    pro_card.find_element(By.CSS_SELECTOR, "form.restore button[type=submit]").click()

    def started() -> str | None:
        text = str(browser.find_element(By.ID, "message").text)
        return text if text.startswith("Restore ") else None

    message = until(started, "the restore to start")
    assert "triggered: new cluster" in message
    with api.client(api.token("acme")) as client:
        (restore,) = client.get(f"/v1/apps/shop/addons/{pro}/restores").json()["data"]
    assert restore["timestamp"] == picked

    def phase() -> str:
        return str(card(browser, pro).find_element(By.CSS_SELECTOR, "tr.restore-row td.phase").text)

    until(
        lambda: phase().startswith("restore triggered: waiting for the new cluster to start ("),
        "the first phase",
    )
    engine.set_status("Cluster", restore["cluster_name"], {"phase": "Setting up primary"})
    until(
        lambda: phase().startswith("recovering: restoring the base backup and replaying WAL ("),
        "the recovering phase with its elapsed time",
    )
    assert phase().endswith("s)")
    restore_marks = card(browser, pro).find_elements(By.CSS_SELECTOR, "svg.timeline path.restore")
    assert len(restore_marks) == 1
    screenshot(browser, "dashboard-restore-recovering.png")

    fail_restore(
        engine,
        restore["cluster_name"],
        "recovery ended before configured recovery target was reached",
    )
    until(lambda: phase() == "failed", "the failure")
    detail = card(browser, pro).find_element(By.CSS_SELECTOR, "tr.detail").text
    assert "Failed: recovery ended before configured recovery target was reached" in detail
    with api.client(api.token("acme")) as client:
        failed = client.get(f"/v1/apps/shop/addons/{pro}/restores/{restore['restore_id']}").json()[
            "data"
        ]
    assert f"Hint: {failed['hint']}" in detail

    # The standard addon picks a base backup: from the list, or by clicking its mark.
    standard_card = card(browser, standard)
    select = Select(standard_card.find_element(By.CSS_SELECTOR, "select.points"))
    assert [o.get_attribute("value") for o in select.options] == ["", *(p["at"] for p in points)]
    assert not standard_card.find_element(By.CSS_SELECTOR, "input.target").is_displayed()
    marks = standard_card.find_elements(By.CSS_SELECTOR, "svg.timeline circle.point")
    assert len(marks) == 2
    oldest = f'circle.point[data-backup="{points[-1]["backup_id"]}"]'
    until(
        lambda: clicked(browser, standard, oldest),
        "a click on the oldest backup",
    )
    assert select.first_selected_option.get_attribute("value") == points[-1]["at"]
    screenshot(browser, "dashboard.png")


def test_empty_states_and_errors_with_their_hint(
    api: RunningApi, engine: InMemoryEngine, browser: WebDriver
) -> None:
    browser.get(f"{api.url}/dashboard")
    empty = until(lambda: browser.find_element(By.ID, "empty").is_displayed(), "the empty state")
    assert empty
    assert "No token yet" in browser.find_element(By.ID, "empty").text
    assert "paas-pitr token create --tenant NAME" in browser.find_element(By.ID, "empty").text

    open_app(browser, api.url, api.token("acme"), "nothing-here")
    until(
        lambda: "App nothing-here has no addons" in browser.find_element(By.ID, "empty").text,
        "no addons",
    )
    assert (
        "paas-pitr addons create --app nothing-here --plan pro --wait"
        in browser.find_element(By.ID, "empty").text
    )

    # An error the API answers, its code and message in the status line.
    browser.find_element(By.ID, "archived-addon").send_keys("db-acme-gone")
    browser.find_element(By.CSS_SELECTOR, "#archives button").click()
    message = until(lambda: browser.find_element(By.ID, "message").text, "the error")
    assert message.startswith("not_found: ")
    screenshot(browser, "dashboard-empty.png")


def test_an_addon_with_a_drill_shows_its_mark_and_its_last_drill(
    api: RunningApi, engine: InMemoryEngine, browser: WebDriver
) -> None:
    # The timeline draws a drill as an SVG mark of class "drill", before the card's own
    # "Last restore drill" line in the page: a lookup by class found the mark and broke the
    # card ("Cannot set property className of SVGElement").
    now = datetime.now(UTC)
    reason = "recovery ended before configured recovery target was reached"
    with api.client(api.token("acme")) as client:
        pro = create_addon(
            client,
            engine,
            app="shop",
            plan="pro",
            backups_ending=[now - timedelta(hours=6)],
            archived_at=now - timedelta(seconds=20),
        )
        drills = f"/v1/apps/shop/addons/{pro}/drills"
        drill = client.post(drills).json()["data"]
        # The drill creates its cluster in the background.
        until(lambda: ("Cluster", drill["cluster_name"]) in engine.objects, "the drill cluster")
        fail_restore(engine, drill["cluster_name"], reason)

        def finished() -> dict[str, object] | None:
            record: dict[str, object] = client.get(f"{drills}/{drill['drill_id']}").json()["data"]
            return record if record["status"] == "failed" else None

        record = until(finished, "the drill to fail")

    open_app(browser, api.url, api.token("acme"), "shop")
    until(lambda: card(browser, pro), "the pro addon's card")
    (mark,) = until(
        lambda: card(browser, pro).find_elements(By.CSS_SELECTOR, "svg.timeline path.drill"),
        "the drill's mark",
    )
    assert mark.get_attribute("class") == "drill status-failed"
    line = card(browser, pro).find_element(By.CSS_SELECTOR, "p.drill")
    assert line.text == (
        f"Last restore drill: failed at {record['finished_at']} (failed at recovery)"
    )
    assert line.get_attribute("class") == "drill status-failed"
    assert browser.find_element(By.ID, "message").text == ""

    # The event finder takes the same typed UTC instant as the restore form.
    events = browser.find_element(By.ID, "events-form")
    start = events.find_element(By.NAME, "from")
    assert start.get_attribute("type") == "text"
    assert start.get_attribute("placeholder") == "2026-05-04T15:30:00.123456Z"
    events.find_element(By.NAME, "addon").send_keys(pro)
    start.send_keys("04/05/2026 15:30")
    events.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert until(lambda: browser.find_element(By.ID, "events-status").text, "the refusal") == (
        "from: not an instant: type UTC as 2026-05-04T15:30:00.123456Z"
    )
    screenshot(browser, "dashboard-drill.png")


def relations(event: dict[str, Any]) -> str:
    """How the page names an event's relations: the first three (by file node when the
    catalog has no name: the in-memory engine's primary knows none), and how many more."""
    names = [r["name"] or r["file_node"] for r in event["relations"]]
    return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")


def test_events_found_in_the_window_are_marked_and_one_click_restores_before_one(
    api: RunningApi, engine: InMemoryEngine, browser: WebDriver, real_wal: RealWal
) -> None:
    now = datetime.now(UTC)
    with api.client(api.token("acme")) as client:
        pro = create_addon(
            client,
            engine,
            app="shop",
            plan="pro",
            version="15",  # the real WAL's: pg_waldump reads only its own version
            backups_ending=[now - timedelta(hours=6)],
            archived_at=now,
        )
        server = engine.objects[("Cluster", pro)]["metadata"]["annotations"][
            "paas-pitr.io/server-name"
        ]
        real_wal.store(engine.bucket, "s3://paas-pg-backups/acme/shop", server)
        listed = client.get(
            f"/v1/apps/shop/addons/{pro}/events",
            params={"from": format_api_time(now - timedelta(hours=6)), "to": format_api_time(now)},
        )
        assert listed.status_code == 200, listed.text
        events = {e["kind"]: e for e in listed.json()["data"]["items"]}
    assert list(events) == ["drop", "truncate", "delete"]

    open_app(browser, api.url, api.token("acme"), "shop")
    until(lambda: card(browser, pro).find_elements(By.CSS_SELECTOR, "rect.range"), "the range")
    assert not card(browser, pro).find_elements(By.CSS_SELECTOR, '[data-role="event-mark"]')
    until(lambda: clicked(browser, pro, '[data-role="find-events"]'), "a click on Find events")

    def marks() -> list[WebElement]:
        return card(browser, pro).find_elements(
            By.CSS_SELECTOR, 'svg.timeline path[data-role="event-mark"]'
        )

    # The scan runs pg_waldump over the real WAL: seconds alone, more on a loaded machine.
    until(lambda: len(marks()) == 3, "the three events on the timeline", timeout=90)
    assert [m.get_attribute("data-kind") for m in marks()] == ["drop", "truncate", "delete"]
    assert [m.get_attribute("data-event") for m in marks()] == [e["id"] for e in events.values()]
    # A distinct shape and colour per kind.
    assert [m.get_attribute("class") for m in marks()] == [
        "event event-drop",
        "event event-truncate",
        "event event-delete",
    ]
    assert [m.value_of_css_property("fill") for m in marks()] == [
        "rgb(179, 38, 30)",
        "rgb(217, 115, 13)",
        "rgb(194, 24, 91)",
    ]
    # The same drop, truncate and delete as the API lists, one line each.
    delete = events["delete"]
    title = marks()[2].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert title == (
        f"delete {relations(delete)}, 500 rows, transaction {delete['xid']}, committed "
        f"{delete['committed_at']}: click to restore to just before it"
    )
    status = card(browser, pro).find_element(By.CSS_SELECTOR, '[data-role="events-status"]')
    assert status.text.startswith("Scanned 6 WAL segments (96 MiB) in ")
    assert status.text.endswith(
        ": 3 event(s) on the timeline, click one to restore to just before it"
    )
    # The progress bar followed the scan to its end, then went away.
    bar = card(browser, pro).find_element(By.CSS_SELECTOR, '[data-role="events-progress"]')
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("6", "6")
    assert not bar.is_displayed()

    # A click asks first: declined, nothing is restored.
    drop = f'path[data-event="{events["drop"]["id"]}"]'
    until(lambda: clicked(browser, pro, drop), "a click on the drop")
    alert = until(lambda: browser.switch_to.alert, "the confirmation")
    assert alert.text.startswith(
        f"Restore {pro} into a new cluster as it was just before this drop ("
    )
    alert.dismiss()
    time.sleep(1)
    with api.client(api.token("acme")) as client:
        assert client.get(f"/v1/apps/shop/addons/{pro}/restores").json()["data"] == []

    # Confirmed: a restore to just before the TRUNCATE's transaction.
    truncate = events["truncate"]
    until(
        lambda: clicked(browser, pro, f'path[data-event="{truncate["id"]}"]'),
        "a click on the truncate",
    )
    alert = until(lambda: browser.switch_to.alert, "the confirmation")
    assert alert.text == (
        f"Restore {pro} into a new cluster as it was just before this truncate "
        f"({relations(truncate)}, transaction {truncate['xid']}, committed "
        f"{truncate['committed_at']})?"
    )
    alert.accept()
    message = until(
        lambda: (t := browser.find_element(By.ID, "message").text).startswith("Restore ") and t,
        "the restore to start",
    )
    with api.client(api.token("acme")) as client:
        (restore,) = client.get(f"/v1/apps/shop/addons/{pro}/restores").json()["data"]
    assert restore["recovery_target"] == {"kind": "before_event", "value": truncate["id"]}
    assert message == (
        f"Restore {restore['restore_id']} triggered: new cluster {restore['cluster_name']}, "
        f"everything committed before transaction {truncate['xid']}, nothing of it"
    )
    recovery = engine.objects[("Cluster", restore["cluster_name"])]["spec"]["bootstrap"]["recovery"]
    assert recovery["recoveryTarget"]["targetXID"] == str(truncate["xid"])
    assert recovery["recoveryTarget"]["exclusive"] is True
    # The marks stay on the timeline across refreshes, with the restore's own mark.
    until(
        lambda: card(browser, pro).find_elements(By.CSS_SELECTOR, "svg.timeline path.restore"),
        "the restore's mark",
    )
    assert len(marks()) == 3
    # The restores table says the target excludes the mistake's commit.
    target_cell = until(
        lambda: card(browser, pro).find_elements(By.CSS_SELECTOR, "tr.restore-row td.instant"),
        "the restore's row",
    )[0]
    instant = restore["restores_to"] or restore["timestamp"]
    assert target_cell.text == f"before event {truncate['id']} (committed {instant}, excluded)"
    screenshot(browser, "dashboard-events.png")

    # The "Destructive events" section's scan is drawn on the addon's timeline too: here the
    # drops only; its rows ask before restoring as the marks do.
    section = browser.find_element(By.ID, "events-form")
    section.find_element(By.NAME, "addon").send_keys(pro)
    section.find_element(By.NAME, "from").send_keys(format_api_time(now - timedelta(hours=6)))
    Select(section.find_element(By.NAME, "kind")).select_by_visible_text("drop")
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(lambda: len(marks()) == 1, "only the drop on the timeline")
    assert marks()[0].get_attribute("data-event") == events["drop"]["id"]
    assert browser.find_element(By.ID, "events-status").text.startswith("Scanned 6 WAL segments")
    browser.find_element(By.CSS_SELECTOR, "#events tbody button").click()
    alert = until(lambda: browser.switch_to.alert, "the confirmation")
    assert alert.text.startswith(
        f"Restore {pro} into a new cluster as it was just before this drop ("
    )
    alert.dismiss()
    time.sleep(1)
    with api.client(api.token("acme")) as client:
        assert len(client.get(f"/v1/apps/shop/addons/{pro}/restores").json()["data"]) == 1
