"""What the services ask to have run later, without knowing which task queue runs it.

Services depend on the ``JobQueue`` protocol only; ``app.platform.queue.ArqJobQueue`` implements it
with arq. Every job carries a deterministic key: scheduling a key that is already scheduled
(or running) is a no-op, which makes every "schedule the next step" idempotent and lets the
sweep re-schedule whatever it likes without creating duplicates.
"""

from __future__ import annotations

from typing import Literal, Protocol

JobName = Literal[
    "start_task",  # create the upstream task (task id)
    "poll_task",  # ask upstream how the task is doing (task id)
    "deliver_event",  # POST one webhook event (event id)
    "warn_expiring",  # the task's links expire soon (task id)
    "expire_task",  # the task's links are gone (task id)
    "cut_feed_run",  # write a feed run's windowed CSV from its completed task (export id)
    "archive_task",  # copy the completed task's merged CSV into the archive (task id)
    "verify_archive",  # re-read an archived copy and compare its sha256 (task id)
]


class JobQueue(Protocol):
    async def schedule(
        self, job: JobName, subject_id: str, *, key: str, delay: float = 0, urgent: bool = False
    ) -> bool:
        """Run ``job(subject_id)`` after ``delay`` seconds unless ``key`` is already scheduled.
        ``urgent`` (with no delay): someone is waiting on it, so it goes ahead of every other
        due job. Returns True when this call scheduled it."""
        ...

    async def is_scheduled(self, key: str) -> bool:
        """Whether a job with this key is waiting or running."""
        ...

    async def ensure_scheduled(self, job: JobName, subject_id: str, *, key: str) -> bool:
        """Run ``job(subject_id)`` now unless ``key`` is waiting in the queue or running,
        clearing what is left of a half-lost job first (the sweep). True when it (re)created
        the job."""
        ...

    @property
    def queue_keys(self) -> tuple[str, ...]:
        """The Redis sorted sets of pending jobs, for the queue depth gauge (empty: unknown)."""
        ...
