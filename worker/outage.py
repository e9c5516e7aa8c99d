"""A worker rides out a Redis outage: its clients reconnect, and its jobs are retried.

``reconnecting_settings`` gives arq's pool the reconnect policy of ``app.redis_retry``
(without it, arq's poll loop dies on the first refused connection and the worker exits).

arq treats any exception of a job as final: the job is recorded as failed and never runs
again, so a poll step that failed because Redis was restarting would end its task's chain of
steps. ``survives_redis_outage`` turns a Redis connection or timeout error that outlasted the
client's own reconnect policy (app.redis_retry) into ``arq.Retry``: arq runs the job again a
few seconds later (up to the worker's ``max_tries``). Steps are idempotent, so a rerun is safe.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from arq import Retry
from arq.connections import RedisSettings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.redis_retry import redis_retry, retry_errors

log = logging.getLogger(__name__)

RETRY_IN_SECONDS = 5.0

Job = Callable[..., Coroutine[Any, Any, Any]]


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
