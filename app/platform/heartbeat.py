"""Worker heartbeats and the readiness question they answer.

Each worker process writes its own member of ``gw:workers`` (score: unix time of its last beat)
every few seconds, and removes it on a clean shutdown. ``/readyz`` asks for the newest beat:
the gateway can work when at least one worker beat within ``GATEWAY_READY_WORKER_SECONDS``.
Unlike arq's single shared health key, one worker's beat never hides another's absence, and
the set says how many workers are alive.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from redis.asyncio import Redis

from app.platform import keys

# Members not refreshed for this long belong to workers that died without a clean shutdown.
FORGET_AFTER_SECONDS = 86_400.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def beat_interval(
    heartbeat_seconds: float, ready_worker_seconds: float, recovery_seconds: float
) -> float:
    """Beat often enough that a live worker never looks stale (nor dead): at least three beats
    per readiness window and five per recovery window."""
    return max(0.1, min(heartbeat_seconds, ready_worker_seconds / 3, recovery_seconds / 5))


class Heartbeat:
    def __init__(self, redis: Redis, worker_id: str) -> None:
        self.redis = redis
        self.worker_id = worker_id

    async def beat(self) -> bool:
        """Beat; False when this worker's member was missing (the first beat, or the worker
        was presumed dead meanwhile: its heartbeat lapsed, and its jobs were handed back)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.WORKERS, {self.worker_id: now})
            pipe.zremrangebyscore(keys.WORKERS, "-inf", now - FORGET_AFTER_SECONDS)
            added, _ = await pipe.execute()
        return not added

    async def remove(self) -> None:
        await self.redis.zrem(keys.WORKERS, self.worker_id)


async def lapsed_workers(redis: Redis, silent_seconds: float) -> tuple[float, list[str]]:
    """Workers whose last beat is more than ``silent_seconds`` old (presumed dead), and the
    cut-off time they were found with."""
    cutoff = time.time() - silent_seconds
    found = await redis.zrangebyscore(keys.WORKERS, "-inf", f"({cutoff}")
    return cutoff, [m.decode() if isinstance(m, bytes) else str(m) for m in found]


async def newest_beat_age(redis: Redis) -> float | None:
    """Seconds since the most recent heartbeat of any worker (None: no worker ever beat)."""
    newest = await redis.zrange(keys.WORKERS, -1, -1, withscores=True)
    if not newest:
        return None
    return max(0.0, time.time() - float(newest[0][1]))


async def workers_alive(redis: Redis, within_seconds: float) -> int:
    """Workers whose last heartbeat is at most ``within_seconds`` old."""
    count: int = await redis.zcount(keys.WORKERS, time.time() - within_seconds, "+inf")
    return count
