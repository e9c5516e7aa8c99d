"""``arq worker.main.WorkerSettings``: the worker process.

Settings come from the environment (``app.config``) when this module is imported, as arq reads
``WorkerSettings`` as a class. ``on_startup`` builds the shared runtime (Redis, httpx, services)
once per process, switches logging to JSON lines, opens the metrics port and starts the
periodic chores (heartbeat, sweep); ``on_shutdown`` undoes all of that.

SIGTERM (or SIGINT): arq stops taking jobs, lets running ones finish for up to
``GATEWAY_WORKER_SHUTDOWN_SECONDS`` (each job is one short step, so they do), then exits; jobs
not yet started stay in Redis for the other workers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import uvloop
from arq.connections import RedisSettings
from prometheus_client import start_http_server

from app.config import get_settings
from app.exports.sweep import Sweeper
from app.platform.gc_tuning import tune_gc
from app.platform.logs import bind, configure_for, json_from_import
from app.platform.queue import ArqJobQueue, redis_settings
from app.platform.redis_retry import reconnecting
from app.wiring.runtime import build_runtime
from worker import tasks
from worker.chores import WorkerChores
from worker.lane import DeliveryLane
from worker.outage import (
    keep_polling_through_outages,
    reconnecting_settings,
    survives_redis_outage,
)

# uvloop's event loop, as the API's under uvicorn: arq creates its loop with the policy's
# ``get_event_loop()`` after importing this module. Every poll step writes to and reads from
# a dozen sockets (Redis, upstream), and uvloop's transports cost less per call than asyncio's.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

_settings = get_settings()
log = logging.getLogger("worker")
json_from_import(_settings, "arq.worker")  # arq's banner, logged before startup, as JSON too
keep_polling_through_outages()


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    configure_for(settings)
    queue = ArqJobQueue(ctx["redis"])
    runtime = build_runtime(settings, queue)
    reconnecting(runtime.redis, settings.worker_redis_retry_seconds)
    ctx["runtime"] = runtime
    if settings.worker_metrics_port:
        try:
            start_http_server(settings.worker_metrics_port)
            log.info("metrics served", extra={"port": settings.worker_metrics_port})
        except OSError as exc:  # e.g. two workers on one host: work on, without metrics
            log.error(
                "metrics port unavailable",
                extra={"port": settings.worker_metrics_port, "error": str(exc)},
            )

    async def repair_expiry(grace_seconds: float) -> int:
        return len(await runtime.lifecycle.repair_expiry_jobs(grace_seconds))

    sweeper = Sweeper(
        store=runtime.store,
        lifecycle=runtime.lifecycle,
        queue=queue,
        grace_seconds=settings.sweep_grace_seconds,
        repairs={
            "expiry": repair_expiry,
            "deliveries": runtime.webhooks.repair,
            "archive": runtime.archive.repair,
        },
    )
    ctx["chores"] = chores = WorkerChores(runtime, sweeper)
    await chores.start()
    ctx["lane"] = lane = DeliveryLane(
        pool=ctx["redis"],
        functions=[_job(tasks.deliver_event)],
        ctx={"runtime": runtime},
        max_jobs=settings.worker_delivery_jobs,
        poll_delay=settings.queue_poll_seconds,
        job_timeout=settings.worker_job_timeout_seconds,
        max_tries=MAX_TRIES,
        on_job_start=job_start,
    )
    lane.start()
    ctx["archive_report"] = asyncio.create_task(runtime.archive.report_readiness())
    tune_gc()
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # A SIGTERM during start-up whose cancellation redis-py swallowed (Python 3.11, see
        # worker.chores.cancel_and_wait): shut down now rather than run on, deaf to it.
        raise asyncio.CancelledError


async def shutdown(ctx: dict[str, Any]) -> None:
    report = ctx.get("archive_report")
    if report is not None:
        report.cancel()
    lane = ctx.get("lane")
    if lane is not None:
        await lane.stop()
    chores = ctx.get("chores")
    if chores is not None:
        await chores.stop()
    runtime = ctx.get("runtime")
    if runtime is not None:
        await runtime.close()


async def job_start(ctx: dict[str, Any]) -> None:
    bind(job_id=ctx.get("job_id"), job_try=ctx.get("job_try"))


MAX_TRIES = 20


def _job(function: Any) -> Any:
    return survives_redis_outage(tasks.counting_redis_errors(function))


class WorkerSettings:
    # deliver_event too: deliveries enqueued before the delivery lane existed are in this queue
    functions: ClassVar[list[Any]] = [_job(f) for f in tasks.FUNCTIONS]
    on_startup = startup
    on_shutdown = shutdown
    on_job_start = job_start
    redis_settings: RedisSettings = reconnecting_settings(
        redis_settings(_settings), _settings.worker_redis_retry_seconds
    )
    max_jobs = _settings.worker_max_jobs
    poll_delay = _settings.queue_poll_seconds
    # A job killed with its worker runs again on another after this (plus arq's 10 s).
    job_timeout = _settings.worker_job_timeout_seconds
    keep_result = 0
    max_tries = MAX_TRIES
    allow_abort_jobs = False
    # SIGTERM: stop picking jobs, let running ones finish (bounded), then exit.
    job_completion_wait = _settings.worker_shutdown_seconds
