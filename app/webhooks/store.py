"""Every Redis read and write of webhook events and delivery attempts (key names:
``app.platform.keys``).

An event changes in optimistic transactions (WATCH the event, read, decide, MULTI/EXEC), and an
attempt is appended to the export's attempt log in the same transaction as the event change
that records it, so the log and the event never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.platform import keys
from app.webhooks.schemas import Attempt, Event

# Give-ups are counted over the last day (the operator console's health strip).
GIVE_UPS_KEPT_MS = 86_400_000

EventChange = Callable[[Event], tuple[Event, Attempt | None] | None]


class WebhookStore:
    def __init__(self, redis: Redis, *, record_ttl: float) -> None:
        self.redis = redis
        self._ttl = int(record_ttl)

    # -- reads -----------------------------------------------------------------------------

    async def get_event(self, event_id: str) -> Event | None:
        raw = await self.redis.get(keys.event(event_id))
        return Event.model_validate_json(raw) if raw else None

    async def events_of(self, export_id: str) -> list[Event]:
        ids: list[str] = await self.redis.lrange(keys.export_events(export_id), 0, -1)  # type: ignore[misc]
        if not ids:
            return []
        raws = await self.redis.mget([keys.event(i) for i in ids])
        return [Event.model_validate_json(r) for r in raws if r]

    async def latest_event_id(self, export_id: str) -> str | None:
        value: str | None = await self.redis.lindex(keys.export_events(export_id), -1)  # type: ignore[misc]
        return value

    async def attempts_of(self, export_id: str) -> list[Attempt]:
        raws: list[str] = await self.redis.lrange(keys.export_attempts(export_id), 0, -1)  # type: ignore[misc]
        return [Attempt.model_validate_json(r) for r in raws]

    async def due_event_ids(self, before: datetime, limit: int = 1000) -> list[str]:
        """Pending events whose next attempt was due before ``before`` (for the sweep)."""
        found = await self.redis.zrangebyscore(
            keys.EVENTS_PENDING, "-inf", _ms(before), start=0, num=limit
        )
        return [str(f) for f in found]

    # -- writes ----------------------------------------------------------------------------

    async def create_event(self, event: Event) -> bool:
        """Store a new event and list it under its export; False when it already exists (a
        second publication of the same event is a no-op)."""
        event_key = keys.event(event.id)

        async def attempt(pipe: Pipeline) -> bool:
            await pipe.watch(event_key)
            if await pipe.exists(event_key):
                pipe.multi()
                return False
            pipe.multi()
            pipe.set(event_key, event.model_dump_json(), ex=self._ttl)
            pipe.rpush(keys.export_events(event.export_id), event.id)
            pipe.expire(keys.export_events(event.export_id), self._ttl)
            self._queue_pending(pipe, event)
            return True

        created: bool = await self.redis.transaction(attempt, value_from_callable=True)
        return created

    async def update_event(
        self, event_id: str, change: EventChange
    ) -> tuple[Event | None, Attempt | None]:
        """Apply ``change`` atomically: it returns the new event and, optionally, an attempt to
        append to the export's log, or None to leave everything as it is. Returns the stored
        event after the change (None: no such event, or ``change`` declined) and the attempt."""
        event_key = keys.event(event_id)

        async def attempt(pipe: Pipeline) -> tuple[Event | None, Attempt | None]:
            await pipe.watch(event_key)
            raw = await pipe.get(event_key)
            if not raw:
                pipe.multi()
                return None, None
            decided = change(Event.model_validate_json(raw))
            pipe.multi()
            if decided is None:
                return None, None
            updated, logged = decided
            pipe.set(event_key, updated.model_dump_json(), ex=self._ttl)
            if logged is not None:
                log_key = keys.export_attempts(updated.export_id)
                pipe.rpush(log_key, logged.model_dump_json())
                pipe.expire(log_key, self._ttl)
            self._queue_pending(pipe, updated)
            if logged is not None and logged.outcome == "gave_up":
                self._queue_give_up(pipe, updated, logged)
            return updated, logged

        result: tuple[Event | None, Attempt | None] = await self.redis.transaction(
            attempt, value_from_callable=True
        )
        return result

    @staticmethod
    def _queue_give_up(pipe: Pipeline, event: Event, logged: Attempt) -> None:
        at = _ms(logged.at)
        pipe.zadd(keys.WEBHOOK_GIVE_UPS, {f"{event.id}:{logged.attempt}": at})
        pipe.zremrangebyscore(keys.WEBHOOK_GIVE_UPS, "-inf", at - GIVE_UPS_KEPT_MS)

    async def give_ups_since(self, since: datetime) -> int:
        """Events given up on (a dead letter each time) since ``since`` (at most a day ago)."""
        count: int = await self.redis.zcount(keys.WEBHOOK_GIVE_UPS, _ms(since), "+inf")
        return count

    def _queue_pending(self, pipe: Pipeline, event: Event) -> None:
        if event.state == "pending":
            due = event.next_attempt_at or event.in_flight_since or event.timestamp
            pipe.zadd(keys.EVENTS_PENDING, {event.id: _ms(due)})
        else:
            pipe.zrem(keys.EVENTS_PENDING, event.id)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
