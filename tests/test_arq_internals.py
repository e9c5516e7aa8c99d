"""What the gateway relies on in arq, checked against the installed arq with a real Worker and a
real Redis: these fail when an arq upgrade changes them.

* the key layout that handing back a dead worker's jobs touches (``app.platform.queue``): a
  running job is marked ``arq:in-progress:{id}`` while its ``arq:job:{id}`` and its queue entry
  stay, so deleting the mark is all a rerun needs;
* the two behaviours ``worker.outage`` patches into arq's private poll loop (pinned version).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq import constants
from arq.connections import ArqRedis
from arq.worker import Worker, func

from app.config import Settings
from app.platform import keys
from app.platform.localredis import LocalRedis, free_port
from app.platform.queue import IN_PROGRESS_EXTRA_SECONDS, ArqJobQueue, arq_redis
from app.platform.redis_retry import reconnecting
from tests.support import wait_until
from worker.chores import cancel_and_wait
from worker.outage import PINNED_ARQ, POLL_PAUSE_SECONDS, keep_polling_through_outages

JOB_TIMEOUT = 30


class Held:
    """A job function that runs until released, counting its starts."""

    def __init__(self) -> None:
        self.starts = 0
        self.release = asyncio.Event()

    async def held_job(self, ctx: dict[str, Any]) -> None:
        self.starts += 1
        await self.release.wait()


@pytest.fixture
async def arq_pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = arq_redis(Settings(_env_file=None, redis_url=redis_url))
    yield pool
    await pool.aclose()


async def _run_worker(pool: ArqRedis, held: Held) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker(
        functions=[func(held.held_job, name="held_job")],
        redis_pool=pool,
        handle_signals=False,
        poll_delay=0.05,
        job_timeout=JOB_TIMEOUT,
        keep_result=0,
        max_jobs=5,
    )
    return worker, asyncio.create_task(worker.main())


async def _stop(worker: Worker, task: asyncio.Task[None], held: Held) -> None:
    held.release.set()
    await asyncio.wait_for(asyncio.gather(*worker.tasks.values()), 10)
    # (one cancel can be swallowed by redis-py's wait_for on Python 3.11: cancel until it ends)
    await cancel_and_wait([task])
    assert task.done()


def test_arqs_key_names_are_those_the_hand_back_touches() -> None:
    assert constants.in_progress_key_prefix == "arq:in-progress:"
    assert constants.job_key_prefix == "arq:job:"
    assert constants.default_queue_name == "arq:queue"


async def test_a_running_jobs_mark_is_all_that_keeps_it_from_running_again(
    arq_pool: ArqRedis,
) -> None:
    held = Held()
    worker, task = await _run_worker(arq_pool, held)
    try:
        await arq_pool.enqueue_job("held_job", _job_id="layout-1")
        await wait_until(lambda: held.starts == 1, timeout=10)
        mark = "arq:in-progress:layout-1"
        ttl = await arq_pool.pttl(mark)
        # arq: job_timeout + 10 s (what free_orphans dates a mark by)
        assert ttl > (JOB_TIMEOUT + IN_PROGRESS_EXTRA_SECONDS) * 1000 - 2000
        assert ttl <= (JOB_TIMEOUT + IN_PROGRESS_EXTRA_SECONDS) * 1000
        assert await arq_pool.exists("arq:job:layout-1") == 1
        assert await arq_pool.zscore("arq:queue", "layout-1") is not None

        queue = ArqJobQueue(arq_pool)
        assert await queue.hold("dead-worker", "layout-1")
        await arq_pool.zadd(keys.WORKERS, {"dead-worker": time.time() - 60})
        assert await queue.hand_back("dead-worker", time.time() - 5) == ["layout-1"]

        assert await arq_pool.exists(mark) == 0
        await wait_until(lambda: held.starts == 2, timeout=10)  # run again, nothing else done
        assert await arq_pool.zscore(keys.WORKERS, "dead-worker") is None
        assert await arq_pool.exists(keys.worker_jobs("dead-worker")) == 0
    finally:
        await _stop(worker, task, held)


async def test_a_mark_set_by_a_later_run_of_the_job_is_never_cleared(arq_pool: ArqRedis) -> None:
    queue = ArqJobQueue(arq_pool)
    mark = "arq:in-progress:again-1"
    await arq_pool.psetex(mark, 40_000, b"1")  # the dead worker's run
    assert await queue.hold("dead-worker", "again-1")
    # That run ended (the hold was not released: the worker died just after), and another
    # worker started the job again: a new mark.
    await asyncio.sleep(0.2)
    await arq_pool.psetex(mark, 40_000, b"1")
    await arq_pool.zadd(keys.WORKERS, {"dead-worker": time.time() - 60})

    assert await queue.hand_back("dead-worker", time.time() - 5) == []
    assert await arq_pool.exists(mark) == 1


async def test_the_jobs_of_a_worker_that_beat_within_the_window_are_never_handed_back(
    arq_pool: ArqRedis,
) -> None:
    queue = ArqJobQueue(arq_pool)
    mark = "arq:in-progress:alive-1"
    await arq_pool.psetex(mark, 40_000, b"1")
    assert await queue.hold("live-worker", "alive-1")
    await arq_pool.zadd(keys.WORKERS, {"live-worker": time.time() - 1})

    assert await queue.hand_back("live-worker", time.time() - 5) is None
    assert await arq_pool.exists(mark) == 1
    assert await arq_pool.hlen(keys.worker_jobs("live-worker")) == 1  # type: ignore[misc]


async def test_a_job_marked_by_a_worker_killed_before_recording_it_runs_again_after_the_window(
    arq_pool: ArqRedis,
) -> None:
    held = Held()
    worker, task = await _run_worker(arq_pool, held)
    queue = ArqJobQueue(arq_pool)
    try:
        await arq_pool.enqueue_job("held_job", _job_id="orphan-1")
        await arq_pool.enqueue_job("held_job", _job_id="recorded-1")
        await wait_until(lambda: held.starts == 2, timeout=10)
        # "recorded-1" is held by a live worker; nobody recorded "orphan-1" (its worker died
        # between arq's mark and the record).
        assert await queue.hold("live-worker", "recorded-1")
        await arq_pool.zadd(keys.WORKERS, {"live-worker": time.time()})

        assert await queue.free_orphans(JOB_TIMEOUT, min_age_seconds=60) == []  # too young
        await asyncio.sleep(1.2)
        assert await queue.free_orphans(JOB_TIMEOUT, min_age_seconds=1) == ["orphan-1"]

        assert await arq_pool.exists("arq:in-progress:orphan-1") == 0
        assert await arq_pool.exists("arq:in-progress:recorded-1") == 1
        await wait_until(lambda: held.starts == 3, timeout=10)  # orphan-1 runs again
    finally:
        await _stop(worker, task, held)


def test_the_poll_loop_patch_is_for_the_installed_arq() -> None:
    import arq

    assert arq.VERSION == PINNED_ARQ
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"arq=={PINNED_ARQ}"' in pyproject


async def test_patched_poll_loop_pauses_through_a_redis_outage_instead_of_ending(
    tmp_path: Path,
) -> None:
    keep_polling_through_outages()
    server = LocalRedis(tmp_path / "redis").start()
    settings = Settings(_env_file=None, redis_url=server.url)
    pool = reconnecting(arq_redis(settings), 0.3)
    held = Held()
    worker, task = await _run_worker(pool, held)
    back = LocalRedis(tmp_path / "redis", port=server.port)
    try:
        await asyncio.sleep(0.3)
        server.stop()
        await asyncio.sleep(3 * POLL_PAUSE_SECONDS + 1)
        assert not task.done(), task.exception() if task.done() else None

        back.start()
        await pool.enqueue_job("held_job", _job_id="after-outage")
        await wait_until(lambda: held.starts == 1, timeout=15)
    finally:
        await _stop(worker, task, held)
        await pool.aclose()
        back.stop()


async def test_patched_poll_loop_gives_back_job_slots_lost_to_an_interrupted_start() -> None:
    keep_polling_through_outages()
    nowhere = Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    pool = arq_redis(nowhere)
    worker = Worker(functions=[func(Held().held_job, name="held_job")], redis_pool=pool, max_jobs=3)
    try:
        # As start_jobs leaves them when Redis fails between taking a slot and starting the
        # job: two slots taken and counted, no task running.
        for _ in range(2):
            await worker.sem.acquire()
            worker.job_counter += 1

        await worker._poll_iteration()  # Redis refuses: the patched loop pauses

        assert worker.job_counter == 0
        assert worker.sem._value == 3 + 1  # arq's semaphore: max_jobs + 1, all free again
    finally:
        await pool.aclose()
