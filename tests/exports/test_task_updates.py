"""``ExportStore.update_task`` on a real Redis: the compare-and-set fast path for a change
between unfinished states, and its fall-back to the transaction when another writer changed the
record between the read and the write (the change is then applied to the fresh record, so no
write is lost)."""

from __future__ import annotations

import redis
from redis.asyncio import Redis

from app.exports.schemas import TaskRecord
from app.exports.store import ExportStore
from app.platform import keys
from app.platform.clock import utcnow


def _task() -> TaskRecord:
    return TaskRecord(
        id="tsk_updates",
        fingerprint="fp",
        filter=None,
        fields=None,
        site_id=None,
        status="running",
        created_at=utcnow(),
    )


def _polled(task: TaskRecord) -> TaskRecord:
    return task.model_copy(update={"polls": task.polls + 1})


async def test_an_unfinished_change_is_written_with_its_ttl(redis_client: Redis) -> None:
    store = ExportStore(redis_client, record_ttl=3600)
    await redis_client.set(keys.task("tsk_updates"), _task().model_dump_json(), ex=60)
    update = await store.update_task("tsk_updates", _polled)
    assert update.changed and update.after is not None and update.after.polls == 1
    stored = await store.get_task("tsk_updates")
    assert stored is not None and stored.polls == 1
    assert 3500 < await redis_client.ttl(keys.task("tsk_updates")) <= 3600


async def test_a_record_changed_after_the_read_gets_the_change_applied_to_it(
    redis_client: Redis, redis_url: str
) -> None:
    store = ExportStore(redis_client, record_ttl=3600)
    task_key = keys.task("tsk_updates")
    await redis_client.set(task_key, _task().model_dump_json())
    other_writer = redis.Redis.from_url(redis_url, decode_responses=True)
    seen_polls: list[int] = []

    def change(task: TaskRecord) -> TaskRecord:
        seen_polls.append(task.polls)
        if len(seen_polls) == 1:  # between our read and our write, someone polls 5 times
            other_writer.set(task_key, task.model_copy(update={"polls": 5}).model_dump_json())
        return _polled(task)

    try:
        update = await store.update_task("tsk_updates", change)
    finally:
        other_writer.close()
    assert seen_polls == [0, 5]  # the compare-and-set refused; the transaction re-read
    assert update.after is not None and update.after.polls == 6
    stored = await store.get_task("tsk_updates")
    assert stored is not None and stored.polls == 6


async def test_a_finishing_change_still_releases_the_slot(redis_client: Redis) -> None:
    store = ExportStore(redis_client, record_ttl=3600)
    await redis_client.set(keys.task("tsk_updates"), _task().model_dump_json())
    await redis_client.zadd(keys.UPSTREAM_ACTIVE, {"tsk_updates": 1})
    await redis_client.set(keys.inflight("fp"), "tsk_updates")
    update = await store.update_task(
        "tsk_updates", lambda t: t.model_copy(update={"status": "failed"})
    )
    assert update.changed
    assert await redis_client.zscore(keys.UPSTREAM_ACTIVE, "tsk_updates") is None
    assert await redis_client.get(keys.inflight("fp")) is None


async def test_a_missing_record_is_left_missing(redis_client: Redis) -> None:
    store = ExportStore(redis_client, record_ttl=3600)
    update = await store.update_task("tsk_nothing", _polled)
    assert update.after is None and not update.changed
    assert await redis_client.exists(keys.task("tsk_nothing")) == 0
