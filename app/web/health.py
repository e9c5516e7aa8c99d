"""Operations routes: ``/healthz`` (the process answers), ``/readyz`` (it can work: Redis
answers, a worker beat recently and, when one is configured, the archive can be written and
read back) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from app.platform import metrics
from app.platform.errors import PROBLEM_JSON
from app.platform.heartbeat import newest_beat_age
from app.web.deps import RuntimeDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


def _not_ready(detail: str, **members: object) -> JSONResponse:
    body = {
        "type": "https://export-gateway.internal/problems/not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": detail,
        **members,
    }
    return JSONResponse(body, 503, media_type=PROBLEM_JSON)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers and a worker reported recently")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    window = runtime.settings.ready_worker_seconds
    try:
        await runtime.redis.ping()
        age = await newest_beat_age(runtime.redis)
    except Exception:  # any failure to reach Redis means "not ready"
        metrics.REDIS_ERRORS.labels("api").inc()
        return _not_ready("Redis does not answer", redis="down")
    if age is None:
        return _not_ready("no worker has reported", redis="up", worker_seconds_ago=None)
    if age > window:
        return _not_ready(
            f"no worker has reported in the last {window:g} s (newest {age:.0f} s ago)",
            redis="up",
            worker_seconds_ago=round(age, 1),
        )
    ready = {"redis": "up", "worker_seconds_ago": round(age, 1)}
    if runtime.archive.enabled:
        reason = await runtime.archive.readiness()
        if reason is not None:
            return _not_ready(f"the archive cannot be used: {reason}", **ready, archive="down")
        ready["archive"] = "up"
    return JSONResponse({"status": "ready", **ready})


@router.get(
    "/metrics",
    summary="Prometheus metrics of this API process",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    try:
        await metrics.refresh_queue_gauges(
            runtime.redis,
            job_queue_keys=runtime.lifecycle.queue.queue_keys,
            ready_worker_seconds=runtime.settings.ready_worker_seconds,
        )
    except RedisError as exc:  # serve the counters anyway; the gauges keep their last values
        metrics.REDIS_ERRORS.labels("api").inc()
        log.warning("metrics: redis error", extra={"error": type(exc).__name__})
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
