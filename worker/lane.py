"""The delivery lane: a second arq worker inside every worker process, serving only the
webhook delivery queue (``app.platform.keys.DELIVERY_QUEUE``) with ``GATEWAY_WORKER_DELIVERY_JOBS``
slots of its own.

Why: arq takes due jobs in due order and starts each as soon as one of the worker's slots is
free. When many polls fall due at once (a burst of new exports), a delivery enqueued behind
them waited for dozens of poll steps to get a slot, so the webhook of an export that had just
completed arrived seconds late (bench/webhook_latency.py). With a lane of its own it only
shares the event loop: p99 from completion seen to webhook received fell from 0.94-1.31 s
to 0.16 s with 1,000 completions (docs/PERFORMANCE.md).

Both lanes run in one process and share the arq connection pool, the runtime and the signal
handling of the main worker: on SIGTERM the main worker lets its jobs finish, then
``on_shutdown`` stops the lane, which takes no new delivery and gives the ones running
``STOP_WAIT_SECONDS`` to finish. A delivery cut off after that is run again by arq later
(its attempt is still marked in flight, so it is made again: at least once, same webhook-id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis
from arq.typing import StartupShutdown
from arq.worker import Worker

from app.platform import keys
from worker.chores import cancel_and_wait

log = logging.getLogger(__name__)

# The main worker waits GATEWAY_WORKER_SHUTDOWN_SECONDS (25 s by default) for its own jobs
# first; with this the whole shutdown stays inside compose's 40 s stop_grace_period.
STOP_WAIT_SECONDS = 10.0


class DeliveryLane:
    def __init__(
        self,
        *,
        pool: ArqRedis,
        functions: Sequence[Any],
        ctx: dict[str, Any],
        max_jobs: int,
        poll_delay: float,
        job_timeout: float,
        max_tries: int,
        on_job_start: StartupShutdown | None = None,
        after_job_end: StartupShutdown | None = None,
    ) -> None:
        self.worker = Worker(
            functions=list(functions),
            queue_name=keys.DELIVERY_QUEUE,
            redis_pool=pool,
            ctx=ctx,
            max_jobs=max_jobs,
            poll_delay=poll_delay,
            job_timeout=job_timeout,
            max_tries=max_tries,
            keep_result=0,
            allow_abort_jobs=False,
            handle_signals=False,
            on_job_start=on_job_start,
            after_job_end=after_job_end,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.worker.main(), name="delivery-lane")

    async def stop(self, wait_seconds: float = STOP_WAIT_SECONDS) -> None:
        """Take no new delivery, let running ones finish (bounded), then end the lane."""
        self.worker.allow_pick_jobs = False
        if self._task is not None:  # the lane's poll loop: no job starts after this
            await cancel_and_wait([self._task])
        running = [t for t in self.worker.tasks.values() if not t.done()]
        if running:
            _, unfinished = await asyncio.wait(running, timeout=wait_seconds)
            if unfinished:
                log.warning("deliveries cut off by shutdown", extra={"count": len(unfinished)})
                await cancel_and_wait(list(unfinished))
        for task in self.worker.tasks.values():  # retrieve outcomes: none "never retrieved"
            if task.done() and not task.cancelled():
                with contextlib.suppress(Exception):
                    task.result()
