"""A killed worker's jobs run again within ``GATEWAY_WORKER_RECOVERY_SECONDS``, not minutes.

arq marks a job it starts as in progress until the worker's job_timeout + 10 s have passed
(130 s by default): a worker killed mid-job (SIGKILL, OOM, power loss) leaves its jobs marked,
and no other worker runs them before the marks expire. So each worker keeps a list of the jobs
it holds, beside its heartbeat:

* ``hold`` (arq's ``on_job_start``, both lanes) adds the job, with the identity of arq's mark;
* ``release`` (arq's ``after_job_end``, once arq has recorded the outcome) removes it;
* ``recover`` (every heartbeat) looks for workers whose heartbeat has lapsed and hands their
  jobs back: arq's mark is removed for exactly the jobs that worker held, if the mark is still
  the one it set (``app.platform.queue.ArqJobQueue.hand_back``), and any worker picks them up
  on its next poll. The worker is forgotten in the same atomic step, so only one live worker
  does it. A job a worker was killed starting (marked by arq, not yet recorded: a window of
  milliseconds) is found in the while after a dead worker was found, as a mark no worker holds
  once it is as old as a dead worker's silence (``ArqJobQueue.free_orphans``); every worker
  must then run with the same ``GATEWAY_WORKER_JOB_TIMEOUT_SECONDS``, which dates arq's marks.
  Each hand-back is counted (``gateway_workers_recovered``, ``gateway_jobs_handed_back``) and
  logged.

Timing, with R = ``GATEWAY_WORKER_RECOVERY_SECONDS``: a live worker beats every ``R / 5`` at
least (``app.platform.heartbeat``), from a task of its own, so a slow job does not make its
worker look dead. A worker silent for ``R`` minus one beat (four missed beats) is presumed dead,
and every worker looks once per beat: a dead worker's jobs are handed back within R of its
death. When Redis itself was away (a restart, a failover), every worker's beats failed alike:
so a worker judges others only after its own beats have succeeded for two beat intervals, by
which time every live worker has beaten again. Only a worker whose event
loop stalls for the whole window (or whose clock is that far off) would be taken for dead while
its jobs run on: its next beat logs it, and the steps are idempotent.

Every hook swallows Redis errors (counted, logged): a hook that raised would make arq fail the
job, and a job that was not recorded only loses the fast path (arq's own expiry still frees it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from app.platform import metrics
from app.platform.heartbeat import lapsed_workers
from app.platform.queue import ArqJobQueue

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        queue: ArqJobQueue,
        worker_id: str,
        recovery_seconds: float,
        job_timeout_seconds: float,
        beat_seconds: float,
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.recovery_seconds = recovery_seconds
        self.job_timeout_seconds = job_timeout_seconds
        self.beat_seconds = beat_seconds
        # silent this long: dead (found at the latest one beat later, so within the window)
        self.silent_seconds = max(recovery_seconds - beat_seconds, beat_seconds * 2)
        self._healthy_since: float | None = None
        self._orphans_until = 0.0  # look for orphaned marks until then (monotonic)

    def beat_succeeded(self) -> None:
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    def beat_failed(self) -> None:
        self._healthy_since = None

    def may_judge(self) -> bool:
        """Whether this worker has reached Redis for two beat intervals without a break (so a
        silent worker is silent for a reason of its own, not Redis's)."""
        since = self._healthy_since
        return since is not None and time.monotonic() - since >= 2 * self.beat_seconds

    async def hold(self, ctx: dict[str, Any]) -> None:
        try:
            await self.queue.hold(self.worker_id, str(ctx["job_id"]))
        except RedisError as exc:
            metrics.REDIS_ERRORS.labels("recovery").inc()
            log.warning("could not record a held job", extra={"error": type(exc).__name__})

    async def release(self, ctx: dict[str, Any]) -> None:
        try:
            await self.queue.release(self.worker_id, str(ctx["job_id"]))
        except RedisError as exc:  # a stale entry is harmless: its mark is gone or newer
            metrics.REDIS_ERRORS.labels("recovery").inc()
            log.warning("could not release a held job", extra={"error": type(exc).__name__})

    async def recover(self) -> int:
        """Hand back the jobs of every worker presumed dead; the number of jobs."""
        if not self.may_judge():
            return 0
        redis = self.queue.pool
        cutoff, lapsed = await lapsed_workers(redis, self.silent_seconds)
        total = 0
        for worker_id in lapsed:
            if worker_id == self.worker_id:
                continue  # our own beat is late: we are alive, our next beat says so
            jobs = await self.queue.hand_back(worker_id, cutoff)
            if jobs is None:
                continue
            total += len(jobs)
            # its unrecorded marks (if any) come of age within one more silence
            self._orphans_until = time.monotonic() + self.silent_seconds + 2 * self.beat_seconds
            metrics.WORKERS_RECOVERED.inc()
            metrics.JOBS_HANDED_BACK.inc(len(jobs))
            log.warning(
                "worker presumed dead: its jobs handed back",
                extra={
                    "dead_worker_id": worker_id,
                    "jobs": len(jobs),
                    "job_ids": jobs[:20],
                    "silent_seconds": round(self.silent_seconds, 1),
                },
            )
        if time.monotonic() > self._orphans_until:
            return total
        orphans = await self.queue.free_orphans(self.job_timeout_seconds, self.silent_seconds)
        if orphans:
            total += len(orphans)
            metrics.JOBS_HANDED_BACK.inc(len(orphans))
            log.warning(
                "jobs marked running by no live worker handed back",
                extra={"jobs": len(orphans), "job_ids": orphans[:20]},
            )
        return total

    async def forget(self) -> None:
        """A clean shutdown: every job has ended, nothing is held."""
        await self.queue.forget_held(self.worker_id)
