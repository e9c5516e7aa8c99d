"""How a worker's Redis clients ride out a Redis restart.

A Redis that restarts (a deploy, a failover, a crash with ``appendonly yes``) drops every
connection. Without a policy, redis-py raises on the first failed command: for the API that
is right (the caller gets a 503 at once and retries), but in a worker a job dies half done,
and arq's own poll loop dies with it, taking the worker process down. With this policy, a
command that meets a dropped or refused connection reconnects and is sent again, with
exponential backoff with full jitter (each wait drawn between 0 and 50 ms doubling, at most
1 s), for about ``GATEWAY_WORKER_REDIS_RETRY_SECONDS`` in all. The jitter matters when many
workers lose Redis at once (a restart, a failover): without it they would all reconnect in
lock-step, at the same instants. A transaction that was WATCHing keys is not resent
blindly: redis-py raises WatchError and our optimistic transactions start over from a fresh
read, as they do when another process got there first.
"""

from __future__ import annotations

from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 1.0


def retry_errors() -> list[type[Exception]]:
    """The errors worth reconnecting for (a fresh list: redis-py appends to it). OSError is
    there because redis-py 5 retries a refused *connect* only when it is listed: without it,
    taking a connection from the pool fails at once while Redis is down."""
    return [RedisConnectionError, RedisTimeoutError, OSError]


def redis_retry(total_seconds: float) -> Retry:
    """A retry policy whose jittered backoff adds up to ``total_seconds`` on average (each
    wait is uniform between 0 and its exponential bound, so half the bound on average)."""
    retries, waited = 0, 0.0
    while waited < total_seconds:
        retries += 1
        waited += min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**retries) / 2
    backoff = ExponentialWithJitterBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS)
    return Retry(backoff, retries)


RedisClient = TypeVar("RedisClient", bound=Redis)


def reconnecting(client: RedisClient, total_seconds: float) -> RedisClient:
    """Give ``client`` (and every connection its pool makes from now on) the retry policy."""
    retry = redis_retry(total_seconds)
    errors = retry_errors()
    retry.update_supported_errors(errors)
    client.connection_pool.connection_kwargs.update(retry=retry, retry_on_error=errors)
    client.set_retry(retry)
    return client
