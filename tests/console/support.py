"""Console test helpers: a signed-in HTTP client (the forms as a browser posts them), and the
system's Chromium driven by Selenium (no browser download: Debian's chromium-driver)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.support import needs_system_tool

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = (
    "the console's browser tests need Debian's Chromium: run .ci/install-system-tools "
    "(as root: apt-get install -y chromium chromium-driver)"
)
ADMIN_KEY = "ops-admin-key-0123456789"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Sign ``client`` in as a browser would: the form, its token, then the post."""
    form = await client.get("/console/sign-in")
    return await client.post(
        "/console/sign-in", data={"key": key, "csrf_token": csrf_token(form.text)}
    )


def console_client(api_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_url, timeout=10, follow_redirects=False)


def browser_available() -> None:
    """One line saying how to install the browser when it is missing (a failure in CI)."""
    needs_system_tool(CHROMIUM.exists() and CHROMEDRIVER.exists(), INSTALL_HINT)


@contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[WebDriver]:
    """A headless Chromium (the system's), with a fresh profile, closed afterwards."""
    browser_available()
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # The page's own viewport at exactly width x height (a window's size includes its frame).
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
