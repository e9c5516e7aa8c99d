"""A sliding-window request budget for upstream, shared by every process through Redis.

``GATEWAY_UPSTREAM_MAX_RPS`` caps upstream requests in *any* one-second window, across all API
and worker processes. Each permit is one member of a sorted set scored by Redis' own clock
(``TIME`` inside the script), so processes on different machines agree on time. The window is
padded by a small margin so that network jitter between permit and arrival upstream cannot
squeeze one request too many into a window as upstream measures it.
"""

from __future__ import annotations

import asyncio
import math
import secrets

from redis.asyncio import Redis

from app import keys

_PERMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.floor((tonumber(oldest[2]) + window - now) / 1000) + 1
"""

JITTER_MARGIN_SECONDS = 0.06


class RequestPacer:
    """``await pacer.permit()`` returns once this process may send one upstream request."""

    def __init__(self, redis: Redis, max_rps: float) -> None:
        if max_rps >= 1:
            self._limit, window = math.floor(max_rps), 1.0
        else:
            self._limit, window = 1, 1.0 / max_rps
        self._window_us = int((window + JITTER_MARGIN_SECONDS) * 1_000_000)
        self._script = redis.register_script(_PERMIT)

    async def permit(self) -> None:
        while True:
            wait_ms = int(
                await self._script(
                    keys=[keys.UPSTREAM_REQUESTS],
                    args=[self._limit, self._window_us, secrets.token_hex(8)],
                )
            )
            if wait_ms <= 0:
                return
            await asyncio.sleep(wait_ms / 1000)
