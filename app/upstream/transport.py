"""``ShardedTransport``: upstream connections kept in several small pools instead of one big one.

httpcore's connection pool does work in proportion to its size on every request it starts and
every response it closes (it walks its connections and its waiting requests, and asks each
idle connection whether the server closed it). With one pool of 100 connections under a
worker's 200 concurrent poll steps, that walk cost more than the request itself: 1.8 ms of
CPU per upstream request, against 0.8-1.0 ms spread over 25-50 pools of 2-4 connections
(docs/PERFORMANCE.md, "What limits the worker"). Each request goes to the pool with the fewest
requests in flight, and keeps its connection until its response is closed.

Every connection of every pool is kept alive (up to httpx's keep-alive expiry): with one pool of
100 connections and 20 kept alive, a burst opened and closed a connection per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

SHARDS = 25
CONNECTIONS_PER_SHARD = 4


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed (once)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        shards: int = SHARDS,
        connections_per_shard: int = CONNECTIONS_PER_SHARD,
        **options: Any,
    ) -> None:
        if shards < 1 or connections_per_shard < 1:
            raise ValueError("shards and connections_per_shard must be at least 1")
        limits = httpx.Limits(
            max_connections=connections_per_shard,
            max_keepalive_connections=connections_per_shard,
        )
        # One TLS context for all pools: each would otherwise load the CA bundle itself (25
        # of them added half a second to every process start).
        options.setdefault("verify", httpx.create_ssl_context())
        self._pools = [httpx.AsyncHTTPTransport(limits=limits, **options) for _ in range(shards)]
        self.in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        load = self.in_flight
        index = load.index(min(load))
        load[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            load[index] -= 1
            raise

        def release() -> None:
            load[index] -= 1

        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(stream, release)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()
