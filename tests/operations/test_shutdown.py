"""Graceful shutdown: SIGTERM on a worker lets its running job finish and loses nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import Stack, running_stack, wait_for, wait_until

QUERY = {"filter": "event_type==agreed", "fields": ["event_type"]}


async def test_sigterm_during_a_poll_loop_loses_nothing_and_creates_no_second_task(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, redis_client: Redis, tmp_path: Path
) -> None:
    # Every upstream answer takes 1.5 s, so a SIGTERM lands while a poll is in flight.
    sandbox.post(
        "/_sandbox/config", json={"task_seconds": 6, "slow_rate": 1.0, "slow_seconds": 1.5}
    ).raise_for_status()
    with running_stack(redis_url, upstream_url, tmp_path) as stack:
        (first_worker,) = stack.processes[1:]
        async with stack.client() as api:
            created = (await api.post("/v1/exports", json=QUERY)).json()

            async def polling_now() -> bool:
                return bool(await redis_client.keys("arq:in-progress:poll:*"))

            await wait_until(polling_now, timeout=20, interval=0.05)
            first_worker.send_signal(signal.SIGTERM)
            first_worker.wait(timeout=30)
            assert first_worker.returncode == 0
            log = (tmp_path / "worker-0.log").read_text()
            assert "0 ongoing to cancel" in log  # the running poll finished, none was cut
            assert await redis_client.keys("arq:in-progress:*") == []

            stack.start_worker("worker-1")
            done = await wait_for(api, created["id"], timeout=40)
    assert done["status"] == "completed", done
    assert done["polls"] >= 2
    stats = sandbox.get("/_sandbox/stats").json()
    assert stats["tasks_created"] == 1


async def test_sigterm_on_the_api_finishes_the_request_in_flight_then_exits(
    stack: Stack, sandbox: httpx.Client
) -> None:
    # GET /v1/activity asks upstream while the caller waits; upstream takes 2 s to answer.
    sandbox.post("/_sandbox/config", json={"slow_rate": 1.0, "slow_seconds": 2}).raise_for_status()
    api_process = stack.processes[0]
    async with stack.client() as api:
        in_flight = asyncio.create_task(api.get("/v1/activity", params={"per_page": 5}))
        await wait_until(
            lambda: sandbox.get("/_sandbox/stats").json()["faults_injected"].get("slow")
        )
        api_process.send_signal(signal.SIGTERM)
        answered = await in_flight
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["data"]) == 5
    # uvicorn finishes gracefully, then re-raises the signal so supervisors see why it ended.
    assert api_process.wait(timeout=20) in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in stack.log_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.api_url}/healthz")
