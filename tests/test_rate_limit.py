"""Per-client rate limit on POST /v1/exports (GATEWAY_CLIENT_RATE_LIMIT_PER_MINUTE)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from redis.asyncio import Redis

from app.platform import keys
from tests.support import Stack, running_stack


async def test_over_the_per_client_limit_is_429_with_retry_after(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, redis_client: Redis, tmp_path: Path
) -> None:
    with running_stack(
        redis_url, upstream_url, tmp_path, workers=0, GATEWAY_CLIENT_RATE_LIMIT_PER_MINUTE="3"
    ) as stack:
        async with stack.client("alice") as alice, stack.client("bob") as bob:
            allowed = await asyncio.gather(*(alice.post("/v1/exports", json={}) for _ in range(3)))
            refused = await alice.post("/v1/exports", json={})
            other_client = await bob.post("/v1/exports", json={})
            reading = await alice.get("/v1/exports")
    assert [r.status_code for r in allowed] == [202, 202, 202]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status"] == 429 and problem["title"] and problem["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert other_client.status_code == 202  # per client
    assert reading.status_code == 200  # only submissions are limited
    assert await redis_client.zcard(keys.client_exports("alice")) == 3  # nothing queued for it
    # a refused request does not count: the window holds the three accepted ones
    assert await redis_client.zcard(keys.client_rate_window("alice")) == 3


async def test_the_rate_limit_is_off_by_default(stack: Stack, redis_client: Redis) -> None:
    async with stack.client() as api:
        answers = await asyncio.gather(*(api.post("/v1/exports", json={}) for _ in range(40)))
    assert {r.status_code for r in answers} == {202}
    assert await redis_client.exists(keys.client_rate_window("alice")) == 0
