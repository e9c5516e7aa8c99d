"""A new query is stored in one round trip (a Lua script) when nothing of its fingerprint
exists, and by the WATCH/MULTI transaction otherwise; both must leave the very same records."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from redis.asyncio import Redis

from app.exports.schemas import ExportRecord, TaskRecord
from app.exports.store import ExportStore
from app.platform import keys

TTL = 3600
NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)


def _pair(n: int, fingerprint: str) -> tuple[ExportRecord, TaskRecord]:
    task = TaskRecord(
        id=f"tsk_{n}",
        fingerprint=fingerprint,
        filter="created_time>=2020-01-01",
        fields=["id", "signer_id", "created_time"],
        site_id=5193,
        created_at=NOW,
    )
    export = ExportRecord(
        id=f"exp_{n}",
        client_id="alice",
        task_id=task.id,
        filter=task.filter,
        fields=task.fields,
        site_id=task.site_id,
        callback_url=None,
        metadata={"n": n},
        coalesced=False,
        created_at=NOW,
    )
    return export, task


async def _state(redis: Redis, n: int, fingerprint: str) -> dict[str, object]:
    task_id, export_id = f"tsk_{n}", f"exp_{n}"
    ttl_keys = [
        keys.inflight(fingerprint),
        keys.task(task_id),
        keys.export(export_id),
        keys.task_exports(task_id),
    ]
    return {
        "inflight": await redis.get(keys.inflight(fingerprint)),
        "task": await redis.get(keys.task(task_id)),
        "export": await redis.get(keys.export(export_id)),
        "followers": await redis.smembers(keys.task_exports(task_id)),  # type: ignore[misc]
        "open": await redis.zscore(keys.OPEN_TASKS, task_id),
        "waiting": await redis.zscore(keys.UPSTREAM_WAITING, task_id),
        "client": await redis.zscore(keys.client_exports("alice"), export_id),
        "ttls_set": [0 < await redis.ttl(key) <= TTL for key in ttl_keys],
    }


async def test_fast_and_transactional_submissions_store_the_same_records(
    redis_client: Redis,
) -> None:
    store = ExportStore(redis_client, record_ttl=TTL)
    fast = await store.submit(*_pair(1, "fp-fast"), reusable=lambda task: False)
    # A stale completed-task pointer sends the next one down the transactional path, which
    # finds no such task and makes a new one, as the fast path would have.
    await redis_client.set(keys.latest("fp-slow"), "tsk_gone")
    # From the same state: the client's queue clock (fair queueing) as the first one found it.
    await redis_client.delete(keys.client_queue("alice"))
    slow = await store.submit(*_pair(2, "fp-slow"), reusable=lambda task: False)

    assert fast.new_task and slow.new_task
    fast_state = await _state(redis_client, 1, "fp-fast")
    slow_state = await _state(redis_client, 2, "fp-slow")
    assert fast_state["inflight"] == "tsk_1" and slow_state["inflight"] == "tsk_2"
    assert fast_state["ttls_set"] == slow_state["ttls_set"] == [True] * 4
    fast_task, slow_task = (json.loads(str(st["task"])) for st in (fast_state, slow_state))
    fast_export, slow_export = (json.loads(str(st["export"])) for st in (fast_state, slow_state))
    assert fast_task | {"id": "", "fingerprint": ""} == slow_task | {"id": "", "fingerprint": ""}
    assert fast_export | {"id": "", "task_id": "", "metadata": None} == slow_export | {
        "id": "",
        "task_id": "",
        "metadata": None,
    }
    assert (fast_export["task_id"], slow_export["task_id"]) == ("tsk_1", "tsk_2")
    for name in ("open", "waiting", "client"):
        assert fast_state[name] == slow_state[name] is not None
    assert fast_state["followers"] == {"exp_1"} and slow_state["followers"] == {"exp_2"}


async def test_a_fast_submission_dispatches_into_free_slots_oldest_first(
    redis_client: Redis,
) -> None:
    store = ExportStore(redis_client, record_ttl=TTL)
    await redis_client.zadd(keys.UPSTREAM_WAITING, {"tsk_older": 1})  # waiting before them
    first = await store.submit(*_pair(1, "fp-1"), reusable=lambda task: False, max_active=2)
    second = await store.submit(*_pair(2, "fp-2"), reusable=lambda task: False, max_active=2)
    third = await store.submit(*_pair(3, "fp-3"), reusable=lambda task: False, max_active=3)
    unlimited = await store.submit(*_pair(4, "fp-4"), reusable=lambda task: False)

    assert first.dispatched == ["tsk_older", "tsk_1"]  # first in, first out
    assert second.dispatched == []  # both slots taken: it waits
    assert third.dispatched == ["tsk_2"]  # one more slot: the oldest waiting one gets it
    assert unlimited.dispatched is None  # not asked to dispatch: the caller does
    assert await redis_client.zrange(keys.UPSTREAM_ACTIVE, 0, -1) == ["tsk_older", "tsk_1", "tsk_2"]
    assert await redis_client.zrange(keys.UPSTREAM_WAITING, 0, -1) == ["tsk_3", "tsk_4"]
