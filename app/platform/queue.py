"""The job queue adapter: ``app.platform.jobs.JobQueue`` implemented with arq.

This is the only module that knows how arq stores and enqueues jobs, so the queue could be
swapped without touching a service. The API imports it to schedule jobs, the worker to run
them (``worker.tasks`` holds the thin job functions).
"""

from __future__ import annotations

from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from app.config import Settings
from app.platform import keys
from app.platform.connections import redis_pool
from app.platform.jobs import JobName


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


# arq runs due jobs in the order of their scores (due times): an urgent job is scored as if due
# this long ago, which puts it ahead of every job that fell due since, however long the
# backlog (a webhook's first attempt does not wait behind a thousand polls).
HEAD_OF_LINE_MS = 3_600_000  # one hour

# arq's ``enqueue_job`` as one script: the same checks and the same two writes (the pickled
# job with its expiry, the queue entry), in one round trip instead of three (WATCH + EXISTS,
# then MULTI/PSETEX/ZADD/EXEC), atomically without a WATCH, so a connection lost midway raises
# instead of answering "already enqueued" (arq turns that WatchError into None). A poll step
# enqueues its successor on every run, so this is one of a worker's largest Redis costs.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

# Clear a job that is neither in the queue nor running (its queue entry was lost) so that it
# can be enqueued again; a job still queued or running is left alone.
_CLEAR_LOST_JOB = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""


# Webhook deliveries wait in a queue of their own, served in every worker process by a lane of
# its own (``worker.main``): however many polls fall due at once, a delivery never waits for
# a slot behind them. Every other job goes to arq's default queue.
_QUEUE_OF: dict[JobName, str] = {"deliver_event": keys.DELIVERY_QUEUE}


class ArqJobQueue:
    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool
        self._clear_lost = pool.register_script(_CLEAR_LOST_JOB)
        self._enqueue = pool.register_script(_ENQUEUE)

    @property
    def queue_key(self) -> str:
        """arq's default queue: every job but deliveries."""
        name: str = self.pool.default_queue_name
        return name

    @property
    def queue_keys(self) -> tuple[str, ...]:
        return (self.queue_key, keys.DELIVERY_QUEUE)

    def queue_of(self, job: JobName) -> str:
        return _QUEUE_OF.get(job, self.queue_key)

    @classmethod
    async def connect(cls, settings: Settings) -> ArqJobQueue:
        """A queue for the API process. Unlike ``create_pool``'s, its connections time out
        (like ``app.wiring.runtime``'s), so a request never hangs on an unresponsive Redis."""
        redis = ArqRedis(redis_pool(settings.redis_url, encoding="utf8"))
        redis.auto_close_connection_pool = True  # aclose() closes the pool too
        await redis.ping()
        return cls(redis)

    async def schedule(
        self, job: JobName, subject_id: str, *, key: str, delay: float = 0, urgent: bool = False
    ) -> bool:
        enqueued_at = timestamp_ms()
        if delay > 0:
            due = enqueued_at + round(delay * 1000)
        elif urgent:
            due = enqueued_at - HEAD_OF_LINE_MS
        else:
            due = enqueued_at
        # as arq: a job not started by its due time plus expires_extra_ms is dropped
        expires = max(due - enqueued_at, 0) + self.pool.expires_extra_ms
        payload = serialize_job(
            job, (subject_id,), {}, None, enqueued_at, serializer=self.pool.job_serializer
        )
        enqueued = await self._enqueue(
            keys=[job_key_prefix + key, result_key_prefix + key, self.queue_of(job)],
            args=[key, due, expires, payload],
        )
        return bool(enqueued)

    async def is_scheduled(self, key: str) -> bool:
        found = await self.pool.exists(job_key_prefix + key, in_progress_key_prefix + key)
        return bool(found)

    async def ensure_scheduled(self, job: JobName, subject_id: str, *, key: str) -> bool:
        lost = await self._clear_lost(
            keys=[job_key_prefix + key, in_progress_key_prefix + key, self.queue_of(job)],
            args=[key],
        )
        if not lost:
            return False
        return await self.schedule(job, subject_id, key=key)

    async def close(self) -> None:
        await self.pool.aclose()
