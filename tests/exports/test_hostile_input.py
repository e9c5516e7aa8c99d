"""A client with one valid key affects nobody else: what it sends is refused (4xx problem,
nothing queued) or is stored so that it can be read, listed, coalesced with and delivered;
a record that cannot be read is skipped, never a stop for other clients' webhooks.

The real stack: API and worker processes, the sandbox upstream over HTTP, a real webhook
receiver."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from app.platform.localredis import LocalRedis
from tests.support import KEYS, Stack, wait_for, wait_until
from tests.webhooks.receiver import Answer, Receiver


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(shared_stack: Stack) -> Stack:
    """The module's stack (``SHARED_STACK_ENV``), on a freshly flushed database."""
    return shared_stack


@pytest.fixture
async def store(redis_server: LocalRedis) -> Any:
    client = AsyncRedis(port=redis_server.port, db=0, decode_responses=True)
    yield client
    await client.aclose()


def unique_filter() -> str:
    return f"batch=={uuid.uuid4().hex[:8]}"


async def deliveries(api: httpx.AsyncClient, export_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/exports/{export_id}/deliveries")
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def assert_problem(response: httpx.Response, status: int, member: str | None = None) -> None:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("x-request-id")
    if member is not None:
        members = [e["member"] for e in response.json().get("errors") or []]
        assert member in members, response.json()


async def test_metadata_deeper_than_5_levels_is_refused_and_a_follower_gets_its_webhook(
    gateway: Stack, receiver: Receiver, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 2}).raise_for_status()
    query = unique_filter()
    async with gateway.client("alice") as alice, gateway.client("bob") as bob:
        deep = await alice.post("/v1/exports", json={"filter": query, "metadata": nested(220)})
        assert_problem(deep, 422, "metadata")
        five = await alice.post("/v1/exports", json={"filter": query, "metadata": nested(5)})
        assert five.status_code == 202, five.text
        hook = f"http://127.0.0.1:{receiver.port}/deep-follower"
        follower = await bob.post("/v1/exports", json={"filter": query, "callback_url": hook})
        assert follower.status_code == 202 and follower.json()["coalesced"] is True
        done = await wait_for(bob, follower.json()["id"])
        assert done["status"] == "completed"
        await wait_until(lambda: receiver.requests("/deep-follower"), timeout=15)
        assert (await alice.get(f"/v1/exports/{five.json()['id']}")).json()["metadata"] == nested(5)
        listed = await alice.get("/v1/exports")
        assert listed.status_code == 200


async def test_a_follower_whose_record_cannot_be_read_never_stops_another_followers_webhook(
    gateway: Stack, receiver: Receiver, sandbox: httpx.Client, store: AsyncRedis
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 3}).raise_for_status()
    query = unique_filter()
    first_hook = f"http://127.0.0.1:{receiver.port}/unreadable-first"
    second_hook = f"http://127.0.0.1:{receiver.port}/unreadable-second"
    async with gateway.client("alice") as alice, gateway.client("bob") as bob:
        first = await alice.post("/v1/exports", json={"filter": query, "callback_url": first_hook})
        second = await bob.post("/v1/exports", json={"filter": query, "callback_url": second_hook})
        assert first.status_code == second.status_code == 202
        first_id, second_id = first.json()["id"], second.json()["id"]
        # The first record as an older version (or damage) left it: nested past what the
        # record parser reads back.
        raw = json.loads(await store.get(f"gw:export:{first_id}"))
        raw["metadata"] = nested(220)
        await store.set(f"gw:export:{first_id}", json.dumps(raw))

        done = await wait_for(bob, second_id, timeout=30)
        assert done["status"] == "completed"
        await wait_until(lambda: receiver.requests("/unreadable-second"), timeout=15)
        assert [d["outcome"] for d in await deliveries(bob, second_id)] == ["delivered"]
        assert (await bob.post(f"/v1/exports/{second_id}/redeliver")).status_code == 202
        # The unreadable record's owner still lists its other exports, and its own read is a
        # problem with a request id, not a bare 500.
        listed = await alice.get("/v1/exports")
        assert listed.status_code == 200
        assert first_id not in [e["id"] for e in listed.json()["data"]]
        assert_problem(await alice.get(f"/v1/exports/{first_id}"), 500)
    assert receiver.requests("/unreadable-first") == []


@pytest.mark.parametrize(
    ("body", "status", "member"),
    [
        ('{"metadata": {"x": "\\ud800"}}', 422, "metadata.x"),
        ('{"metadata": {"\\udfff": 1}}', 422, "metadata"),
        ('{"filter": "a==\\ud800"}', 422, "filter"),
        ("[" * 1000 + "]" * 1000, 400, "body"),
        ("[" * 30_000 + "]" * 30_000, 400, "body"),
        ('{"metadata": ' + '{"a": ' * 300 + "1" + "}" * 300 + "}", 422, "metadata"),
    ],
    ids=["lone-surrogate-value", "lone-surrogate-key", "lone-surrogate-filter", "deep-array",
         "very-deep-array", "deep-metadata"],
)  # fmt: skip
async def test_unparseable_or_invalid_unicode_bodies_are_4xx_problems_with_a_request_id(
    gateway: Stack, body: str, status: int, member: str
) -> None:
    async with gateway.client() as api:
        before = (await api.get("/v1/exports")).json()["data"]
        response = await api.post(
            "/v1/exports", content=body, headers={"Content-Type": "application/json"}
        )
        assert_problem(response, status, member)
        assert (await api.get("/v1/exports")).json()["data"] == before  # nothing queued


@pytest.mark.parametrize("port", [22, 25, 1023])
async def test_a_callback_port_other_than_80_443_or_1024_up_is_refused(
    gateway: Stack, port: int
) -> None:
    async with gateway.client() as api:
        response = await api.post(
            "/v1/exports",
            json={"filter": unique_filter(), "callback_url": f"http://127.0.0.1:{port}/hook"},
        )
    assert_problem(response, 422, "callback_url")
    assert "port" in response.json()["detail"]


async def test_deliveries_show_an_answer_body_only_for_2xx_to_4xx(
    gateway: Stack, receiver: Receiver
) -> None:
    receiver.script("/bodies", Answer(503, "redis_version:7.2.4"), Answer(404, "x" * 5000))
    async with gateway.client() as api:
        created = await api.post(
            "/v1/exports",
            json={
                "filter": unique_filter(),
                "callback_url": f"http://127.0.0.1:{receiver.port}/bodies",
            },
        )

        async def two_attempts() -> bool:
            return len(await deliveries(api, created.json()["id"])) >= 2

        await wait_until(two_attempts, timeout=20)
        attempts = await deliveries(api, created.json()["id"])
    assert [a["status_code"] for a in attempts[:2]] == [503, 404]
    assert attempts[0]["response_body"] is None
    assert attempts[1]["response_body"] == "x" * 2048


async def test_405_names_every_method_the_path_answers(gateway: Stack) -> None:
    async with gateway.client() as api:
        response = await api.put("/v1/exports/exp_AAAAAAAAAAAAAAAAAAAAAA")
    assert_problem(response, 405)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "DELETE"} <= allowed


@pytest.mark.parametrize("ms", [" 12", "1_000", "+5", "١٢"])
async def test_a_listing_cursor_with_anything_but_plain_digits_is_refused(
    gateway: Stack, ms: str
) -> None:
    cursor = base64.urlsafe_b64encode(f"{ms}:exp_AAAAAAAAAAAAAAAAAAAAAA".encode()).decode()
    async with gateway.client() as api:
        response = await api.get("/v1/exports", params={"cursor": cursor.rstrip("=")})
    assert_problem(response, 422, "cursor")


async def test_a_client_that_disconnects_mid_request_is_logged_as_499_not_500(
    gateway: Stack,
) -> None:
    marker = f"/v1/exports?gone={uuid.uuid4().hex}"
    with socket.create_connection(("127.0.0.1", gateway.api_port)) as sock:
        sock.sendall(
            f"POST {marker} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEYS['alice']}\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not lines:
        await asyncio.sleep(0.2)
        lines = [
            json.loads(line)
            for line in gateway.log_text().splitlines()
            if line.startswith("{") and '"request"' in line and "/v1/exports" in line
        ]
        lines = [x for x in lines if x.get("message") == "request" and x.get("method") == "POST"]
        lines = [x for x in lines if x.get("status") in (499, 500)]
    assert lines, "no request line logged"
    assert {line["status"] for line in lines} == {499}
