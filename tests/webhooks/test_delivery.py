"""Webhooks end to end: the API and an arq worker as processes, the sandbox upstream, and a real
receiver (an HTTP server in the test) on loopback. No traffic leaves the machine: every callback
names a loopback address, or an address the gateway refuses before connecting.

The tests of this module share one gateway (API + worker, its own Redis database) to keep the
suite fast; each test uses its own receiver path and its own query."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.platform.localredis import LocalRedis, free_port
from app.webhooks.delivery import NO_HTTP_ANSWER
from tests.support import ServerThread, Stack, running_stack, wait_for
from tests.webhooks.receiver import Answer, Receiver

ALICE_SECRET = "whsec_" + "YWxpY2Utd2ViaG9vay1zZWNyZXQtZm9yLXRlc3RzLTAx"
BOB_SECRET = "whsec_" + "Ym9iLXdlYmhvb2stc2VjcmV0LWZvci10ZXN0cy0wMDAx"
SHARED_DB = 0  # the per-test databases are 1..15 (tests/conftest.py)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    redis_server: LocalRedis,
    sandbox_server: ServerThread,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    client = redis.Redis(port=redis_server.port, db=SHARED_DB)
    client.flushdb()
    client.close()
    with running_stack(
        f"redis://127.0.0.1:{redis_server.port}/{SHARED_DB}",
        f"{sandbox_server.url}/v1.1",
        tmp_path_factory.mktemp("webhooks"),
        GATEWAY_WEBHOOK_SECRETS=f"alice:{ALICE_SECRET},bob:{BOB_SECRET}",
        GATEWAY_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32,::1/128,169.254.0.0/16",
    ) as stack:
        yield stack


@pytest.fixture
def path() -> str:
    return f"/hooks/{uuid.uuid4().hex}"


def export_request(callback_url: str | None, **more: Any) -> dict[str, Any]:
    """A query of its own (no coalescing with other tests' exports)."""
    body: dict[str, Any] = {
        "filter": f"event_type==agreed and batch=={uuid.uuid4().hex[:8]}",
        "site_id": 5193,
        "metadata": {"ticket": "OPS-12"},
        **more,
    }
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


async def submit(api: httpx.AsyncClient, callback_url: str | None, **more: Any) -> dict[str, Any]:
    response = await api.post("/v1/exports", json=export_request(callback_url, **more))
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        await asyncio.sleep(0.1)


async def deliveries(api: httpx.AsyncClient, export_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/exports/{export_id}/deliveries")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def settled(api: httpx.AsyncClient, export_id: str) -> dict[str, Any]:
    """The deliveries once every event is delivered or given up."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal found
        found = await deliveries(api, export_id)
        events = found["events"]
        return bool(events) and all(e["state"] != "pending" for e in events)

    await eventually(done)
    return found


async def test_webhook_verifies_with_the_clients_own_secret_and_not_with_another_clients(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    url = f"http://127.0.0.1:{receiver.port}{path}"
    async with gateway.client("alice") as alice, gateway.client("bob") as bob:
        mine = await submit(alice, f"{url}?who=alice")
        theirs = await submit(bob, f"{url}?who=bob")
        shown = await wait_for(alice, mine["id"])
        await eventually(lambda: _count(receiver, path, 2))
    by_export = {json.loads(r.body)["data"]["id"]: r for r in receiver.requests(path)}
    for export_id, own, other in (
        (mine["id"], ALICE_SECRET, BOB_SECRET),
        (theirs["id"], BOB_SECRET, ALICE_SECRET),
    ):
        request = by_export[export_id]
        assert request.headers["content-type"] == "application/json"
        payload = Webhook(own).verify(request.body, request.headers)
        assert payload["type"] == "export.completed"
        assert payload["data"]["metadata"] == {"ticket": "OPS-12"}
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(request.body, request.headers)
    payload = json.loads(by_export[mine["id"]].body)
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == shown  # the export exactly as the API shows it


async def _count(receiver: Receiver, path: str, n: int) -> bool:
    return len(receiver.requests(path)) >= n


async def test_receiver_answering_500_500_200_gets_three_attempts_with_one_webhook_id(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    receiver.script(path, Answer(500, "x" * 5000), Answer(500, "later"), Answer(200, "thanks"))
    async with gateway.client() as api:
        created = await submit(api, f"http://127.0.0.1:{receiver.port}{path}")
        found = await settled(api, created["id"])
    requests = receiver.requests(path)
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    webhook_id = requests[0].headers["webhook-id"]
    attempts = found["data"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "delivered"]
    assert all(a["event_id"] == webhook_id and a["type"] == "export.completed" for a in attempts)
    assert all(a["error"] is None and a["duration_ms"] >= 0 for a in attempts)
    assert [a["at"] for a in attempts] == sorted(a["at"] for a in attempts)
    assert attempts[0]["response_body"] is None  # a 5xx answer's body is not kept
    assert attempts[2]["response_body"] == "thanks"
    assert found["events"] == [
        {
            "id": webhook_id,
            "type": "export.completed",
            "timestamp": json.loads(requests[0].body)["timestamp"],
            "state": "delivered",
            "dead_lettered": False,
            "attempts": 3,
            "next_attempt_at": None,
        }
    ]


async def test_redeliver_sends_the_latest_event_again_with_the_same_webhook_id(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    async with gateway.client() as api:
        created = await submit(api, f"http://127.0.0.1:{receiver.port}{path}")
        await settled(api, created["id"])
        response = await api.post(f"/v1/exports/{created['id']}/redeliver")
        assert response.status_code == 202, response.text
        await eventually(lambda: _count(receiver, path, 2))
        found = await settled(api, created["id"])
    first, again = receiver.requests(path)
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert again.body == first.body
    Webhook(ALICE_SECRET).verify(again.body, again.headers)
    assert response.json()["id"] == first.headers["webhook-id"]
    assert [(a["attempt"], a["outcome"]) for a in found["data"]] == [
        (1, "delivered"),
        (2, "delivered"),
    ]


async def test_redeliver_answers_409_while_the_export_has_no_event(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    async with gateway.client() as api:
        created = await submit(api, None)
        response = await api.post(f"/v1/exports/{created['id']}/redeliver")
        listed = await deliveries(api, created["id"])
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "no webhook event" in response.json()["detail"]
    assert listed == {"data": [], "events": []}


async def test_another_clients_export_answers_404_on_deliveries_and_redeliver(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    async with gateway.client("alice") as alice, gateway.client("bob") as bob:
        created = await submit(alice, f"http://127.0.0.1:{receiver.port}{path}")
        await wait_for(alice, created["id"])
        listing = await bob.get(f"/v1/exports/{created['id']}/deliveries")
        again = await bob.post(f"/v1/exports/{created['id']}/redeliver")
        missing = await alice.get("/v1/exports/exp_AAAAAAAAAAAAAAAAAAAAAA/deliveries")
    assert listing.status_code == again.status_code == missing.status_code == 404
    assert listing.json()["detail"] == missing.json()["detail"].replace(
        "exp_AAAAAAAAAAAAAAAAAAAAAA", created["id"]
    )


async def test_410_stops_retries_after_exactly_one_attempt(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    receiver.script(path, Answer(410, "unsubscribed"))
    async with gateway.client() as api:
        created = await submit(api, f"http://127.0.0.1:{receiver.port}{path}")
        found = await settled(api, created["id"])
        await asyncio.sleep(3)  # longer than the whole retry schedule (0.3 + 0.6 + 1 s, +10 %)
        later = await deliveries(api, created["id"])
    assert len(receiver.requests(path)) == 1
    assert later == found
    [attempt] = found["data"]
    assert (attempt["status_code"], attempt["outcome"]) == (410, "gave_up")
    assert found["events"][0]["state"] == "gave_up"
    assert found["events"][0]["dead_lettered"] is True


async def test_a_redirect_is_a_failure_and_is_never_followed(
    gateway: Stack, receiver: Receiver, path: str
) -> None:
    target = f"{path}/target"
    receiver.script(path, Answer(302, "", {"location": target}))
    async with gateway.client() as api:
        created = await submit(api, f"http://127.0.0.1:{receiver.port}{path}")
        found = await settled(api, created["id"])
    assert receiver.requests(target) == []
    attempts = found["data"]
    assert len(attempts) == len(receiver.requests(path)) == 4  # first try + 3 retries
    assert all(a["status_code"] == 302 for a in attempts)
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "failed", "gave_up"]
    assert "never followed" in attempts[0]["error"]
    assert found["events"][0]["dead_lettered"] is True


async def test_a_receiver_that_is_down_then_up_gets_the_webhook(
    gateway: Stack, tmp_path: Path
) -> None:
    port = free_port()
    late = Receiver(port=port)
    async with gateway.client() as api:
        created = await submit(api, f"http://127.0.0.1:{port}/late")

        async def refused_once() -> bool:
            return len((await deliveries(api, created["id"]))["data"]) >= 1

        await eventually(refused_once)
        late.start()
        try:
            found = await settled(api, created["id"])
        finally:
            late.stop()
    attempts = found["data"]
    assert attempts[0]["status_code"] is None
    assert attempts[0]["error"] == NO_HTTP_ANSWER
    assert attempts[0]["outcome"] == "failed"
    assert attempts[-1]["outcome"] == "delivered"
    assert len(late.requests("/late")) == 1


async def test_a_failed_export_sends_export_failed(
    gateway: Stack, receiver: Receiver, path: str, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_fail_rate": 1.0}).raise_for_status()
    async with gateway.client() as api:
        created = await submit(api, f"http://127.0.0.1:{receiver.port}{path}")
        shown = await wait_for(api, created["id"])
        found = await settled(api, created["id"])
    [request] = receiver.requests(path)
    payload = Webhook(ALICE_SECRET).verify(request.body, request.headers)
    assert shown["status"] == "failed"
    assert payload["type"] == "export.failed"
    assert payload["data"] == shown
    assert payload["data"]["error"]["code"] == "upstream_failed"
    assert found["data"][0]["type"] == "export.failed"


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "[::1]"],
)
async def test_loopback_callbacks_are_delivered_inside_the_allowance(
    gateway: Stack, host: str
) -> None:
    listen = "::1" if host == "[::1]" else "127.0.0.1"
    local = Receiver(host=listen).start()
    try:
        async with gateway.client() as api:
            created = await submit(api, f"http://{host}:{local.port}/hook")
            found = await settled(api, created["id"])
    finally:
        local.stop()
    assert [a["outcome"] for a in found["data"]] == ["delivered"]
    [request] = local.requests("/hook")
    assert request.headers["host"] == f"{host}:{local.port}"
    Webhook(ALICE_SECRET).verify(request.body, request.headers)


async def test_a_metadata_address_is_refused_even_inside_an_allowed_network(
    gateway: Stack,
) -> None:
    async with gateway.client() as api:  # the gateway allows 169.254.0.0/16
        response = await api.post(
            "/v1/exports", json=export_request("http://169.254.169.254/latest/meta-data/")
        )
    assert response.status_code == 422
    [problem] = response.json()["errors"]
    assert problem["member"] == "callback_url"
    assert "cloud metadata" in problem["detail"]


FORBIDDEN = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.0.0.1/hook", "private"),
    ("http://169.254.169.254/hook", "cloud metadata"),
    ("ftp://hooks.example.com/hook", "scheme"),
    ("/relative/hook", "absolute http or https"),
]


async def test_forbidden_callbacks_are_refused_at_submission_without_the_allowance(
    redis_url: str, upstream_url: str, tmp_path: Path, redis_client: Any
) -> None:
    with running_stack(
        redis_url, upstream_url, tmp_path, workers=0, GATEWAY_WEBHOOK_ALLOWED_NETWORKS=""
    ) as stack:
        async with stack.client() as api:
            answers = [
                (url, words, await api.post("/v1/exports", json=export_request(url)))
                for url, words in FORBIDDEN
            ]
    for url, words, response in answers:
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        [problem] = response.json()["errors"]
        assert problem["member"] == "callback_url", url
        assert words in problem["detail"], (url, problem)
    assert await redis_client.keys("gw:export:*") == []
    assert await redis_client.keys("arq:job:*") == []
