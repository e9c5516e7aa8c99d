"""The console in a real browser (the system's headless Chromium, driven by Selenium): sign in,
watch an export go from queued to completed without reloading, redeliver a webhook and see the
new attempt, cancel, filter; a client's key never shows another client's export.

Where Chromium is missing these tests fail with one line saying how to install it.
Screenshots (1280x800) of each page are written to ``$CONSOLE_SCREENSHOTS`` when it is set
(``CONSOLE_SCREENSHOTS=docs/console`` refreshes the README's pictures), else to a temporary
folder; either way each is checked to be a 1280x800 PNG.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.console.support import ADMIN_KEY, chromium
from tests.support import KEYS, Stack, running_stack
from tests.webhooks.receiver import Answer, Receiver

SHARED_STACK_ENV = {
    "GATEWAY_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
    "GATEWAY_CONSOLE_SIGNIN_PER_MINUTE": "1000",
}
WAIT_SECONDS = 40  # generous: the machine is shared


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def screenshot(driver: WebDriver, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1280, 800)


def wait_until(driver: WebDriver, check: Callable[[WebDriver], Any]) -> Any:
    # An element read while htmx swaps its fragment goes stale: read it again next time.
    stale = [StaleElementReferenceException]
    return WebDriverWait(driver, WAIT_SECONDS, 0.2, ignored_exceptions=stale).until(check)


def sign_in(driver: WebDriver, api_url: str, key: str) -> None:
    driver.get(f"{api_url}/console/sign-in")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "signin").click()
    wait_until(driver, lambda d: d.current_url.endswith("/console/exports"))


def row_status(driver: WebDriver, export_id: str) -> str | None:
    # Read in one script: htmx may swap the table between two WebDriver calls.
    status: str | None = driver.execute_script(
        "const row = document.getElementById(arguments[0]);return row ? row.dataset.status : null;",
        f"row-{export_id}",
    )
    return status


def mark_page(driver: WebDriver) -> None:
    """A marker that a reload would wipe out: its survival proves the page was not reloaded."""
    driver.execute_script("window.__notReloaded = true;")


def not_reloaded(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.__notReloaded === true;"))


async def submit(stack: Stack, who: str, **body: Any) -> str:
    async with stack.client(who) as api:
        response = await api.post("/v1/exports", json=body)
        assert response.status_code == 202, response.text
        export_id: str = response.json()["id"]
        return export_id


@pytest.fixture
def stack_without_workers(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> Iterator[Stack]:
    """API only: exports stay queued until the test starts a worker."""
    with running_stack(redis_url, upstream_url, tmp_path, workers=0) as gateway:
        yield gateway


async def test_sign_in_and_watch_an_export_go_from_queued_to_completed_without_reloading(
    stack_without_workers: Stack, sandbox: httpx.Client, browser: WebDriver, shots: Path
) -> None:
    stack = stack_without_workers
    sandbox.post("/_sandbox/config", json={"task_seconds": 4}).raise_for_status()
    export_id = await submit(stack, "alice", filter="event_type==agreed", site_id=92001)
    sign_in(browser, stack.api_url, KEYS["alice"])
    assert browser.find_element(By.ID, "who").text == "alice"
    assert row_status(browser, export_id) == "queued"
    mark_page(browser)
    stack.start_worker()
    seen = set()

    def progressed(driver: WebDriver) -> bool:
        status = row_status(driver, export_id)
        seen.add(status)
        return status == "completed"

    wait_until(browser, progressed)
    assert not_reloaded(browser)
    assert "running" in seen  # it went through running on the way, shown as it happened
    # Nothing shown is unfinished any more: the table stops asking for itself.
    assert browser.find_element(By.ID, "exports").get_attribute("data-refreshing") == "false"


async def test_redelivering_a_webhook_shows_the_new_attempt(
    shared_stack: Stack,
    sandbox: httpx.Client,
    receiver: Receiver,
    browser: WebDriver,
    shots: Path,
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 0.5}).raise_for_status()
    path = "/console-redeliver"
    receiver.script(path, Answer(200, '{"received": true}'))
    export_id = await submit(
        shared_stack,
        "alice",
        filter="event_type==agreed",
        site_id=92002,
        callback_url=f"http://127.0.0.1:{receiver.port}{path}",
        metadata={"ticket": "OPS-12", "team": "billing"},
    )
    deadline = time.monotonic() + WAIT_SECONDS
    while len(receiver.requests(path)) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    sign_in(browser, shared_stack.api_url, KEYS["alice"])
    browser.get(f"{shared_stack.api_url}/console/exports/{export_id}")

    def attempts(driver: WebDriver) -> list[str]:
        outcomes: list[str] = driver.execute_script(
            "return Array.from(document.querySelectorAll('#timeline tr[data-attempt]'),"
            " row => row.dataset.outcome);"
        )
        return outcomes

    wait_until(browser, lambda d: attempts(d) == ["delivered"])
    browser.find_element(By.ID, "redeliver").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "notice"))
    wait_until(browser, lambda d: attempts(d) == ["delivered", "delivered"])
    assert len(receiver.requests(path)) == 2
    snippet = browser.find_elements(By.CSS_SELECTOR, "#timeline tr[data-attempt] td.snippet")
    assert '{"received": true}' in snippet[-1].text
    screenshot(browser, shots, "export")


async def test_cancel_from_the_export_page(
    shared_stack: Stack, sandbox: httpx.Client, browser: WebDriver
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 600}).raise_for_status()
    export_id = await submit(shared_stack, "alice", filter="event_type==agreed", site_id=92003)
    sign_in(browser, shared_stack.api_url, KEYS["alice"])
    browser.get(f"{shared_stack.api_url}/console/exports/{export_id}")
    wait_until(browser, lambda d: d.find_element(By.ID, "export-status").text == "running")

    # The panel refreshes itself meanwhile: click whichever Cancel button is there now.
    def click_cancel(driver: WebDriver) -> bool:
        driver.find_element(By.ID, "cancel").click()
        return True

    wait_until(browser, click_cancel)
    wait_until(browser, lambda d: d.find_element(By.ID, "export-status").text == "canceled")
    assert browser.find_element(By.ID, "notice").text == "Canceled."
    assert browser.find_element(By.ID, "cancel").get_attribute("disabled") is not None
    async with shared_stack.client("alice") as api:
        assert (await api.get(f"/v1/exports/{export_id}")).json()["status"] == "canceled"


async def test_an_admin_filters_by_status_and_client(
    shared_stack: Stack, sandbox: httpx.Client, browser: WebDriver, shots: Path
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 600}).raise_for_status()
    bobs = await submit(shared_stack, "bob", filter="event_type==agreed", site_id=92004)
    alices = await submit(shared_stack, "alice", filter="event_type==agreed", site_id=92004)
    canceled = await submit(shared_stack, "bob", filter="event_type==viewed", site_id=92004)
    async with shared_stack.client("bob") as api:
        assert (await api.delete(f"/v1/exports/{canceled}")).status_code == 200
    sign_in(browser, shared_stack.api_url, ADMIN_KEY)
    for export_id in (bobs, alices, canceled):
        assert row_status(browser, export_id) is not None
    screenshot(browser, shots, "exports")
    Select(browser.find_element(By.ID, "filter-client")).select_by_value("bob")
    browser.find_element(By.ID, "apply-filters").click()
    wait_until(browser, lambda d: "client=bob" in d.current_url)
    assert row_status(browser, alices) is None
    assert row_status(browser, bobs) is not None and row_status(browser, canceled) == "canceled"
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("canceled")
    browser.find_element(By.ID, "apply-filters").click()
    wait_until(browser, lambda d: "status=canceled" in d.current_url)
    assert row_status(browser, canceled) == "canceled"
    assert row_status(browser, bobs) is None and row_status(browser, alices) is None
    clients = {c.text for c in browser.find_elements(By.CSS_SELECTOR, "#exports td.client")}
    assert clients == {"bob"}


async def test_a_clients_key_never_shows_another_clients_export_in_the_browser(
    shared_stack: Stack, sandbox: httpx.Client, browser: WebDriver, shots: Path
) -> None:
    bobs = await submit(shared_stack, "bob", filter="event_type==agreed", site_id=92005)
    alices = await submit(shared_stack, "alice", filter="event_type==agreed", site_id=92005)
    browser.get(f"{shared_stack.api_url}/console/sign-in")
    screenshot(browser, shots, "sign-in")
    sign_in(browser, shared_stack.api_url, KEYS["alice"])
    browser.get(f"{shared_stack.api_url}/console/exports?client=bob")
    assert row_status(browser, alices) is not None
    assert row_status(browser, bobs) is None
    assert not browser.find_elements(By.ID, "filter-client")  # a client has no client filter
    assert bobs not in browser.page_source
    browser.get(f"{shared_stack.api_url}/console/exports/{bobs}")
    assert browser.find_element(By.ID, "problem").text == f"no export {bobs!r}"
    assert not browser.find_elements(By.ID, "export")


async def test_pausing_a_feed_from_its_page(
    shared_stack: Stack, browser: WebDriver, shots: Path
) -> None:
    async with shared_stack.client("alice") as api:
        created = await api.post(
            "/v1/feeds",
            json={"filter": "event_type==agreed", "schedule": "0 2 * * *", "site_id": 92006},
        )
        assert created.status_code == 201, created.text
        feed_id = created.json()["id"]
        sign_in(browser, shared_stack.api_url, ADMIN_KEY)
        browser.get(f"{shared_stack.api_url}/console/feeds")
        row = browser.find_element(By.ID, f"feed-{feed_id}")
        assert row.get_attribute("data-paused") == "false"
        screenshot(browser, shots, "feeds")
        row.find_element(By.CSS_SELECTOR, "td.actions form:first-child button").click()
        wait_until(
            browser,
            lambda d: (
                d.find_element(By.ID, f"feed-{feed_id}").get_attribute("data-paused") == "true"
            ),
        )
        assert (await api.get(f"/v1/feeds/{feed_id}")).json()["paused"] is True
