"""The life of an upstream task, one short step per job: start, poll, finish, expire.

No step ever waits for upstream inside a job. Each step does at most one upstream request,
records what it learned, and schedules the next step with a deterministic job key that it
saved in the task first; so a step that runs twice (a worker killed mid-job) does no harm, and
the sweep can re-create a lost step from the record alone.

    queued --start--> running --poll...--> completed --warn--> (expiring) --expire--> expired
                                       \\--> failed

With an archive configured, completing a task also schedules ``archive_task`` (the copy, done
by ``app.archive``): once the copy exists, ``expires_at`` moves to the copy's expiry, the
link expiry only clears ``links`` (the export stays completed) and the warn/expire steps are
scheduled again for the new time (under keys of their own).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from redis.exceptions import RedisError

from app.config import Settings
from app.exports.schemas import ErrorInfo, Export, ExportRecord, TaskArchive, TaskRecord
from app.exports.store import ExportStore
from app.platform import metrics
from app.platform.clock import utcnow
from app.platform.jobs import JobName, JobQueue
from app.upstream.client import UpstreamClient
from app.upstream.errors import PermanentUpstreamError, TransientUpstreamError
from app.upstream.parsing import ParsedTask

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
# An expire step may run this much before expires_at (timer granularity, clock skew): the
# links are then marked gone a moment early, never late.
EXPIRY_EARLY_TOLERANCE_SECONDS = 0.1

# "export.completed" | "export.failed" | "export.expiring" | "export.expired" | "export.archived"
EventType = str


class Notifier(Protocol):
    async def publish(self, record: ExportRecord, export: Export, event_type: EventType) -> None:
        """Record an event for one export and schedule its delivery."""
        ...


class FeedRuns(Protocol):
    async def task_finished(self, record: ExportRecord, task: TaskRecord, event: EventType) -> None:
        """A feed run's task reached ``event``: the feed takes it from here (its run is not
        done until its windowed CSV is written, and it sends its own webhooks)."""
        ...


class TaskLifecycle:
    def __init__(
        self,
        *,
        settings: Settings,
        store: ExportStore,
        queue: JobQueue,
        upstream: UpstreamClient,
        notifier: Notifier | None,
        feed_runs: FeedRuns | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.upstream = upstream
        self.notifier = notifier
        self.feed_runs = feed_runs

    # -- slots -----------------------------------------------------------------------------

    async def dispatch(self) -> list[str]:
        """Start as many waiting tasks as there are free upstream slots, oldest first."""
        started = await self.store.dispatch(self.settings.upstream_max_active_tasks)
        await self.start_dispatched(started)
        return started

    async def start_dispatched(self, task_ids: list[str]) -> None:
        """Schedule the start of tasks just given upstream slots."""
        for task_id in task_ids:
            await self.queue.schedule("start_task", task_id, key=f"start:{task_id}")

    # -- steps -----------------------------------------------------------------------------

    async def start(self, task_id: str) -> None:
        task = await self.store.get_task(task_id)
        if task is None or task.finished:
            await self.store.drop_slots([task_id])
            await self.dispatch()
            if task is not None:
                await self._follow_up_again(task)
            return
        if task.upstream_id is not None:  # a rerun after the id was saved: never create twice
            await self._schedule_next(task)
            return
        try:
            created = await self.upstream.create_export(
                filter=task.filter, fields=task.fields, site_id=task.site_id
            )
        except TransientUpstreamError as exc:
            await self._retry(task, "start_task", exc)
            return
        except PermanentUpstreamError as exc:
            await self._finish_failed(task_id, ErrorInfo(code=exc.code, message=exc.message))
            return
        saved = await self._save_created(task_id, created)
        if saved is not None:
            await self._schedule_next(saved)

    async def _save_created(self, task_id: str, created: ParsedTask) -> TaskRecord | None:
        now = utcnow()
        first_wait = self.settings.poll_initial_seconds

        def change(task: TaskRecord) -> TaskRecord | None:
            if task.upstream_id is not None or task.finished:
                return None
            return task.model_copy(
                update={
                    "upstream_id": created.id,
                    "upstream_status": created.raw_status,
                    "status": "running",
                    "submitted_at": now,
                    "failures": 0,
                    "failing_since": None,
                    **self._next("poll_task", f"poll:{task_id}:0", now, first_wait),
                }
            )

        update = await self.store.update_task(task_id, change)
        metrics.UPSTREAM_TASKS.labels("created").inc()
        log.info(
            "upstream task created",
            extra={"task_id": task_id, "upstream_task_id": created.id},
        )
        return update.after if update.changed else None

    async def poll(self, task_id: str) -> None:
        task = await self.store.get_task(task_id)
        if task is None:
            return
        if task.finished:
            await self._follow_up_again(task)
            return
        if task.upstream_id is None:
            await self.store.requeue(task)
            await self.dispatch()
            return
        try:
            seen = await self.upstream.get_export(task.upstream_id)
        except TransientUpstreamError as exc:
            await self._retry(task, "poll_task", exc)
            return
        except PermanentUpstreamError as exc:
            await self._finish_failed(task_id, ErrorInfo(code=exc.code, message=exc.message))
            return
        now = utcnow()
        if seen.state == "completed":
            await self._finish_completed(task_id, seen, now)
        elif seen.state == "failed":
            word = seen.raw_status or "inactive"
            message = seen.message or f"the upstream task ended with status {word!r}"
            await self._finish_failed(
                task_id, ErrorInfo(code="upstream_failed", message=message), seen
            )
        elif task.submitted_at and now - task.submitted_at > timedelta(
            seconds=self.settings.upstream_task_max_age_seconds
        ):
            limit = self.settings.upstream_task_max_age_seconds
            message = f"the upstream task was still {seen.raw_status!r} after {limit:.0f} s"
            await self._finish_failed(
                task_id, ErrorInfo(code="upstream_timeout", message=message), seen
            )
        else:
            await self._still_running(task_id, seen, now)

    async def _still_running(self, task_id: str, seen: ParsedTask, now: datetime) -> None:
        def change(task: TaskRecord) -> TaskRecord | None:
            if task.finished:
                return None
            polls = task.polls + 1
            wait = min(
                self.settings.poll_initial_seconds * self.settings.poll_multiplier**polls,
                self.settings.poll_max_seconds,
            )
            return task.model_copy(
                update={
                    "polls": polls,
                    "upstream_status": seen.raw_status,
                    "failures": 0,
                    "failing_since": None,
                    **self._next("poll_task", f"poll:{task_id}:{polls}", now, wait),
                }
            )

        update = await self.store.update_task(task_id, change)
        if update.changed and update.after is not None:
            await self._schedule_next(update.after)

    async def _retry(self, task: TaskRecord, job: JobName, exc: TransientUpstreamError) -> None:
        now = utcnow()
        failures = task.failures + 1
        since = task.failing_since or now
        elapsed = (now - since).total_seconds()
        remaining = self.settings.upstream_retry_max_seconds - elapsed
        if exc.retry_after is not None:
            delay = exc.retry_after  # never earlier than upstream asked
        else:  # exponential backoff with full jitter, never past the time budget
            delay = random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**failures))
            delay = min(delay, max(remaining, 0.0))
        if failures > self.settings.upstream_max_retries or delay > remaining:
            message = f"gave up after {failures} attempts over {elapsed:.0f} s: {exc.message}"
            await self._finish_failed(
                task.id, ErrorInfo(code="upstream_unavailable", message=message)
            )
            return
        key = f"{job.removesuffix('_task')}:{task.id}:{task.polls}:retry{failures}"
        log.warning(
            "upstream trouble; retrying",
            extra={"task_id": task.id, "error": exc.message, "retry_in": round(delay, 3)},
        )

        def change(current: TaskRecord) -> TaskRecord | None:
            if current.finished or current.failures != task.failures:
                return None
            return current.model_copy(
                update={
                    "failures": failures,
                    "failing_since": since,
                    **self._next(job, key, now, delay),
                }
            )

        update = await self.store.update_task(task.id, change)
        if update.changed and update.after is not None:
            await self._schedule_next(update.after)

    # -- endings ---------------------------------------------------------------------------

    async def _finish_completed(self, task_id: str, seen: ParsedTask, now: datetime) -> None:
        completed_at = min(seen.completed_at or now, now)
        expires_at = completed_at + timedelta(seconds=self.settings.link_retention_seconds)
        archive = None
        if self.settings.archive_url:
            archive = TaskArchive(
                state="pending", job_key=f"archive:{task_id}:0", next_attempt_at=now
            )

        def change(task: TaskRecord) -> TaskRecord | None:
            if task.finished:
                return None
            return task.model_copy(
                update={
                    "status": "completed",
                    "upstream_status": seen.raw_status,
                    "links": list(seen.links),
                    "polls": task.polls + 1,
                    "completed_at": completed_at,
                    "expires_at": expires_at,
                    "links_expire_at": expires_at,
                    "archive": archive,
                    "failures": 0,
                    "failing_since": None,
                    "next_job": None,
                    "next_job_key": None,
                    "next_poll_at": None,
                }
            )

        await self._finish(task_id, change, "export.completed")

    async def _finish_failed(
        self, task_id: str, error: ErrorInfo, seen: ParsedTask | None = None
    ) -> None:
        def change(task: TaskRecord) -> TaskRecord | None:
            if task.finished:
                return None
            update: dict[str, object] = {
                "status": "failed",
                "error": error,
                "next_job": None,
                "next_job_key": None,
                "next_poll_at": None,
            }
            if seen is not None:
                update["upstream_status"] = seen.raw_status
                update["polls"] = task.polls + 1
            return task.model_copy(update=update)

        await self._finish(task_id, change, "export.failed")

    async def _finish(
        self,
        task_id: str,
        change: Callable[[TaskRecord], TaskRecord | None],
        event_type: EventType,
    ) -> None:
        update = await self.store.update_task(task_id, change)
        task = update.after
        if not update.changed or task is None:
            return
        log.info(
            "upstream task finished",
            extra={"task_id": task_id, "status": task.status, "upstream_task_id": task.upstream_id},
        )
        # Callers first (a webhook is what someone is waiting for), then the slot, the expiry
        # steps (days away) and the metrics; after a crash in between, ``_follow_up_again``
        # and the sweep redo what is missing.
        await self.notify_followers(task, event_type)
        await self.dispatch()
        if task.status == "completed":
            await self.schedule_expiry(task)
            await self.schedule_archive(task)
        await self._count_finished(task)

    async def _follow_up_again(self, task: TaskRecord) -> None:
        """A step finds its task already finished: usually another step finished it and has
        done what follows, but a worker killed between the finishing transaction and the rest
        of ``_finish`` leaves the followers' webhooks unpublished (and the expiry unscheduled),
        and arq reruns exactly this step. So do them again: each is idempotent (an event is
        published once per export and type; expiry jobs have deterministic keys).
        (Found by bench/faults/kill_worker.py.)"""
        if task.status == "completed":
            await self.schedule_expiry(task)
            await self.notify_followers(task, "export.completed")
            await self.schedule_archive(task)
        elif task.status == "failed":
            await self.notify_followers(task, "export.failed")

    async def schedule_expiry(self, task: TaskRecord) -> None:
        await self.ensure_expiry_jobs(task)

    async def schedule_archive(self, task: TaskRecord) -> bool:
        """Schedule the pending copy of a completed task into the archive (its key is
        recorded in the task, so this is a no-op while that job waits or runs)."""
        archive = task.archive
        if task.status != "completed" or archive is None or archive.state != "pending":
            return False
        delay = 0.0
        if archive.next_attempt_at is not None:
            delay = max(0.0, (archive.next_attempt_at - utcnow()).total_seconds())
        key = archive.job_key or f"archive:{task.id}:{archive.attempts}"
        return await self.queue.schedule("archive_task", task.id, key=key, delay=delay)

    async def ensure_expiry_jobs(self, task: TaskRecord) -> list[JobName]:
        """Schedule what is still to come of a completed task's window: ``warn_expiring`` at
        ``expires_at - GATEWAY_EXPIRY_WARNING_SECONDS`` (unless already sent, or the links are
        already gone) and ``expire_task`` at ``expires_at``. Job keys are deterministic, so
        this is a no-op for jobs still waiting: the sweep calls it to re-create lost ones.
        Returns the jobs this call scheduled."""
        if task.status != "completed":
            return []
        now = utcnow()
        scheduled: list[JobName] = []
        if task.expires_at is None:  # an archived copy kept for ever: only the links go
            if (
                task.links
                and task.links_expire_at is not None
                and await self.queue.schedule(
                    "expire_task",
                    task.id,
                    key=f"expire:{task.id}",
                    delay=max(0.0, (task.links_expire_at - now).total_seconds()),
                )
            ):
                scheduled.append("expire_task")
            return scheduled
        warning = self.settings.expiry_warning_seconds
        # An archived copy moved expires_at: the steps for the new time get keys of their own
        # (those of the link expiry may still be waiting; they then find nothing to do).
        suffix = ":archived" if _archived(task) else ""
        if warning > 0 and task.warned_at is None and now < task.expires_at:
            warn_at = task.expires_at - timedelta(seconds=warning)
            if await self.queue.schedule(
                "warn_expiring",
                task.id,
                key=f"warn:{task.id}{suffix}",
                delay=max(0.0, (warn_at - now).total_seconds()),
            ):
                scheduled.append("warn_expiring")
        # the links go before the export does: a step to clear them then
        if (
            task.links
            and task.links_expire_at is not None
            and task.links_expire_at < task.expires_at
            and await self.queue.schedule(
                "expire_task",
                task.id,
                key=f"expire:{task.id}",
                delay=max(0.0, (task.links_expire_at - now).total_seconds()),
            )
        ):
            scheduled.append("expire_task")
        if await self.queue.schedule(
            "expire_task",
            task.id,
            key=f"expire:{task.id}{suffix}",
            delay=max(0.0, (task.expires_at - now).total_seconds()),
        ):
            scheduled.append("expire_task")
        return scheduled

    async def repair_expiry_jobs(self, grace_seconds: float | None = None) -> list[str]:
        """For the periodic sweep: re-create the warn/expire steps of completed tasks that
        are overdue by more than ``grace_seconds`` (default ``GATEWAY_SWEEP_GRACE_SECONDS``),
        e.g. after the queue was flushed or Redis came back from an older snapshot. Reads
        only the ``gw:tasks:completed`` index up to the horizon. Returns the repaired ids."""
        now = utcnow()
        grace = self.settings.sweep_grace_seconds if grace_seconds is None else grace_seconds
        cutoff = now - timedelta(seconds=grace)
        warning = timedelta(seconds=self.settings.expiry_warning_seconds)
        ids = await self.store.completed_tasks_due(cutoff + warning)
        tasks = await self.store.get_tasks(ids)
        await self.store.forget_completed(i for i, t in zip(ids, tasks, strict=True) if t is None)
        repaired: list[str] = []
        for task in tasks:
            if task is None or task.expires_at is None:
                continue
            warn_due = (
                warning.total_seconds() > 0
                and task.warned_at is None
                and task.expires_at - warning <= cutoff
            )
            if not (task.expires_at <= cutoff or warn_due):
                continue
            try:
                if await self.ensure_expiry_jobs(task):
                    repaired.append(task.id)
            except (RedisError, OSError):
                raise
            except Exception:  # one task's steps never stop the others' repair
                log.exception("expiry steps not repaired", extra={"task_id": task.id})
                metrics.ISOLATED_FAILURES.labels("repair_expiry").inc()
        if repaired:
            log.warning("re-created lost expiry steps", extra={"task_ids": repaired})
        return repaired

    async def warn_expiring(self, task_id: str) -> None:
        """Send ``export.expiring`` once per task (a re-created or repeated job sends nothing
        more), and never once the links are gone. Followers are notified before ``warned_at``
        is recorded, so a crash in between repeats the notice rather than losing it (the
        notifier's event ids are per export and type: a repeat is recorded once)."""
        now = utcnow()
        task = await self.store.get_task(task_id)
        if task is None or not self._warning_due(task, now):
            return
        await self.notify_followers(task, "export.expiring")

        def change(current: TaskRecord) -> TaskRecord | None:
            if current.warned_at is not None or current.status != "completed":
                return None
            return current.model_copy(update={"warned_at": now})

        await self.store.update_task(task_id, change)

    def _warning_due(self, task: TaskRecord, now: datetime) -> bool:
        due = (
            task.status == "completed"
            and task.warned_at is None
            and task.expires_at is not None
            and now < task.expires_at
        )
        if due and task.expires_at is not None and _archived(task):
            # the step of the link expiry runs long before an archived copy expires
            warn_at = task.expires_at - timedelta(seconds=self.settings.expiry_warning_seconds)
            due = now >= warn_at - timedelta(seconds=EXPIRY_EARLY_TOLERANCE_SECONDS)
        return due

    async def expire(self, task_id: str) -> None:
        now = utcnow()
        due = now + timedelta(seconds=EXPIRY_EARLY_TOLERANCE_SECONDS)

        def change(task: TaskRecord) -> TaskRecord | None:
            if task.status != "completed":
                return None
            if task.expires_at is not None and task.expires_at <= due:
                return task.model_copy(update={"status": "expired", "links": []})
            if task.links and task.links_expire_at is not None and task.links_expire_at <= due:
                # upstream deleted its files, the archived copy serves the CSV on
                return task.model_copy(update={"links": []})
            return None

        update = await self.store.update_task(task_id, change)
        task = update.after
        if task is None or task.status not in ("completed", "expired"):
            return
        if update.changed and task.status == "completed":
            log.info("links expired; the archived copy serves the CSV", extra={"task_id": task_id})
            await self.ensure_expiry_jobs(task)
        elif update.changed:
            log.info("links expired", extra={"task_id": task_id})
            await self._count_finished(task)
            await self.notify_followers(task, "export.expired")
        elif task.status == "completed" and task.expires_at is not None:
            # Ran early (clock skew). This job's own key is still taken while it runs, so
            # come back under another one.
            await self.queue.schedule(
                "expire_task",
                task.id,
                key=f"expire:{task.id}:{now.timestamp():.0f}",
                delay=max(0.0, (task.expires_at - now).total_seconds()),
            )

    async def notify_followers(self, task: TaskRecord, event_type: EventType) -> None:
        """Publish ``event_type`` to every export following ``task`` (a feed run's export is
        handed to the feeds instead, which cut its window first). Each follower is its own
        unit of work: one whose record cannot be read (skipped by the store) or whose event
        cannot be built or recorded is logged and counted, and never stops the others, nor
        the task's bookkeeping after this call. (A failure of Redis itself still propagates:
        the job is then retried, and publishing is idempotent per export and type.)"""
        export_ids = await self.store.task_export_ids(task.id)
        for record in await self.store.get_exports(export_ids):
            if record is None or record.canceled_at is not None:
                continue
            try:
                if record.feed_id is not None:
                    if self.feed_runs is not None:
                        await self.feed_runs.task_finished(record, task, event_type)
                elif self.notifier is not None and record.callback_url:
                    await self.notifier.publish(record, Export.of(record, task), event_type)
            except (RedisError, OSError):
                raise
            except Exception as exc:
                log.exception(
                    "follower not notified",
                    extra={"export_id": record.id, "task_id": task.id, "error": type(exc).__name__},
                )
                metrics.ISOLATED_FAILURES.labels("notify_follower").inc()

    async def _count_finished(self, task: TaskRecord) -> None:
        followers = len(await self.store.task_export_ids(task.id))
        metrics.UPSTREAM_TASKS.labels(task.status).inc()
        metrics.EXPORTS.labels(task.status).inc(followers)
        if task.status != "expired":
            metrics.POLLS_PER_EXPORT.observe(task.polls)

    # -- scheduling ------------------------------------------------------------------------

    async def on_archived(self, task: TaskRecord) -> None:
        """The copy exists (``app.archive`` recorded it): tell the followers, and schedule
        the warn/expire steps of the new ``expires_at``."""
        await self.notify_followers(task, "export.archived")
        await self.ensure_expiry_jobs(task)

    @staticmethod
    def _next(job: JobName, key: str, now: datetime, delay: float) -> dict[str, object]:
        return {
            "next_job": job,
            "next_job_key": key,
            "next_poll_at": now + timedelta(seconds=delay),
        }

    async def _schedule_next(self, task: TaskRecord) -> None:
        if task.next_job is None or task.next_job_key is None:
            return
        delay = 0.0
        if task.next_poll_at is not None:
            delay = max(0.0, (task.next_poll_at - utcnow()).total_seconds())
        await self.queue.schedule(task.next_job, task.id, key=task.next_job_key, delay=delay)


def _archived(task: TaskRecord) -> bool:
    return task.archive is not None and task.archive.state == "archived"
