"""/healthz and /readyz: readiness follows the workers' own heartbeats."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from tests.support import Stack, wait_until


async def _ready(api: httpx.AsyncClient) -> httpx.Response:
    return await api.get("/readyz")


async def test_readyz_turns_503_when_the_worker_stops_and_200_when_one_starts(
    stack: Stack, redis_client: Redis
) -> None:
    async with stack.client(who="nobody") as api:
        await wait_until(lambda: _status_is(api, 200))
        assert (await api.get("/healthz")).status_code == 200
        worker = stack.processes[1]  # the API, then the worker
        stack.stop(worker)
        assert worker.returncode == 0
        assert await redis_client.zcard("gw:workers") == 0  # a clean shutdown removes its beat
        down = await _ready(api)
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["status"] == 503 and "worker" in down.json()["detail"]
        stack.start_worker("worker-again")
        await wait_until(lambda: _status_is(api, 200))
        assert (await _ready(api)).json()["status"] == "ready"


async def test_a_worker_that_dies_without_shutdown_stops_counting_after_the_window(
    stack: Stack, redis_client: Redis
) -> None:
    async with stack.client(who="nobody") as api:
        await wait_until(lambda: _status_is(api, 200))
        worker = stack.processes[1]  # the API, then the worker
        worker.kill()  # SIGKILL: its heartbeat stays behind and ages
        worker.wait()
        assert await redis_client.zcard("gw:workers") == 1
        await wait_until(lambda: _status_is(api, 503), timeout=10)
        assert "no worker has reported in the last 2 s" in (await _ready(api)).json()["detail"]


async def _status_is(api: httpx.AsyncClient, status: int) -> bool:
    return (await _ready(api)).status_code == status
