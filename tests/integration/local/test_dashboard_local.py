"""The dashboard in headless Chromium against the real local engine: a pro addon's window on
the timeline, a restore picked on it and followed to ready, its connection string masked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from paas_pitr.timestamps import format_api_time, parse_timestamp
from tests.integration.browser import (
    card,
    clicked,
    headless_chromium,
    needs_chromium,
    open_app,
    screenshot,
    until,
)
from tests.integration.local.conftest import LocalApi

pytestmark = needs_chromium


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    yield from headless_chromium()


def test_a_restore_picked_on_the_timeline_becomes_ready(
    local_api: LocalApi, browser: WebDriver
) -> None:
    addon = local_api.create_addon("pro")["addon_id"]
    window = local_api.wait_current_range("app-1", addon)["window"]
    open_app(browser, local_api.running.url, local_api.running.token(), "app-1")
    until(lambda: card(browser, addon).find_elements(By.CSS_SELECTOR, "rect.range"), "the range")
    until(lambda: clicked(browser, addon, "rect.range"), "a click on the range")
    target = card(browser, addon).find_element(By.CSS_SELECTOR, "input.target")
    picked = until(lambda: target.get_attribute("value"), "the picked instant")
    # Inside the range the page was drawn with (the window only grows).
    assert parse_timestamp(window["earliest"]) <= parse_timestamp(picked)
    card(browser, addon).find_element(By.CSS_SELECTOR, "form.restore button[type=submit]").click()

    def phase() -> str:
        return str(card(browser, addon).find_element(By.CSS_SELECTOR, "td.phase").text)

    until(lambda: phase() == "ready", "the restore to be ready", timeout=180)
    (restore,) = local_api.client.get(f"/v1/apps/app-1/addons/{addon}/restores").json()["data"]
    assert restore["status"] == "ready"
    assert restore["timestamp"] == format_api_time(parse_timestamp(picked))
    shown = card(browser, addon).find_element(By.CSS_SELECTOR, "tr.restore-row code").text
    password = restore["connection"]["password"]
    assert password not in shown and "••••••••" in shown
    screenshot(browser, "dashboard-local-engine.png")
