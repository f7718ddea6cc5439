"""Headless Chromium (the OS package, through its chromedriver) for tests of what a person
sees in the dashboard; screenshots go to ``artifacts/`` at the repository root (kept by CI)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# Without the networking switches Chromium waits on services it cannot reach here.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1400",
)

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs the chromium and chromium-driver packages",
)


def headless_chromium() -> Iterator[WebDriver]:
    """A fresh headless Chromium (own profile), quit afterwards: ``yield from`` it in a
    test module's fixture."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    profile = tempfile.mkdtemp(prefix="paas-pitr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(check: Callable[[], T | None], what: str, timeout: float = 20) -> T:
    """Poll ``check`` until it returns something truthy; an element replaced or not there
    yet (``WebDriverException``) counts as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except WebDriverException as exc:
            last = exc
        else:
            if found:
                return found
            last = found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def clicked(driver: WebDriver, addon: str, selector: str) -> bool:
    """Click ``selector`` in the addon's card (the timeline is redrawn at each refresh: an
    element found just before may be gone, and the caller tries again)."""
    card(driver, addon).find_element(By.CSS_SELECTOR, selector).click()
    return True


def card(driver: WebDriver, addon: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'article.addon[data-addon="{addon}"]')


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))


def open_app(driver: WebDriver, url: str, token: str, app: str) -> None:
    """Open the dashboard by a shared link: the token and the app in the fragment."""
    driver.get(f"{url}/dashboard#token={token}&app={app}")
