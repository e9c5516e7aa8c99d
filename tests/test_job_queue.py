"""``worker.tasks.ArqJobQueue`` and the delivery lane against a real Redis and real arq
workers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq import Worker
from arq.connections import ArqRedis, create_pool
from arq.worker import func

from app import keys
from app.config import Settings
from tests.support import wait_until
from worker.lane import DeliveryLane
from worker.tasks import ArqJobQueue, redis_settings


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


class _LosesFirstTransaction(ArqRedis):
    """arq's pool whose first enqueue ends the way a connection lost mid-transaction does:
    arq catches the WatchError and answers None, and nothing was written."""

    lost = 0

    async def enqueue_job(self, *args: Any, **kwargs: Any) -> Any:
        if not self.lost:
            self.lost += 1
            return None
        return await super().enqueue_job(*args, **kwargs)


async def test_a_job_whose_enqueue_was_silently_lost_is_enqueued_again(redis_url: str) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url)
    pool = await create_pool(redis_settings(settings))
    flaky = _LosesFirstTransaction(connection_pool=pool.connection_pool)
    queue = ArqJobQueue(flaky)
    try:
        assert await queue.schedule("poll_task", "task-1", key="poll:task-1:3")
        assert flaky.lost == 1
        assert await queue.is_scheduled("poll:task-1:3")
        assert await pool.zscore(queue.queue_key, "poll:task-1:3") is not None
        # a key really taken still answers False, without a second job
        assert not await queue.schedule("poll_task", "task-1", key="poll:task-1:3")
        assert await pool.zcard(queue.queue_key) == 1
    finally:
        await pool.aclose()
