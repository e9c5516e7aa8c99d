"""A sliding-window request budget for upstream, shared by every process through Redis.

``GATEWAY_UPSTREAM_MAX_RPS`` caps upstream requests in *any* one-second window, across all API
and worker processes, as upstream counts them: by when a request *arrives* there. The gateway
cannot see that moment, only bound it: a request arrives after its permit was granted and
before its answer came back. So each request is one member of a sorted set whose score is the
latest moment it can have arrived:

* when the permit is granted: permit time + ``hold`` (an upper bound on a request's life, so a
  process that dies mid-request frees its share after ``hold`` at the latest);
* once the answer is back (``release``): the time of the answer.

A new permit is granted only while fewer than ``limit`` members score later than ``now -
window``. Every earlier request then arrived at least one window before the new one can, which
holds however late a busy machine puts requests on the wire. The price is that a request uses
the budget for its own duration plus one window. Scores use Redis' own clock (``TIME`` inside
the scripts), so processes agree on time; a small margin covers clock granularity.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.platform import keys

_PERMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local hold = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + hold, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil((window + hold) / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.floor((tonumber(oldest[2]) + window - now) / 1000) + 1
"""

_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], 'XX', 'LT', now, ARGV[1])
return 0
"""

MARGIN_SECONDS = 0.05
MAX_SLEEP_SECONDS = 0.25  # re-check at least this often: in-flight requests end unannounced


class RequestPacer:
    """``async with pacer.request():`` waits until this process may send one upstream request
    and keeps it counted until the block ends (and one window more)."""

    def __init__(self, redis: Redis, max_rps: float, *, hold_seconds: float = 120.0) -> None:
        if max_rps >= 1:
            self._limit, window = math.floor(max_rps), 1.0
        else:
            self._limit, window = 1, 1.0 / max_rps
        self._window_us = int((window + MARGIN_SECONDS) * 1_000_000)
        self._hold_us = int(hold_seconds * 1_000_000)
        self._redis = redis
        self._permit = redis.register_script(_PERMIT)
        self._release = redis.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        member = await self.permit()
        try:
            yield
        finally:
            await self.release(member)

    async def permit(self) -> str:
        """Wait for a share of the budget; returns the member to ``release`` afterwards."""
        member = secrets.token_hex(8)
        while True:
            wait_ms = int(
                await self._permit(
                    keys=[keys.UPSTREAM_REQUESTS],
                    args=[self._limit, self._window_us, member, self._hold_us],
                )
            )
            if wait_ms <= 0:
                return member
            # A little jitter, so waiting processes do not all ask again at the same instant.
            await asyncio.sleep(min(wait_ms / 1000, MAX_SLEEP_SECONDS) * random.uniform(1, 1.2))

    async def release(self, member: str) -> None:
        """The request is answered: it counts for one more window from now, then expires."""
        # On a Redis error the member simply counts until permit time + hold.
        with contextlib.suppress(RedisError):
            await self._release(keys=[keys.UPSTREAM_REQUESTS], args=[member])
