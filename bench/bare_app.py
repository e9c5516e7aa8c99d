"""The baseline of the HTTP benchmarks: bare FastAPI routes doing one Redis command each.

    GATEWAY_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn bench.bare_app:app

``GET /bare/{key}`` answers the value of one Redis GET as JSON (404 when absent);
``POST /bare`` stores the raw body under a fresh key with one Redis SET and answers 202.
No auth, no validation, no models: what the gateway's routes are measured against.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    redis: Redis = Redis.from_url(
        os.environ.get("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True
    )
    app.state.redis = redis
    try:
        yield
    finally:
        await redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/bare/{key}")
async def read(key: str, request: Request) -> Response:
    raw = await request.app.state.redis.get(f"bare:{key}")
    if raw is None:
        return Response(status_code=404)
    return Response(raw, media_type="application/json")


@app.post("/bare", status_code=202)
async def write(request: Request) -> Response:
    key = secrets.token_urlsafe(16)
    await request.app.state.redis.set(f"bare:{key}", await request.body(), ex=3600)
    return Response(f'{{"id":"{key}"}}', status_code=202, media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
