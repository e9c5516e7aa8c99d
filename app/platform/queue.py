"""The job queue adapter: ``app.platform.jobs.JobQueue`` implemented with arq.

This is the only module that knows how arq stores and enqueues jobs, so the queue could be
swapped without touching a service. The API imports it to schedule jobs, the worker to run
them (``worker.tasks`` holds the thin job functions).
"""

from __future__ import annotations

from dataclasses import replace

from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from app.config import Settings
from app.platform import keys
from app.platform.connections import redis_pool, sentinel_addresses
from app.platform.jobs import JobName


def arq_redis(settings: Settings) -> ArqRedis:
    """arq's client over ``app.platform.connections.redis_pool``: the API's queue and the
    worker's arq pool reach Redis as every other client does (Sentinel, TLS and its CA file,
    bounded waits). arq's own ``create_pool`` would not: with Sentinel it passes on neither
    the CA file, the timeouts nor a retry policy."""
    redis = ArqRedis(redis_pool(settings, encoding="utf8"))
    redis.auto_close_connection_pool = True  # aclose() closes the pool too
    return redis


def redis_settings(settings: Settings) -> RedisSettings:
    """The same connection as arq's ``RedisSettings`` (for ``arq.connections.create_pool``, as
    arq's own tools use it)."""
    plain = RedisSettings.from_dsn(settings.redis_url)
    if plain.ssl:
        plain = replace(plain, ssl_ca_certs=settings.redis_tls_ca_file)
    if not settings.redis_sentinels:
        return plain
    return replace(
        plain,
        host=sentinel_addresses(settings),
        sentinel=True,
        sentinel_master=settings.redis_sentinel_master,
    )


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


# Which jobs a worker holds, so that another can hand them back at once when it dies. arq marks
# a started job with ``arq:in-progress:{job id}`` (expiring after the worker's job_timeout +
# 10 s): while the marker lives no worker starts the job again. A worker killed mid-job leaves
# its markers behind, and its jobs would wait out that expiry (over two minutes by default).
#
# On start, a worker records each job it holds in its own hash, with the marker's absolute
# expiry (ms): that value identifies this one run's marker. Handing back a lapsed worker's jobs
# deletes a marker only if it is still that same marker: a job that has since finished and
# been started again elsewhere carries a newer marker (set after the first run ended) and is
# left alone, so a job never runs twice at once. The job itself stays in arq's queue while it
# runs (arq removes it when it finishes), so deleting the marker is all a rerun needs.
_NOW_MS = "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
_HOLD = (
    _NOW_MS
    + """
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + ttl))
return 1
"""
)
_HAND_BACK = (
    _NOW_MS
    + """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or tonumber(beat) >= tonumber(ARGV[2]) then
  return {0}
end
local held = redis.call('HGETALL', KEYS[2])
local freed = {1}
for i = 1, #held, 2 do
  local marker = ARGV[3] .. held[i]
  local ttl = redis.call('PTTL', marker)
  if ttl > 0 and math.abs(now + ttl - tonumber(held[i + 1])) <= tonumber(ARGV[4]) then
    redis.call('DEL', marker)
    freed[#freed + 1] = held[i]
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return freed
"""
)
# A worker killed between arq marking a job and recording it (a few milliseconds, but a busy
# worker starts jobs all the time) leaves a mark no worker holds. A due job whose mark no
# worker (alive, or dead and not yet handed back) holds, and that was set at least
# ``min_age`` ms ago, is that case: its mark goes too. A live worker records its job
# milliseconds after the mark; one that had not after a whole recovery window could not reach
# Redis for that long, and its heartbeat would have lapsed as well. Such marks come only from
# a dead worker, so this runs only for a while after one was found (``worker.recovery``).
_ORPHANS = (
    _NOW_MS
    + """
local held = {}
for _, worker in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, job in ipairs(redis.call('HKEYS', ARGV[5] .. worker .. ARGV[6])) do
    held[job] = true
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local freed = {}
for _, job in ipairs(due) do
  if not held[job] then
    local ttl = redis.call('PTTL', ARGV[2] .. job)
    if ttl > 0 and tonumber(ARGV[3]) - ttl >= tonumber(ARGV[4]) then
      redis.call('DEL', ARGV[2] .. job)
      freed[#freed + 1] = job
    end
  end
end
return freed
"""
)
# Due jobs looked at per queue: the running ones are the earliest due (arq starts jobs in due
# order), so a bounded look finds them without walking a whole backlog.
ORPHAN_SCAN_LIMIT = 500

# Two computations of one marker's expiry differ by a millisecond or two (Redis freezes its
# clock for a script's keys, not for TIME); a marker set by a later run differs by far more
# (it was set after the first run ended and its job was scheduled and picked up again).
MARKER_SLACK_MS = 20
# arq keeps a job's in-progress mark for the worker's job_timeout plus this (arq.worker:
# ``in_progress_timeout_s``; tests/test_arq_internals.py checks it).
IN_PROGRESS_EXTRA_SECONDS = 10


# Webhook deliveries wait in a queue of their own, served in every worker process by a lane of
# its own (``worker.main``): however many polls fall due at once, a delivery never waits for
# a slot behind them. Every other job goes to arq's default queue.
_QUEUE_OF: dict[JobName, str] = {"deliver_event": keys.DELIVERY_QUEUE}


class ArqJobQueue:
    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool
        self._clear_lost = pool.register_script(_CLEAR_LOST_JOB)
        self._enqueue = pool.register_script(_ENQUEUE)
        self._hold = pool.register_script(_HOLD)
        self._hand_back = pool.register_script(_HAND_BACK)
        self._orphans = pool.register_script(_ORPHANS)

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
        redis = arq_redis(settings)
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

    async def hold(self, worker_id: str, job_id: str) -> bool:
        """Record that ``worker_id`` runs ``job_id`` now (arq's ``on_job_start``)."""
        held = await self._hold(
            keys=[keys.worker_jobs(worker_id), in_progress_key_prefix + job_id], args=[job_id]
        )
        return bool(held)

    async def release(self, worker_id: str, job_id: str) -> None:
        """``job_id`` has ended and arq has recorded it (arq's ``after_job_end``)."""
        await self.pool.hdel(keys.worker_jobs(worker_id), job_id)  # type: ignore[misc]

    async def forget_held(self, worker_id: str) -> None:
        """A worker shutting down cleanly: every job of its has ended."""
        await self.pool.delete(keys.worker_jobs(worker_id))

    async def hand_back(self, worker_id: str, beat_before: float) -> list[str] | None:
        """If ``worker_id``'s last heartbeat is older than ``beat_before`` (unix seconds), let
        the jobs it held run again now, and forget the worker: the ids of the jobs handed back.
        None: the worker beat since (it is alive), or another worker handed them back first."""
        outcome = await self._hand_back(
            keys=[keys.WORKERS, keys.worker_jobs(worker_id)],
            args=[worker_id, beat_before, in_progress_key_prefix, MARKER_SLACK_MS],
        )
        if not outcome or not int(outcome[0]):
            return None
        return [job.decode() if isinstance(job, bytes) else str(job) for job in outcome[1:]]

    async def free_orphans(self, job_timeout_seconds: float, min_age_seconds: float) -> list[str]:
        """Let due jobs run again whose arq mark no worker holds and is ``min_age_seconds``
        old; ``job_timeout_seconds``: every worker's (arq's mark lives that long + 10 s)."""
        mark_ms = round((job_timeout_seconds + IN_PROGRESS_EXTRA_SECONDS) * 1000)
        prefix, suffix = keys.worker_jobs("\0").split("\0")
        freed: list[str] = []
        for queue in self.queue_keys:
            found = await self._orphans(
                keys=[keys.WORKERS, queue],
                args=[
                    ORPHAN_SCAN_LIMIT,
                    in_progress_key_prefix,
                    mark_ms,
                    round(min_age_seconds * 1000),
                    prefix,
                    suffix,
                ],
            )
            freed += [job.decode() if isinstance(job, bytes) else str(job) for job in found]
        return freed

    async def close(self) -> None:
        await self.pool.aclose()
