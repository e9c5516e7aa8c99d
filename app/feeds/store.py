"""Every Redis read and write of feeds (key names: ``app.platform.keys``).

A feed is one JSON document. Every change is an optimistic transaction on it (WATCH, read,
decide, MULTI/EXEC, again when another process got there first), and the same transaction
keeps the indexes in step: the client's list and the scheduler's ``gw:feeds:due``. That is how
one due run is claimed once across any number of workers: the claim is a change that only
succeeds on the record as read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.feeds.schemas import FeedRecord
from app.platform import keys
from app.platform.indexes import newest_before

CreateOutcome = Literal["created", "full"]


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """A feed before and after ``FeedStore.update`` (both None: no such feed)."""

    before: FeedRecord | None
    after: FeedRecord | None

    @property
    def changed(self) -> bool:
        return self.before is not None and self.after is not self.before


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class FeedStore:
    def __init__(self, redis: Redis, *, record_ttl: float) -> None:
        self.redis = redis
        self._ttl_ms = int(record_ttl * 1000)

    async def get(self, feed_id: str) -> FeedRecord | None:
        raw = await self.redis.get(keys.feed(feed_id))
        return FeedRecord.model_validate_json(raw) if raw else None

    async def get_many(self, feed_ids: list[str]) -> list[FeedRecord | None]:
        if not feed_ids:
            return []
        raws = await self.redis.mget([keys.feed(f) for f in feed_ids])
        return [FeedRecord.model_validate_json(r) if r else None for r in raws]

    async def create(self, feed: FeedRecord, max_feeds: int) -> CreateOutcome:
        """Store a new feed unless the client already has ``max_feeds`` (atomic)."""
        index = keys.client_feeds(feed.client_id)

        async def attempt(pipe: Pipeline) -> CreateOutcome:
            await pipe.watch(index)
            if await pipe.zcard(index) >= max_feeds:
                return "full"
            pipe.multi()
            pipe.set(keys.feed(feed.id), feed.model_dump_json())
            pipe.zadd(index, {feed.id: _ms(feed.created_at)})
            pipe.zadd(keys.ALL_FEEDS, {feed.id: _ms(feed.created_at)})
            self._queue_due(pipe, feed)
            return "created"

        outcome: CreateOutcome = await self.redis.transaction(attempt, value_from_callable=True)
        return outcome

    async def update(
        self, feed_id: str, change: Callable[[FeedRecord], FeedRecord | None]
    ) -> FeedUpdate:
        """Apply ``change`` (None: leave it) to the stored feed atomically, indexes too."""
        key = keys.feed(feed_id)

        async def attempt(pipe: Pipeline) -> FeedUpdate:
            await pipe.watch(key)
            raw = await pipe.get(key)
            if not raw:
                return FeedUpdate(None, None)
            current = FeedRecord.model_validate_json(raw)
            updated = change(current)
            pipe.multi()
            if updated is None or updated == current:
                return FeedUpdate(current, current)
            pipe.set(key, updated.model_dump_json())
            self._queue_due(pipe, updated)
            return FeedUpdate(current, updated)

        result: FeedUpdate = await self.redis.transaction(attempt, value_from_callable=True)
        return result

    async def delete(self, feed: FeedRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.feed(feed.id), keys.feed_runs(feed.id))
            pipe.zrem(keys.client_feeds(feed.client_id), feed.id)
            pipe.zrem(keys.ALL_FEEDS, feed.id)
            pipe.zrem(keys.FEEDS_DUE, feed.id)
            await pipe.execute()

    @staticmethod
    def _queue_due(pipe: Pipeline, feed: FeedRecord) -> None:
        due = feed.due_at()
        if due is None:
            pipe.zrem(keys.FEEDS_DUE, feed.id)
        else:
            pipe.zadd(keys.FEEDS_DUE, {feed.id: _ms(due)})

    async def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of feeds due at or before ``now``, most overdue first."""
        ids = await self.redis.zrangebyscore(keys.FEEDS_DUE, "-inf", _ms(now), start=0, num=limit)
        return [str(i) for i in ids]

    async def due_again(self, feed_id: str, at: datetime) -> None:
        """Look at the feed again at ``at`` (only if it is still in the index)."""
        await self.redis.zadd(keys.FEEDS_DUE, {feed_id: _ms(at)}, xx=True)

    async def forget_due(self, feed_id: str) -> None:
        await self.redis.zrem(keys.FEEDS_DUE, feed_id)

    async def add_run(self, feed_id: str, export_id: str, created_at: datetime) -> None:
        """Index a run; runs whose export records have expired leave the index."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.feed_runs(feed_id), {export_id: _ms(created_at)})
            pipe.zremrangebyscore(keys.feed_runs(feed_id), "-inf", _ms(created_at) - self._ttl_ms)
            await pipe.execute()

    async def client_feeds_before(
        self, client_id: str, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        return await newest_before(self.redis, keys.client_feeds(client_id), before, count)

    async def all_feeds_before(
        self, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        """As ``client_feeds_before``, over every client's feeds (the operator console)."""
        return await newest_before(self.redis, keys.ALL_FEEDS, before, count)

    async def runs_before(
        self, feed_id: str, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        return await newest_before(self.redis, keys.feed_runs(feed_id), before, count)
