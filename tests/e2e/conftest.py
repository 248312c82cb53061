"""The browser for page tests: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium, and the sites it visits. Screenshots go under var/test-artifacts/."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LateApp, serving

ARTIFACTS = Path(__file__).parents[2] / "var" / "test-artifacts"


def _browser_or_skip() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "chromium/chromedriver not installed (make test installs them as root)"
    if os.environ.get("CI") or os.environ.get("FUNNEL_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[object]:
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="funnel-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _site() -> Iterator[tuple[LateApp, str]]:
    """A server for a site, listening before the site is built (intake must name the site's
    origin first); yields it and its origin, on "localhost": not intake's host."""
    late = LateApp()
    with serving(late) as url:
        yield late, url.replace("127.0.0.1", "localhost")


@pytest.fixture
def shop_site() -> Iterator[tuple[LateApp, str]]:
    """The shop, whose origin intake allows (``open_site`` puts the shop's app on it)."""
    yield from _site()


@pytest.fixture
def other_site() -> Iterator[tuple[LateApp, str]]:
    """Another site, whose origin intake does not allow."""
    yield from _site()
