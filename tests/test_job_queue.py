"""``worker.tasks.ArqJobQueue`` against a real Redis and a real arq worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq import Worker
from arq.connections import create_pool
from arq.worker import func

from app.config import Settings
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
        assert await queue.schedule("deliver_event", "event-0", key="deliver:event-0", urgent=True)
        assert await queue.schedule("deliver_event", "event-1", key="deliver:event-1")
        worker = Worker(
            functions=[func(record, name="poll_task"), func(record, name="deliver_event")],
            redis_pool=pool,
            burst=True,
            max_jobs=1,
            poll_delay=0.01,
            handle_signals=False,
        )
        await worker.main()
    finally:
        await pool.aclose()
    assert ran[0] == "event-0"
    assert sorted(ran[1:-1]) == sorted(polls)
    assert ran[-1] == "event-1"


async def test_a_delayed_job_waits_for_its_time_even_when_urgent(redis_url: str) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url)
    queue = await ArqJobQueue.connect(settings)
    try:
        assert await queue.schedule(
            "deliver_event", "event-2", key="deliver:event-2", delay=60, urgent=True
        )
        score = await queue.pool.zscore(queue.queue_key, "deliver:event-2")
    finally:
        await queue.close()
    assert score is not None and score / 1000 > time.time() + 55
