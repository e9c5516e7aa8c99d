"""The self-healing sweep re-creates lost work: end to end with a running stack, and its
single repairs by calling ``Sweeper.sweep()`` directly against real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from arq.connections import create_pool
from pydantic import SecretStr
from redis.asyncio import Redis

from app.config import Settings
from app.exports.schemas import ExportRequest
from app.exports.sweep import Sweeper
from app.platform.localredis import free_port
from app.platform.queue import ArqJobQueue, redis_settings
from app.wiring.runtime import Runtime, build_runtime
from tests.support import SANDBOX_TOKEN, metric, running_stack, wait_for, wait_until

QUERY = {"filter": "event_type==agreed", "fields": ["event_type"]}


async def test_the_sweep_recreates_a_queued_poll_deleted_by_hand_and_the_export_completes(
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    with running_stack(
        redis_url,
        upstream_url,
        tmp_path,
        GATEWAY_POLL_INITIAL_SECONDS="2",  # the first poll waits in the queue long enough
        GATEWAY_SWEEP_INTERVAL_SECONDS="0.5",
        GATEWAY_SWEEP_GRACE_SECONDS="1",
        GATEWAY_WORKER_METRICS_PORT=str(metrics_port),
    ) as stack:
        async with stack.client() as api:
            created = (await api.post("/v1/exports", json=QUERY)).json()
            record = await redis_client.get(f"gw:export:{created['id']}")
            assert record is not None
            task_id = httpx.Response(200, content=record).json()["task_id"]
            poll_key = f"poll:{task_id}:0"
            await wait_until(lambda: redis_client.exists(f"arq:job:{poll_key}"))
            # Lose the job the way a flushed queue or a lost write would.
            assert await redis_client.delete(f"arq:job:{poll_key}") == 1
            assert await redis_client.zrem("arq:queue", poll_key) == 1

            done = await wait_for(api, created["id"], timeout=30)
        assert done["status"] == "completed", done
        assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 1
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert metric(scraped, "gateway_sweep_repairs_total", kind="rescheduled") == 1
        assert "sweep repaired" in stack.log_text()


async def test_the_sweep_recreates_a_lost_expiry_step_and_the_links_expire(
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    with running_stack(
        redis_url,
        upstream_url,
        tmp_path,
        GATEWAY_LINK_RETENTION_SECONDS="3",
        GATEWAY_EXPIRY_WARNING_SECONDS="0",
        GATEWAY_SWEEP_INTERVAL_SECONDS="0.5",
        GATEWAY_SWEEP_GRACE_SECONDS="1",
        GATEWAY_WORKER_METRICS_PORT=str(metrics_port),
    ) as stack:
        async with stack.client() as api:
            created = (await api.post("/v1/exports", json=QUERY)).json()
            done = await wait_for(api, created["id"], statuses=("completed",))
        raw = await redis_client.get(f"gw:export:{created['id']}")
        assert raw is not None
        task_id = httpx.Response(200, content=raw).json()["task_id"]
        expire_key = f"expire:{task_id}"
        assert await redis_client.delete(f"arq:job:{expire_key}") == 1
        assert await redis_client.zrem("arq:queue", expire_key) == 1

        async def links_gone() -> bool:
            task = await redis_client.get(f"gw:task:{task_id}")
            return task is not None and '"status":"expired"' in task

        await wait_until(links_gone, timeout=30)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert done["links"]
    assert metric(scraped, "gateway_sweep_repairs_total", kind="expiry") == 1


@pytest.fixture
async def runtime(redis_url: str, upstream_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(
        redis_url=redis_url,
        upstream_base_url=upstream_url,
        upstream_token=SecretStr(SANDBOX_TOKEN),
        upstream_max_active_tasks=2,
    )
    queue = ArqJobQueue(await create_pool(redis_settings(settings)))
    built = build_runtime(settings, queue)
    yield built
    await built.close()
    await queue.close()


def _sweeper(runtime: Runtime) -> Sweeper:
    return Sweeper(
        store=runtime.store,
        lifecycle=runtime.lifecycle,
        queue=runtime.lifecycle.queue,
        grace_seconds=0.05,
    )


async def _submitted_task(runtime: Runtime, redis_client: Redis, n: int = 0) -> str:
    export = await runtime.exports.submit("alice", ExportRequest(filter=f"batch=={n}"))
    record = await runtime.store.get_export(export.id)
    assert record is not None
    await asyncio.sleep(0.1)  # older than the sweep's grace
    return record.task_id


async def test_a_queued_task_neither_waiting_nor_active_goes_back_to_waiting(
    runtime: Runtime, redis_client: Redis
) -> None:
    task_id = await _submitted_task(runtime, redis_client)
    assert await redis_client.zrem("gw:upstream:active", task_id) == 1  # lost its slot entry
    report = await _sweeper(runtime).sweep()
    assert report.repairs == {"requeued": 1}
    assert report.dispatched == 1  # and went straight back into a free slot
    assert await redis_client.zscore("gw:upstream:active", task_id) is not None


async def test_a_dispatched_task_whose_start_job_vanished_gets_it_back(
    runtime: Runtime, redis_client: Redis
) -> None:
    task_id = await _submitted_task(runtime, redis_client)
    assert await redis_client.delete(f"arq:job:start:{task_id}") == 1
    assert await redis_client.zrem("arq:queue", f"start:{task_id}") == 1
    report = await _sweeper(runtime).sweep()
    assert report.repairs == {"restarted": 1}
    assert await redis_client.zscore("arq:queue", f"start:{task_id}") is not None
    again = await _sweeper(runtime).sweep()  # nothing left to repair: idempotent
    assert again.repairs == {}


async def test_a_slot_held_by_a_vanished_or_finished_task_is_released_and_reused(
    runtime: Runtime, redis_client: Redis
) -> None:
    first = await _submitted_task(runtime, redis_client, 1)
    second = await _submitted_task(runtime, redis_client, 2)
    third = await _submitted_task(runtime, redis_client, 3)  # waits: two slots only
    assert await redis_client.zscore("gw:upstream:waiting", third) is not None
    await redis_client.delete(f"gw:task:{first}")  # vanished
    raw = await redis_client.get(f"gw:task:{second}")
    assert raw is not None
    await redis_client.set(f"gw:task:{second}", raw.replace('"queued"', '"failed"'))
    report = await _sweeper(runtime).sweep()
    assert report.repairs == {"released": 2, "dropped_index": 2}
    assert report.dispatched == 1
    assert await redis_client.zrange("gw:upstream:active", 0, -1) == [third]
    assert await redis_client.zrange("gw:tasks:open", 0, -1) == [third]


async def test_a_healthy_system_needs_no_repair_from_any_number_of_sweeps_at_once(
    runtime: Runtime, redis_client: Redis
) -> None:
    for n in range(3):
        await _submitted_task(runtime, redis_client, n)
    before = sorted(await redis_client.keys("*"))
    reports = await asyncio.gather(*(_sweeper(runtime).sweep() for _ in range(4)))
    assert all(r.repairs == {} for r in reports)
    assert sorted(await redis_client.keys("*")) == before


async def test_repairs_of_other_modules_join_the_sweep_and_are_counted(
    runtime: Runtime, redis_client: Redis
) -> None:
    seen: list[float] = []

    async def expiry_repair(grace_seconds: float) -> int:
        seen.append(grace_seconds)
        return 2

    async def nothing_to_repair(grace_seconds: float) -> int:
        return 0

    sweeper = Sweeper(
        store=runtime.store,
        lifecycle=runtime.lifecycle,
        queue=runtime.lifecycle.queue,
        grace_seconds=0.05,
        repairs={"expiry": expiry_repair, "deliveries": nothing_to_repair},
    )
    report = await sweeper.sweep()
    assert report.repairs == {"expiry": 2}
    assert seen == [0.05]
