"""Per-client concurrency caps (how many of something a client has open at once), in Redis.

Each open thing is a lease in a sorted set per client, scored by when it lapses (Redis's own
clock, so every API process counts against one set and no two clocks have to agree). One
script prunes lapsed leases, counts and admits atomically; a lease is returned when the thing
ends, and lapses by itself after ``lease_seconds`` if its process died first, so a crash can
never lock a client out for longer than that. A refusal says when to try again
(``Retry-After``): when the oldest lease lapses, at most ``retry_cap_seconds``.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from app.platform.errors import TooManyRequests

_TAKE = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], lease)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) - now)
"""


@dataclass
class Lease:
    """One admitted thing; ``release`` (idempotent) gives its place back."""

    redis: Redis
    key: str
    token: str
    released: bool = False

    async def release(self) -> None:
        if not self.released:
            await self.redis.zrem(self.key, self.token)
            self.released = True


class ClientLeases:
    def __init__(
        self,
        redis: Redis,
        *,
        limit: int,
        lease_seconds: float,
        what: str,
        retry_cap_seconds: float = 10,
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.what = what
        self.retry_cap_seconds = retry_cap_seconds
        self._take = redis.register_script(_TAKE)

    async def try_take(self, key: str) -> Lease | None:
        """A lease under ``key`` (one client's set), or None when the client has ``limit``."""
        token = secrets.token_hex(8)
        wait_ms = int(await self._take(keys=[key], args=[self.limit, self.lease_ms, token]))
        return None if wait_ms > 0 else Lease(self.redis, key, token)

    async def take(self, key: str) -> Lease:
        """A lease under ``key`` (one client's set), or 429 when the client has ``limit``."""
        token = secrets.token_hex(8)
        wait_ms = int(await self._take(keys=[key], args=[self.limit, self.lease_ms, token]))
        if wait_ms > 0:
            retry_after = max(1, min(math.ceil(wait_ms / 1000), int(self.retry_cap_seconds)))
            raise TooManyRequests(
                f"at most {self.limit} {self.what} may be open at once per client; "
                f"retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
        return Lease(self.redis, key, token)
