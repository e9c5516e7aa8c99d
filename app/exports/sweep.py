"""The self-healing sweep: finds work that should be moving but has nothing scheduled to move
it, and schedules it again. Framework-free; the worker runs it periodically (``worker.chores``)
and tests call ``Sweeper.sweep()`` directly.

Every repair is idempotent, so any number of workers may sweep at once (the periodic runner
still lets only one sweep per interval, to spare Redis):

* an open task whose recorded next step (``next_job``/``next_job_key``) is overdue by more
  than ``GATEWAY_SWEEP_GRACE_SECONDS`` and is neither waiting in the job queue nor running has
  that step re-created under the same key (the queue flushed, a worker killed past retries);
* a queued task holding an upstream slot whose start job is gone has it re-created;
* a queued task that is neither waiting for a slot nor holding one goes back to waiting;
* a slot or waiting entry of a task that is finished or gone is released; an open-index entry
  of one is dropped;
* then free slots are dispatched.

Work owned by other modules (lost expiry steps of completed tasks, stuck webhook deliveries)
is repaired by those modules, which own their indexes: they join the sweep as ``repairs``
(kind -> ``hook(grace_seconds) -> count``), wired in ``worker.main``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from redis.exceptions import RedisError

from app.exports.lifecycle import TaskLifecycle
from app.exports.schemas import TaskRecord
from app.exports.store import ExportStore
from app.platform import metrics
from app.platform.clock import utcnow
from app.platform.jobs import JobQueue

log = logging.getLogger(__name__)

RepairHook = Callable[[float], Awaitable[int]]


@dataclass
class SweepReport:
    repairs: Counter[str] = field(default_factory=Counter)
    dispatched: int = 0

    @property
    def total(self) -> int:
        return sum(self.repairs.values())


class Sweeper:
    def __init__(
        self,
        *,
        store: ExportStore,
        lifecycle: TaskLifecycle,
        queue: JobQueue,
        grace_seconds: float,
        repairs: Mapping[str, RepairHook] | None = None,
        batch: int = 10_000,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.queue = queue
        self.grace_seconds = grace_seconds
        self.grace = timedelta(seconds=grace_seconds)
        self.repairs = dict(repairs or {})
        self.batch = batch

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        now = utcnow()
        open_ids = await self.store.open_task_ids(self.batch)
        tasks = {t.id: t for t in await self.store.get_tasks(open_ids) if t is not None}
        # Read the slots after the tasks: a task seen queued is then in one of the two sets
        # unless it was lost (or finished meanwhile, which a requeue below survives).
        waiting, active = await self.store.slot_state()
        waiting_set, active_set = set(waiting), set(active)
        others = [i for i in {*waiting, *active} if i not in tasks]
        for task_id, extra in zip(others, await self.store.get_tasks(others), strict=True):
            if extra is not None:
                tasks[task_id] = extra

        gone_from_index = [i for i in open_ids if i not in tasks or tasks[i].finished]
        if gone_from_index:
            await self.store.drop_open(gone_from_index)
            report.repairs["dropped_index"] += len(gone_from_index)

        stale_slots = [i for i in {*waiting, *active} if i not in tasks or tasks[i].finished]
        if stale_slots:
            await self.store.drop_slots(stale_slots)
            report.repairs["released"] += len(stale_slots)

        for task in tasks.values():
            if task.finished or now - task.created_at < self.grace:
                continue
            try:
                kind = await self._repair(task, task.id in waiting_set, task.id in active_set)
            except (RedisError, OSError):
                raise
            except Exception:  # one task's repair never stops the others'
                log.exception("sweep could not repair a task", extra={"task_id": task.id})
                metrics.ISOLATED_FAILURES.labels("sweep_repair").inc()
                continue
            if kind:
                report.repairs[kind] += 1
                log.warning("sweep repaired a task", extra={"task_id": task.id, "repair": kind})

        for kind, hook in self.repairs.items():
            repaired = await hook(self.grace_seconds)
            if repaired:
                report.repairs[kind] += repaired

        report.dispatched = len(await self.lifecycle.dispatch())
        metrics.SWEEP_RUNS.inc()
        for kind, count in report.repairs.items():
            metrics.SWEEP_REPAIRS.labels(kind).inc(count)
        return report

    async def _repair(self, task: TaskRecord, waiting: bool, active: bool) -> str | None:
        if task.next_job is not None and task.next_job_key is not None:
            due = task.next_poll_at
            if due is not None and utcnow() - due < self.grace:
                return None
            created = await self.queue.ensure_scheduled(
                task.next_job, task.id, key=task.next_job_key
            )
            return "rescheduled" if created else None
        if task.status == "queued" and task.upstream_id is None:
            if active:  # dispatched, but its start job is gone
                created = await self.queue.ensure_scheduled(
                    "start_task", task.id, key=f"start:{task.id}"
                )
                return "restarted" if created else None
            if not waiting:
                await self.store.requeue(task)
                return "requeued"
            return None
        if task.status == "running":  # running with no next step recorded: poll it
            created = await self.queue.ensure_scheduled(
                "poll_task", task.id, key=f"poll:{task.id}:{task.polls}"
            )
            return "rescheduled" if created else None
        return None
