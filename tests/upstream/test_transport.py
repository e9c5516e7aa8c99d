"""The upstream client's ShardedTransport against a real HTTP server: requests spread over the
small pools, every connection is kept and reused, and each pool's count of requests in flight
returns to zero whatever happens to a request."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request

from app.platform.localredis import free_port
from app.upstream.transport import ShardedTransport
from tests.support import ServerThread


@pytest.fixture(scope="module")
def port_server() -> Iterator[tuple[ServerThread, Counter[int]]]:
    """Answers each request after a short pause with nothing; counts requests per client port
    (one port per connection)."""
    ports: Counter[int] = Counter()
    app = FastAPI()

    @app.get("/slow")
    async def slow(request: Request) -> dict[str, int]:
        assert request.client is not None
        ports[request.client.port] += 1
        await asyncio.sleep(0.05)
        return {"port": request.client.port}

    server = ServerThread(app).start()
    yield server, ports
    server.stop()


async def test_requests_spread_over_every_pool_and_connections_are_reused(
    port_server: tuple[ServerThread, Counter[int]],
) -> None:
    server, ports = port_server
    ports.clear()
    transport = ShardedTransport(shards=4, connections_per_shard=2)
    async with httpx.AsyncClient(base_url=server.url, transport=transport) as client:
        for _ in range(3):  # three waves of 40 concurrent requests
            answers = await asyncio.gather(*(client.get("/slow") for _ in range(40)))
            assert [a.status_code for a in answers] == [200] * 40
            assert transport.in_flight == [0, 0, 0, 0]
    # 4 pools x 2 connections, all used, all kept alive across the waves: 8 connections for
    # 120 requests (one pool of 100 with 20 kept alive would have opened one per request
    # beyond the 20).
    assert len(ports) == 8
    assert sum(ports.values()) == 120


async def test_a_failed_request_frees_its_pool() -> None:
    transport = ShardedTransport(shards=3, connections_per_shard=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")
        assert transport.in_flight == [0, 0, 0]


async def test_a_streamed_response_holds_its_pool_until_closed(
    port_server: tuple[ServerThread, Counter[int]],
) -> None:
    server, _ = port_server
    transport = ShardedTransport(shards=2, connections_per_shard=1)
    async with (
        httpx.AsyncClient(base_url=server.url, transport=transport) as client,
        client.stream("GET", "/slow") as first,
    ):
        assert sorted(transport.in_flight) == [0, 1]
        async with client.stream("GET", "/slow") as second:  # goes to the idle pool
            assert transport.in_flight == [1, 1]
            await second.aread()  # read to the end: closed
            assert sorted(transport.in_flight) == [0, 1]
        await first.aread()
        assert transport.in_flight == [0, 0]


def test_every_pool_shares_one_tls_context() -> None:
    # each pool loading the CA bundle itself cost half a second at every process start
    transport = ShardedTransport(shards=5)
    contexts = {id(pool._pool._ssl_context) for pool in transport._pools}
    assert len(contexts) == 1


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShardedTransport(shards=0)
