"""The link window, for real, with a retention of a few seconds: links expire at ``expires_at``
(status ``expired``, ``links`` empty, ``/csv`` 410 naming the rerun route; ``export.expiring``
then ``export.expired`` webhooks on time), the view never shows
a link past ``expires_at`` even when the expire step is late, lost expiry steps are re-created
from the completed-task index, and an expired export can be run again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis
from standardwebhooks import Webhook

from app.config import Settings
from app.exports.schemas import TaskRecord
from app.platform import keys
from app.platform.localredis import LocalRedis
from app.platform.queue import ArqJobQueue
from app.wiring.runtime import build_runtime
from tests.support import (
    SANDBOX_TOKEN,
    WEBHOOK_SECRET,
    ServerThread,
    Stack,
    running_stack,
    wait_for,
)
from tests.webhooks.receiver import Receiver

RETENTION = 4.0
WARNING = 2.0
REDIS_DB = 0  # per-test fixtures use databases 1-15


@pytest.fixture(scope="module")
def redis_url_0(redis_server: LocalRedis) -> str:
    client = redis.Redis(port=redis_server.port, db=REDIS_DB)
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}"


@pytest.fixture(scope="module")
def gateway(
    redis_url_0: str, sandbox_server: ServerThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        redis_url_0,
        f"{sandbox_server.url}/v1.1",
        tmp_path_factory.mktemp("expiry-gateway"),
        GATEWAY_LINK_RETENTION_SECONDS=str(RETENTION),
        GATEWAY_EXPIRY_WARNING_SECONDS=str(WARNING),
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _short_upstream_retention(sandbox: httpx.Client) -> None:
    """Upstream deletes the files as quickly as the gateway is told it does."""
    sandbox.post("/_sandbox/config", json={"retention_seconds": RETENTION}).raise_for_status()


@pytest.fixture
async def store_redis(redis_url_0: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url_0, decode_responses=True)
    yield client
    await client.aclose()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _task(db: Redis, export_id: str) -> TaskRecord:
    export = await db.get(keys.export(export_id))
    assert export is not None
    task_id = json.loads(export)["task_id"]
    raw = await db.get(keys.task(task_id))
    assert raw is not None
    return TaskRecord.model_validate_json(raw)


def unique_filter(*clauses: str) -> str:
    """A query of the test's own: nothing coalesces with another test's export."""
    return " and ".join([f"batch=={uuid.uuid4().hex[:8]}", *clauses])


async def _completed(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = (await api.post("/v1/exports", json=body)).json()
    done = await wait_for(api, created["id"])
    assert done["status"] == "completed", done
    return done


async def test_at_expires_at_the_export_is_expired_with_no_links_and_csv_410(
    gateway: Stack, store_redis: Redis
) -> None:
    async with gateway.client() as api:
        done = await _completed(api, {"filter": unique_filter()})
        expires_at = _time(done["expires_at"])
        assert expires_at - _time(done["completed_at"]) == timedelta(seconds=RETENTION)
        task = await _task(store_redis, done["id"])
        score = await store_redis.zscore(keys.COMPLETED_TASKS, task.id)
        assert score == int(expires_at.timestamp() * 1000)  # indexed for the sweep
        assert (await api.get(f"/v1/exports/{done['id']}/csv")).status_code == 200
        expired = await wait_for(api, done["id"], ("expired",), timeout=RETENTION + 10)
        seen_at = datetime.now(UTC)
        gone = await api.get(f"/v1/exports/{done['id']}/csv")
    assert seen_at >= expires_at - timedelta(seconds=0.1)  # not before its time
    assert expired["links"] == []
    assert expired["expires_at"] == done["expires_at"]
    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"
    problem = gone.json()
    assert problem["expired_at"] == done["expires_at"]
    assert problem["rerun"] == f"/v1/exports/{done['id']}/rerun"
    assert f"expired at {done['expires_at']}" in problem["detail"]
    assert f"POST /v1/exports/{done['id']}/rerun" in problem["detail"]
    # the steps ran: the warning at expires_at - warning, then the expiry itself
    deadline = time.monotonic() + 10
    while (task := await _task(store_redis, done["id"])).status != "expired":
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.1)
    assert task.links == []
    assert task.warned_at is not None
    assert expires_at - timedelta(seconds=WARNING + 0.1) <= task.warned_at < expires_at
    assert await store_redis.zscore(keys.COMPLETED_TASKS, task.id) is None


async def test_a_lost_expire_step_shows_no_stale_links_and_is_recreated_from_the_index(
    gateway: Stack, redis_url_0: str, upstream_url: str, store_redis: Redis
) -> None:
    async with gateway.client() as api:
        done = await _completed(api, {"filter": unique_filter()})
        task = await _task(store_redis, done["id"])
        # the queue loses the task's warn and expire jobs (a flush, an older snapshot)
        lost = [f"warn:{task.id}", f"expire:{task.id}"]
        deadline = time.monotonic() + 5  # scheduled just after the task is stored completed
        while not await store_redis.exists(f"arq:job:expire:{task.id}"):
            assert time.monotonic() < deadline, "expire_task was never scheduled"
            await asyncio.sleep(0.02)
        await store_redis.delete(*(f"arq:job:{key}" for key in lost))
        await store_redis.zrem("arq:queue", *lost)
        expires_at = _time(done["expires_at"])
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.3)
        late = (await api.get(f"/v1/exports/{done['id']}")).json()
        csv = await api.get(f"/v1/exports/{done['id']}/csv")
    assert (await _task(store_redis, done["id"])).status == "completed"  # nothing ran...
    assert late["status"] == "expired" and late["links"] == []  # ...yet the view is right
    assert csv.status_code == 410

    settings = Settings(
        redis_url=redis_url_0,
        upstream_base_url=upstream_url,
        upstream_token=SANDBOX_TOKEN,
        link_retention_seconds=RETENTION,
        expiry_warning_seconds=WARNING,
    )
    queue = await ArqJobQueue.connect(settings)
    runtime = build_runtime(settings, queue)
    try:
        assert task.id in await runtime.store.completed_tasks_due(datetime.now(UTC))
        repaired = await runtime.lifecycle.repair_expiry_jobs(grace_seconds=0)
    finally:
        await runtime.close()
        await queue.close()
    assert repaired == [task.id]
    deadline = time.monotonic() + 10
    while (after := await _task(store_redis, done["id"])).status != "expired":
        assert time.monotonic() < deadline, after
        await asyncio.sleep(0.1)
    assert after.warned_at is None or after.warned_at < expires_at  # none once links are gone
    assert await store_redis.zscore(keys.COMPLETED_TASKS, task.id) is None


async def test_an_expired_export_can_be_run_again(gateway: Stack) -> None:
    async with gateway.client() as api:
        done = await _completed(api, {"filter": unique_filter(), "metadata": {"ticket": "OPS-9"}})
        await wait_for(api, done["id"], ("expired",), timeout=RETENTION + 10)
        response = await api.post(f"/v1/exports/{done['id']}/rerun")
        assert response.status_code == 202
        again = await wait_for(api, response.json()["id"])
        csv = await api.get(f"/v1/exports/{again['id']}/csv")
    assert again["status"] == "completed"
    assert again["metadata"] == {"ticket": "OPS-9"} and again["filter"] == done["filter"]
    assert len(again["links"]) == 3
    assert csv.status_code == 200
    assert csv.content.startswith(b"id,signer_id,created_time,")


async def test_expiring_then_expired_webhooks_arrive_at_the_right_times(gateway: Stack) -> None:
    receiver = Receiver().start()
    path = "/hooks/expiry"
    try:
        async with gateway.client() as api:
            done = await _completed(
                api,
                {
                    "filter": unique_filter(),
                    "callback_url": f"http://127.0.0.1:{receiver.port}{path}",
                },
            )
            deadline = time.monotonic() + RETENTION + 15
            while len(receiver.requests(path)) < 3:
                assert time.monotonic() < deadline, receiver.requests(path)
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing more should follow
    finally:
        receiver.stop()
    got = receiver.requests(path)
    bodies = [json.loads(r.body) for r in got]
    assert [b["type"] for b in bodies] == ["export.completed", "export.expiring", "export.expired"]
    verifier = Webhook(WEBHOOK_SECRET)
    for request in got:
        verifier.verify(request.body, request.headers)
    expires_at = _time(done["expires_at"])
    to_wall = time.time() - time.monotonic()
    arrived = [datetime.fromtimestamp(r.at + to_wall, UTC) for r in got]
    early = timedelta(seconds=0.1)
    assert arrived[0] < arrived[1] < arrived[2]
    assert arrived[1] >= expires_at - timedelta(seconds=WARNING) - early
    assert _time(bodies[1]["timestamp"]) < expires_at  # warned while the links still worked
    assert bodies[1]["data"]["status"] == "completed"
    assert bodies[1]["data"]["links"] == done["links"]
    assert arrived[2] >= expires_at - early
    assert _time(bodies[2]["timestamp"]) >= expires_at - early
    assert bodies[2]["data"]["status"] == "expired" and bodies[2]["data"]["links"] == []
    assert all(b["data"]["id"] == done["id"] for b in bodies)
