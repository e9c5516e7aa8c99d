"""Sliding-window rate limits kept in Redis: per client on ``POST /v1/exports``, per client
address on the operator console's sign-in.

Each client's accepted requests of the last minute live in a sorted set
(``gw:ratelimit:{client_id}``) scored by Redis's own clock, so every API process counts
against one window and no two process clocks have to agree. One script prunes, counts and
admits atomically; a refused request is not counted and learns when the oldest request in the
window leaves it (``Retry-After``). ``GATEWAY_CLIENT_RATE_LIMIT_PER_MINUTE=0`` (the default)
turns the limit off without touching Redis.
"""

from __future__ import annotations

import math
import secrets

from redis.asyncio import Redis

from app.platform import keys
from app.platform.errors import TooManyRequests

WINDOW_MS = 60_000

_ADMIT = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
"""


class SlidingWindow:
    """At most ``per_minute`` admissions per key in any sliding 60 s window (0: no limit)."""

    def __init__(self, redis: Redis, per_minute: int) -> None:
        self.per_minute = per_minute
        self._admit = redis.register_script(_ADMIT)

    async def wait_seconds(self, key: str) -> int:
        """Count one admission under ``key`` and answer 0, or, when its window is full, count
        nothing and answer how many seconds until it has room."""
        if self.per_minute <= 0:
            return 0
        wait_ms = int(
            await self._admit(keys=[key], args=[self.per_minute, WINDOW_MS, secrets.token_hex(8)])
        )
        return max(1, math.ceil(wait_ms / 1000)) if wait_ms > 0 else 0


class ClientRateLimiter:
    def __init__(self, redis: Redis, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = SlidingWindow(redis, per_minute)

    async def admit(self, client_id: str) -> None:
        """Count one request of ``client_id``, or raise 429 when its window is full."""
        retry_after = await self._window.wait_seconds(keys.client_rate_window(client_id))
        if retry_after > 0:
            raise TooManyRequests(
                f"more than {self.per_minute} export requests in a minute; "
                f"retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
