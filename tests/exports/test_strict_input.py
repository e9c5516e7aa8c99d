"""Strict input on POST /v1/exports: every refusal is a problem naming the member at fault,
and nothing is stored or queued for it. One API process (no worker) on a private Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.platform.localredis import LocalRedis
from tests.support import KEYS, ServerThread, Stack, running_stack

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("strict-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(
    private_redis: LocalRedis,
    sandbox_server: ServerThread,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("strict-logs")
    upstream = f"{sandbox_server.url}/v1.1"
    with running_stack(private_redis.url, upstream, logs, workers=0) as stack:
        yield stack


@pytest.fixture
async def store(private_redis: LocalRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis.url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


def _problem(response: httpx.Response, status: int, members: list[str]) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://") and problem["title"] and problem["detail"]
    assert [e["member"] for e in problem["errors"]] == members
    return problem


async def _nothing_stored(store: Redis) -> None:
    assert await store.keys("gw:*") == []
    assert await store.keys("arq:job:*") == []


async def test_unknown_members_are_422_naming_each(api: Stack, store: Redis) -> None:
    async with api.client() as client:
        response = await client.post("/v1/exports", json={"filtre": "a==1", "site": 3})
    _problem(response, 422, ["filtre", "site"])
    await _nothing_stored(store)


async def test_metadata_is_an_object_of_at_most_4_kib(api: Stack, store: Redis) -> None:
    big = {"note": "x" * 4096}
    async with api.client() as client:
        too_big = await client.post("/v1/exports", json={"metadata": big})
        not_object = await client.post("/v1/exports", json={"metadata": ["a"]})
        await _nothing_stored(store)
        fits = await client.post("/v1/exports", json={"metadata": {"note": "x" * 4000}})
    _problem(too_big, 422, ["metadata"])
    _problem(not_object, 422, ["metadata"])
    assert fits.status_code == 202


async def test_a_body_over_64_kib_is_413_by_its_content_length(api: Stack, store: Redis) -> None:
    body = json.dumps({"filter": "a==1", "pad": " " * LIMIT}).encode()
    async with api.client() as client:
        response = await client.post(
            "/v1/exports", content=body, headers={"Content-Type": "application/json"}
        )
    _problem(response, 413, ["body"])
    await _nothing_stored(store)


async def test_a_streamed_body_over_64_kib_is_413_without_reading_it_all(
    api: Stack, store: Redis
) -> None:
    # A chunked body with no Content-Length: 80 KiB of a body that never ends. The answer
    # comes although the body is unfinished, so it was never parsed whole.
    port = int(api.api_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/exports HTTP/1.1\r\nHost: gateway\r\n"
        + f"Authorization: Bearer {KEYS['alice']}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(b'16\r\n{"metadata": {"pad": "\r\n')
    for _ in range(5):
        writer.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=20)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"content-type: application/problem+json" in head.lower()
    assert [e["member"] for e in json.loads(body)["errors"]] == ["body"]
    await _nothing_stored(store)


async def test_a_body_of_exactly_64_kib_is_accepted(api: Stack, store: Redis) -> None:
    body = b"{}".ljust(LIMIT, b" ")
    async with api.client() as client:
        response = await client.post(
            "/v1/exports", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 202, response.text


async def test_a_body_that_is_not_json_content_is_415(api: Stack, store: Redis) -> None:
    async with api.client() as client:
        plain = await client.post(
            "/v1/exports", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        form = await client.post("/v1/exports", data={"filter": "a==1"})
        missing = await client.post("/v1/exports", content=b"{}")
        problem_json = await client.post(
            "/v1/exports", content=b"{}", headers={"Content-Type": "application/merge+json"}
        )
    for response in (plain, form, missing):
        _problem(response, 415, ["Content-Type"])
    assert problem_json.status_code == 202


async def test_invalid_json_is_400(api: Stack, store: Redis) -> None:
    async with api.client() as client:
        response = await client.post(
            "/v1/exports", content=b'{"filter": ', headers={"Content-Type": "application/json"}
        )
    problem = _problem(response, 400, ["body"])
    assert problem["errors"][0]["pointer"] == ""
    await _nothing_stored(store)


async def test_a_body_that_is_not_utf8_text_is_400(api: Stack, store: Redis) -> None:
    async with api.client() as client:
        response = await client.post(
            "/v1/exports",
            content=b'{"filter": "\xff"}',
            headers={"Content-Type": "application/json"},
        )
    assert int(response.headers["content-length"]) == len(response.content)
    _problem(response, 400, ["body"])
    await _nothing_stored(store)


async def test_an_empty_body_is_422_naming_the_body(api: Stack, store: Redis) -> None:
    async with api.client() as client:
        response = await client.post(
            "/v1/exports", content=b"", headers={"Content-Type": "application/json"}
        )
    problem = _problem(response, 422, ["body"])
    assert problem["errors"][0]["detail"] == "a JSON object is required"
    await _nothing_stored(store)


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
async def test_json_that_is_not_an_object_is_422(api: Stack, store: Redis, body: bytes) -> None:
    async with api.client() as client:
        response = await client.post(
            "/v1/exports", content=body, headers={"Content-Type": "application/json"}
        )
    _problem(response, 422, ["body"])
    await _nothing_stored(store)


async def test_ids_that_cannot_exist_are_404_without_a_redis_command(
    api: Stack, private_redis: LocalRedis
) -> None:
    impossible = ["nope", "exp_short", "exp_" + "A" * 23, "exp_AAAAAAAAAAAAAAAAAAAAA%21", "x" * 300]
    monitor = Redis.from_url(private_redis.url, decode_responses=True)
    before = await monitor.info("commandstats")
    async with api.client() as client:
        answers = [
            await send(f"/v1/exports/{export_id}")
            for export_id in impossible
            for send in (client.get, client.delete)
        ]
    after = await monitor.info("commandstats")
    await monitor.aclose()
    for response in answers:
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    calls = {
        name: stats["calls"] - before.get(name, {"calls": 0})["calls"]
        for name, stats in after.items()
    }
    assert {name: n for name, n in calls.items() if n} == {"cmdstat_info": 1}
