"""``arq worker.main.WorkerSettings``: the worker process.

Settings come from the environment (``app.config``) when this module is imported, as arq reads
``WorkerSettings`` as a class. ``on_startup`` builds the shared runtime (Redis, httpx, services)
once per process and ``on_shutdown`` closes it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq.connections import RedisSettings

from app.config import get_settings
from app.redis_retry import reconnecting
from app.runtime import build_runtime
from worker import tasks
from worker.outage import (
    keep_polling_through_outages,
    reconnecting_settings,
    survives_redis_outage,
)

_settings = get_settings()
keep_polling_through_outages()


async def startup(ctx: dict[str, Any]) -> None:
    queue = tasks.ArqJobQueue(ctx["redis"])
    settings = get_settings()
    runtime = build_runtime(settings, queue)
    reconnecting(runtime.redis, settings.worker_redis_retry_seconds)
    ctx["runtime"] = runtime


async def shutdown(ctx: dict[str, Any]) -> None:
    runtime = ctx.get("runtime")
    if runtime is not None:
        await runtime.close()


class WorkerSettings:
    functions: ClassVar[list[Any]] = [survives_redis_outage(f) for f in tasks.FUNCTIONS]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings: RedisSettings = reconnecting_settings(
        tasks.redis_settings(_settings), _settings.worker_redis_retry_seconds
    )
    max_jobs = _settings.worker_max_jobs
    poll_delay = _settings.queue_poll_seconds
    # A job killed with its worker runs again on another after this (plus arq's 10 s).
    job_timeout = _settings.worker_job_timeout_seconds
    keep_result = 0
    max_tries = 20
    allow_abort_jobs = False
