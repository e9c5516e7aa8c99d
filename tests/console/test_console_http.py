"""The console's promises that plain HTTP can check: forms need their CSRF token, sessions
expire, sign-in is rate-limited per address, a client's key shows only that client, an admin
key shows every client, and every value shown is escaped."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from markupsafe import escape

from app.console.service import PAGE_SIZE
from app.platform import keys
from app.platform.localredis import LocalRedis
from tests.console.support import ADMIN_KEY, console_client, csrf_token, sign_in
from tests.support import KEYS, ServerThread, Stack, running_stack, wait_until
from tests.webhooks.receiver import Answer, Receiver

SHARED_STACK_ENV = {
    "GATEWAY_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
    "GATEWAY_CONSOLE_SIGNIN_PER_MINUTE": "1000",
}
HOSTILE = '<script>document.title="owned"</script><img src=x onerror=alert(1)>'


async def _submit(stack: Stack, who: str, **body: object) -> str:
    async with stack.client(who) as api:
        response = await api.post("/v1/exports", json={"filter": "event_type==agreed", **body})
        assert response.status_code == 202, response.text
        export_id: str = response.json()["id"]
        return export_id


async def test_signing_in_with_a_client_key_sets_an_httponly_strict_session_cookie(
    shared_stack: Stack,
) -> None:
    async with console_client(shared_stack.api_url) as browser:
        response = await sign_in(browser, KEYS["alice"])
        assert response.status_code == 303
        assert response.headers["location"] == "/console/exports"
        cookie = response.headers["set-cookie"].lower()
        assert "gw_console=" in cookie
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        assert KEYS["alice"].lower() not in cookie  # the key itself is never in the cookie
        page = await browser.get("/console/exports")
        assert page.status_code == 200
        assert 'id="who">alice<' in page.text


async def test_a_wrong_key_is_refused_and_pages_need_a_session(shared_stack: Stack) -> None:
    async with console_client(shared_stack.api_url) as browser:
        assert (await sign_in(browser, "not-a-key")).status_code == 401
        page = await browser.get("/console/exports")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in"
        fragment = await browser.get("/console/exports/rows", headers={"HX-Request": "true"})
        assert fragment.headers["hx-redirect"] == "/console/sign-in"


async def test_signing_out_ends_the_session_for_good(shared_stack: Stack) -> None:
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, KEYS["alice"])
        cookie = browser.cookies["gw_console"]
        token = csrf_token((await browser.get("/console/exports")).text)
        signed_out = await browser.post("/console/sign-out", data={"csrf_token": token})
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/console/sign-in"
    async with console_client(shared_stack.api_url) as replay:  # the old cookie, replayed
        replay.cookies.set("gw_console", cookie, path="/console")
        assert (await replay.get("/console/exports")).status_code == 303


async def test_a_cursor_the_console_did_not_issue_shows_the_first_page_and_why(
    shared_stack: Stack,
) -> None:
    export_id = await _submit(shared_stack, "alice", site_id=91008)
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, KEYS["alice"])
        page = await browser.get("/console/exports", params={"cursor": "bm90LWEtY3Vyc29y"})
        assert page.status_code == 422
        assert "is not a cursor this API issued" in page.text
        assert export_id in page.text


async def test_a_form_post_without_its_csrf_token_is_refused_and_changes_nothing(
    shared_stack: Stack,
) -> None:
    export_id = await _submit(shared_stack, "alice", site_id=91001)
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, KEYS["alice"])
        for data in ({}, {"csrf_token": "forged"}):
            refused = await browser.post(f"/console/exports/{export_id}/cancel", data=data)
            assert refused.status_code == 403
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["errors"][0]["member"] == "csrf_token"
        assert (await browser.post("/console/sign-out", data={})).status_code == 403
        # the sign-in form's own token is needed too
        tokenless = await browser.post("/console/sign-in", data={"key": KEYS["alice"]})
        assert tokenless.status_code == 403
    async with shared_stack.client("alice") as api:
        assert (await api.get(f"/v1/exports/{export_id}")).json()["status"] != "canceled"


async def test_a_token_of_another_session_does_not_pass(shared_stack: Stack) -> None:
    export_id = await _submit(shared_stack, "alice", site_id=91002)
    async with (
        console_client(shared_stack.api_url) as first,
        console_client(shared_stack.api_url) as second,
    ):
        await sign_in(first, KEYS["alice"])
        await sign_in(second, KEYS["alice"])
        token = csrf_token((await first.get(f"/console/exports/{export_id}")).text)
        refused = await second.post(
            f"/console/exports/{export_id}/cancel", data={"csrf_token": token}
        )
        assert refused.status_code == 403
        accepted = await first.post(
            f"/console/exports/{export_id}/cancel", data={"csrf_token": token}
        )
        assert accepted.status_code == 303


async def test_a_clients_key_never_shows_another_clients_export(shared_stack: Stack) -> None:
    bobs = await _submit(shared_stack, "bob", site_id=91003, metadata={"owner": "bob-secret"})
    alices = await _submit(shared_stack, "alice", site_id=91003)
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, KEYS["alice"])
        for path in ("/console/exports", "/console/exports?client=bob", "/console/exports/rows"):
            page = await browser.get(path)
            assert alices in page.text
            assert bobs not in page.text and "bob-secret" not in page.text
        assert (await browser.get(f"/console/exports/{bobs}")).status_code == 404
        assert (await browser.get(f"/console/exports/{bobs}/panel")).status_code == 404
        token = csrf_token((await browser.get("/console/exports")).text)
        for action in ("cancel", "redeliver", "rerun"):
            answer = await browser.post(
                f"/console/exports/{bobs}/{action}", data={"csrf_token": token}
            )
            assert answer.status_code == 404
    async with shared_stack.client("bob") as api:
        assert (await api.get(f"/v1/exports/{bobs}")).json()["status"] != "canceled"


async def test_an_admin_key_shows_every_clients_exports_with_the_client_column(
    shared_stack: Stack,
) -> None:
    bobs = await _submit(shared_stack, "bob", site_id=91004)
    alices = await _submit(shared_stack, "alice", site_id=91004)
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, ADMIN_KEY)
        page = (await browser.get("/console/exports")).text
        assert bobs in page and alices in page
        assert "<th>Client</th>" in page
        only_bob = (await browser.get("/console/exports?client=bob")).text
        assert bobs in only_bob and alices not in only_bob
        detail = await browser.get(f"/console/exports/{bobs}")
        assert detail.status_code == 200 and 'id="export-client">bob<' in detail.text
        token = csrf_token(detail.text)
        canceled = await browser.post(f"/console/exports/{bobs}/cancel", data={"csrf_token": token})
        assert canceled.status_code == 303
    async with shared_stack.client("bob") as api:
        assert (await api.get(f"/v1/exports/{bobs}")).json()["status"] == "canceled"


async def test_pages_follow_the_apis_cursor_without_repeats_or_gaps(shared_stack: Stack) -> None:
    ids = {await _submit(shared_stack, "bob", site_id=91007) for _ in range(PAGE_SIZE + 3)}
    seen: list[str] = []
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, ADMIN_KEY)
        url: str | None = "/console/exports"  # every client: the all-clients index
        pages = 0
        while url is not None and pages < 10:
            page = (await browser.get(url)).text
            seen += re.findall(r'<tr id="row-(exp_[A-Za-z0-9_-]+)"', page)
            more = re.search(r'<a href="([^"]+)" id="next-page"', page)
            url = html.unescape(more.group(1)) if more else None
            pages += 1
    assert len(seen) == len(set(seen))  # no repeats
    assert ids <= set(seen)  # no gaps
    assert pages >= 2


async def test_hostile_metadata_filter_and_query_are_shown_escaped(shared_stack: Stack) -> None:
    export_id = await _submit(shared_stack, "alice", site_id=91005, metadata={"note": HOSTILE})
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, KEYS["alice"])
        for path in ("/console/exports", f"/console/exports/{export_id}"):
            page = (await browser.get(path)).text
            assert HOSTILE not in page
            shown = json.dumps({"note": HOSTILE}, ensure_ascii=False)
            assert str(escape(shown)) in page  # the text itself, escaped
            assert "<script>document" not in page and "<img src=x" not in page
        bad = await browser.get("/console/exports", params={"status": HOSTILE})
        assert bad.status_code == 422
        assert HOSTILE not in bad.text and "<img src=x" not in bad.text
        assert "Content-Security-Policy" in bad.headers
        assert "script-src" not in bad.headers["Content-Security-Policy"]  # default-src 'self'


async def test_the_health_strip_shows_workers_slots_queue_and_webhook_give_ups(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 0.2}).raise_for_status()
    receiver = Receiver().start()
    try:
        receiver.script("/gone", Answer(410, "no such hook"))
        async with console_client(shared_stack.api_url) as browser:
            await sign_in(browser, ADMIN_KEY)
            before = _health((await browser.get("/console/health")).text)
            export_id = await _submit(
                shared_stack,
                "alice",
                site_id=91006,
                callback_url=f"http://127.0.0.1:{receiver.port}/gone",
            )
            async with shared_stack.client("alice") as api:

                async def gave_up() -> bool:
                    answer = await api.get(f"/v1/exports/{export_id}/deliveries")
                    return any(a["outcome"] == "gave_up" for a in answer.json()["data"])

                await wait_until(gave_up, timeout=30)
            after = _health((await browser.get("/console/health")).text)
            page = (await browser.get("/console/exports")).text
    finally:
        receiver.stop()
    assert after["giveups"] == before["giveups"] + 1
    assert after["workers"] == 1
    assert after["upstream"] == "0 / 50"  # the suite's GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS
    assert after["queue"].isdigit()
    assert 'id="health-giveups"' in page  # every page carries the strip


def _health(fragment: str) -> dict[str, Any]:
    found = dict(re.findall(r'id="health-(\w+)">([^<]*)<', fragment))
    found["giveups"] = int(found["giveups"])
    found["workers"] = int(found["workers"])
    return found


STRICT_DB = 14  # a database of its own for the module (the per-test ones are reused)


@pytest.fixture(scope="module")
def strict_stack(
    redis_server: LocalRedis, sandbox_server: ServerThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack whose console sessions last 3 s and which allows 3 sign-ins a minute."""
    with redis.Redis(port=redis_server.port, db=STRICT_DB) as control:
        control.flushdb()
    with running_stack(
        f"redis://127.0.0.1:{redis_server.port}/{STRICT_DB}",
        f"{sandbox_server.url}/v1.1",
        Path(tmp_path_factory.mktemp("strict-console")),
        gateway_console_session_seconds="3",
        gateway_console_signin_per_minute="3",
    ) as stack:
        yield stack


async def test_the_session_expires_after_the_configured_seconds(strict_stack: Stack) -> None:
    async with console_client(strict_stack.api_url) as browser:
        assert (await sign_in(browser, KEYS["alice"])).status_code == 303
        assert (await browser.get("/console/exports")).status_code == 200
        await asyncio.sleep(4)
        expired = await browser.get("/console/exports")
        assert expired.status_code == 303
        assert expired.headers["location"] == "/console/sign-in"


async def test_sign_in_attempts_are_rate_limited_per_client_address(
    strict_stack: Stack, redis_server: LocalRedis
) -> None:
    with redis.Redis(port=redis_server.port, db=STRICT_DB) as control:
        control.delete(keys.console_signin_window("127.0.0.1"))  # earlier tests' sign-ins
    async with console_client(strict_stack.api_url) as browser:
        answers = [(await sign_in(browser, "wrong-key")).status_code for _ in range(3)]
        assert answers == [401, 401, 401]
        limited = await sign_in(browser, KEYS["alice"])  # even the right key, for now
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "Too many sign-in attempts" in limited.text
        assert "gw_console=" not in limited.headers.get("set-cookie", "")


async def _create_feed(stack: Stack, who: str, start_from: str | None = None) -> str:
    body = {"filter": "event_type==agreed", "schedule": "0 2 * * *"}
    if start_from is not None:
        body["start_from"] = start_from
    async with stack.client(who) as api:
        response = await api.post("/v1/feeds", json=body)
        assert response.status_code == 201, response.text
        feed_id: str = response.json()["id"]
        return feed_id


async def test_the_feeds_page_shows_a_clients_own_feeds_and_an_admin_every_clients(
    shared_stack: Stack,
) -> None:
    alices, bobs = (
        await _create_feed(shared_stack, "alice"),
        await _create_feed(shared_stack, "bob"),
    )
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, KEYS["alice"])
        page = (await browser.get("/console/feeds")).text
        assert f'id="feed-{alices}"' in page and bobs not in page
        assert 'class="client"' not in page
        forbidden = await browser.post(
            f"/console/feeds/{bobs}/pause", data={"csrf_token": csrf_token(page)}
        )
        assert forbidden.status_code == 404  # another client's feed, as on the API
    async with console_client(shared_stack.api_url) as browser:
        await sign_in(browser, ADMIN_KEY)
        page = (await browser.get("/console/feeds")).text
        assert f'id="feed-{alices}"' in page and f'id="feed-{bobs}"' in page
        assert '<td class="client">bob</td>' in page
        only_bob = (await browser.get("/console/feeds", params={"client": "bob"})).text
        assert f'id="feed-{bobs}"' in only_bob and alices not in only_bob


async def test_pause_resume_and_run_now_act_through_the_feeds_service_with_csrf(
    shared_stack: Stack,
) -> None:
    # a window to run now: from a day ago (a new feed's own window starts at its creation)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    feed_id = await _create_feed(shared_stack, "alice", yesterday.strftime("%Y-%m-%dT%H:%M:%SZ"))
    async with shared_stack.client("alice") as api, console_client(shared_stack.api_url) as browser:
        await sign_in(browser, ADMIN_KEY)  # an admin acts as the feed's own client
        token = csrf_token((await browser.get("/console/feeds")).text)
        refused = await browser.post(f"/console/feeds/{feed_id}/pause", data={})
        assert refused.status_code == 403
        assert (await api.get(f"/v1/feeds/{feed_id}")).json()["paused"] is False

        paused = await browser.post(f"/console/feeds/{feed_id}/pause", data={"csrf_token": token})
        assert paused.status_code == 303
        assert (await api.get(f"/v1/feeds/{feed_id}")).json()["paused"] is True
        page = (await browser.get("/console/feeds")).text
        assert re.search(rf'id="feed-{feed_id}" data-paused="true"', page)

        resumed = await browser.post(f"/console/feeds/{feed_id}/resume", data={"csrf_token": token})
        assert resumed.status_code == 303
        assert (await api.get(f"/v1/feeds/{feed_id}")).json()["paused"] is False

        ran = await browser.post(f"/console/feeds/{feed_id}/run", data={"csrf_token": token})
        assert ran.status_code == 303
        runs = (await api.get(f"/v1/feeds/{feed_id}/runs")).json()["data"]
        assert len(runs) == 1 and runs[0]["feed_id"] == feed_id
