"""How every process connects to Redis: one pool shape, bounded waits everywhere.

The API's stores, a worker's runtime and the job queue's API-side client all take their
connections from ``redis_pool``, so a Redis that stops answering costs a request at most
``REDIS_TIMEOUT_SECONDS``, never a hang.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from app.config import Settings

REDIS_TIMEOUT_SECONDS = 2.0
REDIS_MAX_CONNECTIONS = 200


def redis_pool(url: str, **options: object) -> BlockingConnectionPool:
    """A pool whose every wait is bounded by ``REDIS_TIMEOUT_SECONDS``: connecting, each
    reply, and waiting for a free connection. (The default pool connects new connections
    one at a time under a lock, so against a frozen Redis concurrent requests queued for
    2 s each; this one connects outside its lock.)"""
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        **options,
    )
    return pool


def connect_redis(settings: Settings) -> Redis:
    pool = redis_pool(settings.redis_url, decode_responses=True, health_check_interval=15)
    redis: Redis = Redis.from_pool(pool)
    return redis
