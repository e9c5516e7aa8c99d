"""The periodic chores of a worker process, run as background tasks beside arq's job loop.

* heartbeat: every few seconds the worker writes its own member of ``gw:workers`` (what
  ``/readyz`` reads), hands back the jobs of any worker whose heartbeat lapsed
  (``worker.recovery``) and refreshes the queue gauges of its metrics port; the member is
  removed on a clean shutdown;
* sweep: every ``GATEWAY_SWEEP_INTERVAL_SECONDS`` one worker (whichever claims the interval
  first) runs the self-healing sweep;
* feeds: every ``GATEWAY_FEED_SCHEDULER_SECONDS`` every worker starts the feed runs that are
  due (each run is claimed on its feed, so it starts once across all workers).

Why a loop and not an arq cron job: arq's cron fires at wall-clock seconds (at most once a
second, at fixed marks), which makes an interval like 1 s for tests or 45 s in production
awkward; a plain loop with a per-interval claim in Redis gives "once per interval across every
worker" for any interval, and the sweep is idempotent anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from app.exports.sweep import Sweeper
from app.feeds.scheduler import FeedScheduler
from app.platform import metrics
from app.platform.heartbeat import Heartbeat
from app.wiring.runtime import Runtime
from worker.recovery import Recovery

log = logging.getLogger(__name__)


class WorkerChores:
    def __init__(self, runtime: Runtime, sweeper: Sweeper, recovery: Recovery) -> None:
        self.runtime = runtime
        self.sweeper = sweeper
        self.recovery = recovery
        self.worker_id = recovery.worker_id
        self.heartbeat = Heartbeat(runtime.redis, self.worker_id)
        self.scheduler = FeedScheduler(runtime.feeds)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.runtime.settings
        await self.heartbeat.beat()  # ready as soon as the worker is up
        self.recovery.beat_succeeded()
        log.info("worker started", extra={"worker_id": self.worker_id})
        interval = self.recovery.beat_seconds
        self._tasks = [
            asyncio.create_task(self._every(interval, self._beat, "heartbeat")),
            asyncio.create_task(self._every(settings.sweep_interval_seconds, self._sweep, "sweep")),
            asyncio.create_task(self._every(settings.feed_scheduler_seconds, self._feeds, "feeds")),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        try:
            await self.recovery.forget()
            await self.heartbeat.remove()
        except RedisError:
            metrics.REDIS_ERRORS.labels("heartbeat").inc()
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    async def _beat(self) -> None:
        try:
            present = await self.heartbeat.beat()
        except RedisError:
            self.recovery.beat_failed()
            raise
        self.recovery.beat_succeeded()
        if not present:
            log.error(
                "this worker was presumed dead (no heartbeat for %g s): jobs it held may have "
                "been handed to another worker",
                self.recovery.silent_seconds,
                extra={"worker_id": self.worker_id},
            )
        await self.recovery.recover()
        await metrics.refresh_queue_gauges(
            self.runtime.redis,
            job_queue_keys=self.sweeper.queue.queue_keys,
            ready_worker_seconds=self.runtime.settings.ready_worker_seconds,
        )

    async def _sweep(self) -> None:
        interval = self.runtime.settings.sweep_interval_seconds
        if not await self.runtime.store.claim_sweep(self.worker_id, interval * 0.8):
            return
        report = await self.sweeper.sweep()
        if report.total:
            log.warning(
                "sweep repaired stalled work",
                extra={"repairs": dict(report.repairs), "dispatched": report.dispatched},
            )

    async def _feeds(self) -> None:
        await self.scheduler.tick()

    @staticmethod
    async def _every(seconds: float, chore: Callable[[], Awaitable[None]], name: str) -> None:
        while True:
            try:
                await chore()
            except RedisError as exc:
                metrics.REDIS_ERRORS.labels(name).inc()
                log.warning("redis error in %s", name, extra={"error": type(exc).__name__})
            except Exception:  # a chore must never die: log and try again next time
                log.exception("%s failed", name)
            await asyncio.sleep(seconds)


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]], patience: float = 10.0) -> None:
    """Cancel ``tasks`` and wait (at most ``patience`` s) until they have ended.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for``, which redis-py
    wraps around every command it sends when a socket timeout is set, swallows a cancellation
    that arrives just as the command's write completes (CPython gh-86296, fixed in 3.12). A
    chore that lost its cancellation that way would sleep and run again, and the worker would
    never finish shutting down; so a task still running after a moment is cancelled again.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    if pending:
        log.error("tasks still running after %s s of cancelling", patience)
