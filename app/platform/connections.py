"""How every process connects to Redis: one pool shape, bounded waits everywhere.

The API's stores, a worker's runtime, arq's own pool in the worker and the job queue's
API-side client all take their connections from ``redis_pool``, so they reach Redis the same
way, and a Redis that stops answering costs a request at most ``REDIS_TIMEOUT_SECONDS``,
never a hang.

Three shapes, from the settings:

* one server: ``GATEWAY_REDIS_URL`` (``redis://`` or ``rediss://``);
* TLS: a ``rediss://`` URL; ``GATEWAY_REDIS_TLS_CA_FILE`` names the CA bundle that signed the
  server's certificate (else the system's bundle is used);
* Sentinel: ``GATEWAY_REDIS_SENTINELS`` lists the Sentinels; each new connection asks them for
  the master of ``GATEWAY_REDIS_SENTINEL_MASTER`` (redis-py's ``Sentinel``), so a failover is
  followed by reconnecting, without a restart. ``GATEWAY_REDIS_URL`` then gives only the
  database, user and password; with ``rediss://`` the Sentinels and the servers are both
  reached over TLS.

A Redis URL can carry a password: it is never logged (``redacted``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff

from app.config import Settings

REDIS_TIMEOUT_SECONDS = 2.0
REDIS_MAX_CONNECTIONS = 200


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (finds the master, drops connections to a former one) with the bounded
    wait for a free connection of ``BlockingConnectionPool``."""


class FailoverConnection(SentinelManagedConnection):
    """A connection that asks Sentinel for the master before each connection attempt.

    redis-py's own retries a refused connect to the *same* address with the connection's
    retry policy, inside the retry that asks Sentinel again: with a worker's policy (about
    30 s) a client kept knocking on the dead master for that long after the failover was
    over. Here each address gets one attempt, and the policy's next attempt asks Sentinel."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        policy, self.retry = self.retry, Retry(NoBackoff(), 0)
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = policy


class FailoverSSLConnection(FailoverConnection, SSLConnection):
    pass


def redis_pool(settings: Settings, **options: Any) -> ConnectionPool:
    """A pool whose every wait is bounded by ``REDIS_TIMEOUT_SECONDS``: connecting, each
    reply, and waiting for a free connection. (The default pool connects new connections
    one at a time under a lock, so against a frozen Redis concurrent requests queued for
    2 s each; this one connects outside its lock.)"""
    bounded: dict[str, Any] = {
        "max_connections": REDIS_MAX_CONNECTIONS,
        "timeout": REDIS_TIMEOUT_SECONDS,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        **options,
    }
    tls = urlsplit(settings.redis_url).scheme == "rediss"
    if tls and settings.redis_tls_ca_file:
        bounded["ssl_ca_certs"] = settings.redis_tls_ca_file
    if not settings.redis_sentinels:
        pool = BlockingConnectionPool.from_url(settings.redis_url, **bounded)
        return pool
    url_options: dict[str, Any] = dict(parse_url(settings.redis_url))
    url_options.pop("connection_class", None)  # Sentinel's pool picks its own, by ``ssl``
    url_options.pop("host", None)
    url_options.pop("port", None)
    sentinel_options = {
        key: value for key, value in bounded.items() if key.startswith(("socket_", "ssl_"))
    }
    if tls:
        sentinel_options["ssl"] = True
    sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=sentinel_options)
    connection_class = FailoverSSLConnection if tls else FailoverConnection
    return BlockingSentinelPool(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master,
        sentinel,
        connection_class=connection_class,
        **url_options,
        **bounded,
    )


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    addresses = []
    for entry in settings.redis_sentinels:
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"GATEWAY_REDIS_SENTINELS: {entry!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def connect_redis(settings: Settings) -> Redis:
    pool = redis_pool(settings, decode_responses=True, health_check_interval=15)
    redis: Redis = Redis.from_pool(pool)
    return redis


def master_in_use(redis: Redis) -> str | None:
    """``host:port`` of the master a Sentinel-managed client last found (None when not on
    Sentinel, or before its first connection)."""
    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or pool.master_address is None:
        return None
    host, port = pool.master_address
    return f"{host}:{port}"


def described(settings: Settings) -> str:
    """Where this process finds Redis, for a log line: no password."""
    if settings.redis_sentinels:
        return (
            f"master {settings.redis_sentinel_master!r} via Sentinel "
            f"{','.join(settings.redis_sentinels)} ({redacted(settings.redis_url)})"
        )
    return redacted(settings.redis_url)


def redacted(url: str) -> str:
    """``url`` without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
