"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (it can work)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import RuntimeDep
from app.errors import PROBLEM_JSON

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers and a worker reported recently")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    try:
        await runtime.redis.ping()
    except Exception:  # any failure to reach Redis means "not ready"
        body = {
            "type": "https://export-gateway.internal/problems/not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "Redis does not answer",
        }
        return JSONResponse(body, 503, media_type=PROBLEM_JSON)
    return JSONResponse({"status": "ready"})
