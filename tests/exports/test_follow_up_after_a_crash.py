"""A worker killed right after finishing a task, before publishing the followers' webhooks,
loses nothing: arq reruns the step, which finds the task finished and does the follow-ups
again (found by bench/faults/kill_worker.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.exports.schemas import ExportRequest, TaskRecord
from app.platform import keys
from app.platform.clock import utcnow
from app.platform.queue import ArqJobQueue
from app.wiring.runtime import Runtime, build_runtime
from tests.support import SANDBOX_TOKEN, WEBHOOK_SECRET, api_keys_setting


@pytest.fixture
async def runtime(redis_url: str, upstream_url: str) -> AsyncIterator[Runtime]:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "upstream_base_url": upstream_url,
        "upstream_token": SANDBOX_TOKEN,
        "api_keys": api_keys_setting(),
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_allowed_networks": "127.0.0.1/32",
    }
    config = Settings(_env_file=None, **values)
    queue = await ArqJobQueue.connect(config)
    built = build_runtime(config, queue)
    yield built
    await built.close()
    await queue.close()


def _finished(task: TaskRecord) -> TaskRecord:
    now = utcnow()
    return task.model_copy(
        update={
            "status": "completed",
            "upstream_id": "5f88abf5f4689d7295cf1134",
            "links": ["https://files.example/1.csv"],
            "completed_at": now,
            "expires_at": now + timedelta(days=30),
            "next_job": None,
            "next_job_key": None,
            "next_poll_at": None,
        }
    )


async def test_a_rerun_step_of_a_finished_task_publishes_the_missing_webhook_once(
    runtime: Runtime, redis_client: Redis
) -> None:
    export = await runtime.exports.submit(
        "alice", ExportRequest(filter="batch==7", callback_url="http://127.0.0.1:1024/hooks")
    )
    record = await runtime.store.get_export(export.id)
    assert record is not None
    # The finishing transaction commits, then the worker dies before anything else.
    await runtime.store.update_task(record.task_id, _finished)
    assert await redis_client.llen(keys.export_events(export.id)) == 0  # type: ignore[misc]

    await runtime.lifecycle.poll(record.task_id)  # arq runs the killed step again
    await runtime.lifecycle.poll(record.task_id)  # and once more, for good measure

    events = await redis_client.lrange(keys.export_events(export.id), 0, -1)  # type: ignore[misc]
    assert len(events) == 1
    event = await redis_client.get(keys.event(events[0]))
    assert event is not None and '"type":"export.completed"' in event
    assert await redis_client.exists(f"arq:job:expire:{record.task_id}") == 1
