"""``app.platform.queue.ArqJobQueue`` and the delivery lane against a real Redis and real arq
workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import Worker
from arq.connections import ArqRedis, create_pool
from arq.jobs import Job
from arq.worker import func

from app.config import Settings
from app.platform import keys
from app.platform.queue import ArqJobQueue, redis_settings
from tests.support import wait_until
from worker.lane import DeliveryLane


async def test_an_urgent_job_runs_before_every_job_that_fell_due_before_it(redis_url: str) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url)
    pool = await create_pool(redis_settings(settings))
    queue = ArqJobQueue(pool)
    ran: list[str] = []

    async def record(ctx: dict[str, Any], subject: str) -> None:
        ran.append(subject)

    polls = [f"task-{n}" for n in range(20)]
    try:
        for task in polls:  # a backlog: polls already due
            assert await queue.schedule("poll_task", task, key=f"poll:{task}")
        await asyncio.sleep(0.01)  # arq scores in ms: the polls fell due strictly before
        assert await queue.schedule("start_task", "task-urgent", key="start:u", urgent=True)
        assert await queue.schedule("start_task", "task-late", key="start:l")
        worker = Worker(
            functions=[func(record, name="poll_task"), func(record, name="start_task")],
            redis_pool=pool,
            burst=True,
            max_jobs=1,
            poll_delay=0.01,
            handle_signals=False,
        )
        await worker.main()
    finally:
        await pool.aclose()
    assert ran[0] == "task-urgent"
    assert sorted(ran[1:-1]) == sorted(polls)
    assert ran[-1] == "task-late"


async def test_a_delayed_job_waits_for_its_time_even_when_urgent(redis_url: str) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url)
    queue = await ArqJobQueue.connect(settings)
    try:
        assert await queue.schedule(
            "deliver_event", "event-2", key="deliver:event-2", delay=60, urgent=True
        )
        score = await queue.pool.zscore(keys.DELIVERY_QUEUE, "deliver:event-2")
    finally:
        await queue.close()
    assert score is not None and score / 1000 > time.time() + 55


async def test_deliveries_run_in_their_own_lane_whatever_waits_in_the_main_queue(
    redis_url: str,
) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url)
    pool = await create_pool(redis_settings(settings))
    queue = ArqJobQueue(pool)
    delivered: list[str] = []

    async def deliver_event(ctx: dict[str, Any], subject: str) -> None:
        assert ctx["runtime"] == "the runtime"
        delivered.append(subject)

    lane = DeliveryLane(
        pool=pool,
        functions=[func(deliver_event, name="deliver_event")],
        ctx={"runtime": "the runtime"},
        max_jobs=5,
        poll_delay=0.01,
        job_timeout=10,
        max_tries=3,
    )
    try:
        for n in range(50):  # a backlog no worker is taking
            assert await queue.schedule("poll_task", f"task-{n}", key=f"poll:task-{n}")
        lane.start()
        assert await queue.schedule("deliver_event", "event-1", key="deliver:event-1")
        assert await queue.schedule("deliver_event", "event-2", key="deliver:event-2", urgent=True)
        await wait_until(lambda: len(delivered) == 2, timeout=10, interval=0.02)
        await lane.stop(wait_seconds=1)
        assert sorted(delivered) == ["event-1", "event-2"]
        assert await pool.zcard(queue.queue_key) == 50  # the main queue is untouched
        assert await pool.zcard(keys.DELIVERY_QUEUE) == 0
        # stopped: a delivery scheduled now waits for the next worker
        assert await queue.schedule("deliver_event", "event-3", key="deliver:event-3")
        await asyncio.sleep(0.2)
        assert sorted(delivered) == ["event-1", "event-2"]
        assert await pool.zcard(keys.DELIVERY_QUEUE) == 1
    finally:
        await pool.aclose()


@pytest.fixture
async def arq_pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    """arq's pool on a freshly emptied database."""
    pool = await create_pool(redis_settings(Settings(_env_file=None, redis_url=redis_url)))
    yield pool
    await pool.aclose()


async def test_a_scheduled_job_is_the_job_arq_would_have_enqueued(arq_pool: ArqRedis) -> None:
    queue = ArqJobQueue(arq_pool)
    before = time.time() * 1000 - 1  # arq rounds to whole milliseconds
    assert await queue.schedule("poll_task", "task-1", key="ours", delay=5)
    assert await arq_pool.enqueue_job("poll_task", "task-1", _job_id="arqs", _defer_by=5)
    after = time.time() * 1000 + 1
    ours = await Job("ours", arq_pool).info()
    arqs = await Job("arqs", arq_pool).info()
    assert ours is not None and arqs is not None
    assert (ours.function, ours.args, ours.kwargs, ours.job_try) == (
        arqs.function, arqs.args, arqs.kwargs, arqs.job_try,
    )  # fmt: skip
    assert (ours.function, ours.args) == ("poll_task", ("task-1",))
    assert ours.score is not None and before + 5000 <= ours.score <= after + 5000
    # the same expiry: due time plus arq's extra day
    ttls = [await arq_pool.pttl("arq:job:ours"), await arq_pool.pttl("arq:job:arqs")]
    assert all(5000 + 86_400_000 - 2000 < ttl <= 5000 + 86_400_000 for ttl in ttls)


async def test_a_taken_key_is_not_enqueued_twice(arq_pool: ArqRedis) -> None:
    queue = ArqJobQueue(arq_pool)
    assert await queue.schedule("poll_task", "task-1", key="k1")
    assert await queue.is_scheduled("k1")
    assert not await queue.schedule("poll_task", "task-1", key="k1", delay=60)
    assert await arq_pool.zcard(queue.queue_key) == 1
    assert (await arq_pool.zscore(queue.queue_key, "k1") or 0) < time.time() * 1000 + 1000
    # a job that ran and kept its result holds its key too, as in arq
    await arq_pool.set("arq:result:k2", b"done")
    assert not await queue.schedule("poll_task", "task-2", key="k2")
    assert await arq_pool.zcard(queue.queue_key) == 1
