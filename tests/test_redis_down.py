"""Redis gone or frozen: every route answers 503 problem+json with Retry-After, quickly (never
a 500, never a hang), and the API recovers by itself when Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from app.platform.localredis import LocalRedis
from tests.support import Stack, running_stack

# Generous for a busy 2-core machine; Redis socket timeouts are 2 s.
QUICK = 6.0

Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def _routes(export_id: str) -> dict[str, Call]:
    return {
        "POST /v1/exports": lambda api: api.post("/v1/exports", json={"filter": "batch==9"}),
        "POST /v1/exports (Idempotency-Key)": lambda api: api.post(
            "/v1/exports", json={}, headers={"Idempotency-Key": "k-1"}
        ),
        "GET /v1/exports": lambda api: api.get("/v1/exports"),
        "GET /v1/exports/{id}": lambda api: api.get(f"/v1/exports/{export_id}"),
        "DELETE /v1/exports/{id}": lambda api: api.delete(f"/v1/exports/{export_id}"),
        "GET /v1/exports/{id}/deliveries": lambda api: api.get(
            f"/v1/exports/{export_id}/deliveries"
        ),
        "POST /v1/exports/{id}/redeliver": lambda api: api.post(
            f"/v1/exports/{export_id}/redeliver"
        ),
        "GET /readyz": lambda api: api.get("/readyz"),
    }


async def _all_answer_503_quickly(stack: Stack, export_id: str) -> None:
    async with stack.client() as api:

        async def timed(call: Call) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await call(api)
            return response, time.monotonic() - started

        routes = _routes(export_id)
        answers = await asyncio.gather(*(timed(call) for call in routes.values()))
        for name, (response, took) in zip(routes, answers, strict=True):
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json", name
            assert response.json()["status"] == 503, name
            if name != "GET /readyz":
                assert int(response.headers["retry-after"]) >= 1, name
            assert took < QUICK, (name, took)
        assert (await api.get("/healthz")).status_code == 200  # the process itself is fine


async def _recovers(stack: Stack, export_id: str) -> None:
    deadline = time.monotonic() + 30
    async with stack.client() as api:
        while True:
            created = await api.post("/v1/exports", json={"filter": "batch==10"})
            if created.status_code == 202 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert created.status_code == 202, created.text
        assert (await api.get("/v1/exports")).status_code == 200
        assert (await api.get(f"/v1/exports/{created.json()['id']}")).status_code == 200
        assert (await api.delete(f"/v1/exports/{created.json()['id']}")).status_code == 200


async def test_redis_stopped_answers_503_quickly_and_recovers_when_it_is_back(
    tmp_path: Path, upstream_url: str, sandbox: httpx.Client
) -> None:
    server = LocalRedis(tmp_path / "redis").start()
    try:
        with running_stack(server.url, upstream_url, tmp_path, workers=0) as stack:
            async with stack.client() as api:
                created = await api.post("/v1/exports", json={})
                assert created.status_code == 202
            server.stop()
            await _all_answer_503_quickly(stack, created.json()["id"])
            server = LocalRedis(tmp_path / "redis", port=server.port).start()
            await _recovers(stack, created.json()["id"])
    finally:
        server.stop()


async def test_redis_frozen_answers_503_within_the_socket_timeout_and_recovers(
    tmp_path: Path, upstream_url: str, sandbox: httpx.Client
) -> None:
    server = LocalRedis(tmp_path / "redis").start()
    assert server.process is not None
    try:
        with running_stack(server.url, upstream_url, tmp_path, workers=0) as stack:
            async with stack.client() as api:
                created = await api.post("/v1/exports", json={})
                assert created.status_code == 202
            os.kill(server.process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
            try:
                await _all_answer_503_quickly(stack, created.json()["id"])
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            await _recovers(stack, created.json()["id"])
    finally:
        server.stop()
