"""A worker rides out a Redis outage: its clients reconnect, and its jobs are retried.

``reconnecting_settings`` gives arq's pool the reconnect policy of ``app.platform.redis_retry``
(without it, arq's poll loop dies on the first refused connection and the worker exits).
That is not enough on its own: arq 0.28 starts each job inside a WATCH, and redis-py turns a
connection lost while watching into WatchError, which arq lets escape from its poll loop
(arq's issues https://github.com/python-arq/arq/issues/435 and /498):
``keep_polling_through_outages`` makes that loop log the error, pause and poll again instead of
ending the worker.

arq treats any exception of a job as final: the job is recorded as failed and never runs
again, so a poll step that failed because Redis was restarting would end its task's chain of
steps. ``survives_redis_outage`` turns a Redis connection or timeout error that outlasted the
client's own reconnect policy (app.platform.redis_retry) into ``arq.Retry``: arq runs the job
again a few seconds later (up to the worker's ``max_tries``). Steps are idempotent, so a rerun
is safe.

This is the one module that reaches into arq's private internals, and only where arq offers no
supported way: the poll loop (``Worker._poll_iteration``, with ``job_counter`` and ``sem``) has
no hook for an error of its own. Everything else uses arq's public surface (``arq.Retry``,
``on_job_start``/``after_job_end``, a ``redis_pool`` built by ``app.platform.connections``
with redis-py's jittered ``Retry``). The patch is written for ``PINNED_ARQ`` and refuses to
load on any other version (``tests/test_arq_internals.py`` has a test per patched behaviour):
an arq upgrade means reading ``Worker._poll_iteration`` and ``start_jobs`` again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import arq
from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from app.platform.redis_retry import redis_retry, retry_errors

log = logging.getLogger(__name__)

PINNED_ARQ = "0.28.0"
RETRY_IN_SECONDS = 5.0
POLL_PAUSE_SECONDS = 1.0

Job = Callable[..., Awaitable[Any]]


def survives_redis_outage(job: Job) -> Job:
    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await job(ctx, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning(
                "Redis unreachable during a job; retrying it",
                extra={"job": job.__name__, "error": type(exc).__name__},
            )
            raise Retry(defer=RETRY_IN_SECONDS) from exc

    return run


def reconnecting_settings(settings: RedisSettings, total_seconds: float) -> RedisSettings:
    """arq's own pool (its poll loop, job bookkeeping, enqueues) with the same policy."""
    return replace(settings, retry_on_error=retry_errors(), retry=redis_retry(total_seconds))


def keep_polling_through_outages() -> None:
    """Patch arq's ``Worker._poll_iteration`` (arq is pinned to 0.28.0) so that a Redis error
    in it pauses the worker instead of ending it. Idempotent."""
    if arq.VERSION != PINNED_ARQ:
        raise RuntimeError(
            f"worker/outage.py patches arq {PINNED_ARQ}'s poll loop; arq {arq.VERSION} is "
            "installed: check Worker._poll_iteration and start_jobs, then update PINNED_ARQ"
        )
    original = Worker._poll_iteration
    if getattr(original, "survives_redis_outages", False):
        return

    async def poll_iteration(self: Worker) -> None:
        try:
            await original(self)
        except (RedisConnectionError, RedisTimeoutError, WatchError, OSError) as exc:
            # A job interrupted while being started holds a semaphore slot and a count it will
            # never give back. Every running job has its task in ``self.tasks``, so the excess
            # over that (a lower bound of the leak: never releases too many) is given back.
            for _ in range(max(0, self.job_counter - len(self.tasks))):
                self.job_counter -= 1
                self.sem.release()
            log.warning(
                "Redis unreachable while polling for jobs; pausing",
                extra={"error": type(exc).__name__, "pause": POLL_PAUSE_SECONDS},
            )
            await asyncio.sleep(POLL_PAUSE_SECONDS)

    poll_iteration.survives_redis_outages = True  # type: ignore[attr-defined]
    Worker._poll_iteration = poll_iteration  # type: ignore[method-assign]
