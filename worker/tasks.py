"""The worker's jobs: one thin function per job name, each a call into an app service.

arq calls them with its context; how jobs are stored and enqueued is
``app.platform.queue``'s business (the one module that knows arq's layout).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from app.platform import metrics
from app.webhooks.service import DeliveryDeferred, parse_delivery_subject
from app.wiring.runtime import Runtime

Ctx = dict[str, Any]


def counting_redis_errors(job: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The job, counting Redis failures in metrics (arq then retries it)."""
    if not inspect.iscoroutinefunction(job):  # e.g. an arq ``func(...)`` wrapper: as it is
        return job

    @functools.wraps(job)
    async def run(ctx: Ctx, *args: Any) -> Any:
        try:
            return await job(ctx, *args)
        except RedisError:
            metrics.REDIS_ERRORS.labels("worker_job").inc()
            raise

    return run


def _runtime(ctx: Ctx) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def start_task(ctx: Ctx, task_id: str) -> None:
    await _runtime(ctx).lifecycle.start(task_id)


async def poll_task(ctx: Ctx, task_id: str) -> None:
    await _runtime(ctx).lifecycle.poll(task_id)


async def warn_expiring(ctx: Ctx, task_id: str) -> None:
    await _runtime(ctx).lifecycle.warn_expiring(task_id)


async def expire_task(ctx: Ctx, task_id: str) -> None:
    await _runtime(ctx).lifecycle.expire(task_id)


async def archive_task(ctx: Ctx, task_id: str) -> None:
    await _runtime(ctx).archive.copy(task_id)


async def verify_archive(ctx: Ctx, task_id: str) -> None:
    await _runtime(ctx).archive.verify_task(task_id)


async def deliver_event(ctx: Ctx, subject: str) -> None:
    try:
        await _runtime(ctx).webhooks.deliver(*parse_delivery_subject(subject))
    except DeliveryDeferred as exc:  # the client's cap of deliveries in flight: later
        raise Retry(defer=exc.seconds) from None


async def cut_feed_run(ctx: Ctx, export_id: str) -> None:
    await _runtime(ctx).feeds.cut_run(export_id)


FUNCTIONS = [
    start_task,
    poll_task,
    warn_expiring,
    expire_task,
    archive_task,
    verify_archive,
    deliver_event,
    cut_feed_run,
]
