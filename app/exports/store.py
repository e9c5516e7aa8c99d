"""Every Redis read and write of exports and upstream tasks (key names: ``app.platform.keys``).

Records are JSON documents. Changes that must hold together (a submission that may share a
running task, a task finishing, a cancel) run as optimistic transactions: WATCH the keys that
decide the outcome, read, then write in MULTI/EXEC, retrying when another process got there
first. That is what makes coalescing race-free across API processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.exports.schemas import ExportRecord, TaskRecord
from app.platform import keys, metrics
from app.platform.clock import utcnow
from app.platform.indexes import newest_before

log = logging.getLogger(__name__)
Record = TypeVar("Record", bound=BaseModel)


def _dispatch_lua(waiting: str, active: str, max_active: str) -> str:
    """Lua moving waiting tasks, oldest first, into free upstream slots (into ``started``)."""
    return f"""
local started = {{}}
local free = tonumber({max_active}) - redis.call('ZCARD', {active})
while free > 0 do
  local head = redis.call('ZPOPMIN', {waiting})
  if #head == 0 then break end
  redis.call('ZADD', {active}, head[2], head[1])
  table.insert(started, head[1])
  free = free - 1
end
"""


_DISPATCH = _dispatch_lua("KEYS[1]", "KEYS[2]", "ARGV[1]") + "return started\n"


# Fair queueing between clients: a new task waits under a score that is its creation time,
# but never less than the score of the creating client's previous task plus FAIR_SPACING_MS
# (the client's "queue clock", gw:client:{id}:queue). One client's burst of new queries is
# thereby spread out in the queue and another client's task goes in among them, instead of
# waiting behind all of them; a client's own tasks keep their order (still first in, first
# out for each client).
FAIR_SPACING_MS = 1000


def _fair_score_lua(clock: str, created: str, spacing: str) -> str:
    return f"""
local score = tonumber({created})
local last = tonumber(redis.call('GET', {clock}) or '0')
if last + tonumber({spacing}) > score then score = last + tonumber({spacing}) end
redis.call('SET', {clock}, score, 'PX', math.max(1000, score - tonumber({created}) + 60000))
"""


# The WATCH/MULTI path's new task, moved to its fair place (if it is still waiting).
_FAIR_REQUEUE = (
    _fair_score_lua("KEYS[2]", "ARGV[2]", "ARGV[3]")
    + """
redis.call('ZADD', KEYS[1], 'XX', score, ARGV[1])
return score
"""
)


# An export and the task serving it in one round trip (a status read is the hottest path).
# The task key is built from the prefix passed in ARGV[1] (app.platform.keys.task("")).
_EXPORT_WITH_TASK = """
local export = redis.call('GET', KEYS[1])
if not export then return {false, false} end
local ok, decoded = pcall(cjson.decode, export)
if not ok or type(decoded) ~= 'table' or type(decoded['task_id']) ~= 'string' then
  return {export, false}
end
return {export, redis.call('GET', ARGV[1] .. decoded['task_id'])}
"""


# A record replaced only if it still holds exactly what was read (a compare-and-set): the
# common task update (a poll that finds the task still running) in one round trip where a
# WATCH/GET/MULTI transaction takes three. Answers 0 when the record changed meanwhile.
_REPLACE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


# The common submission, a query nobody has asked before, in one round trip: when neither an
# in-flight nor a completed task of the fingerprint exists, store the new task and the export
# and queue the task, atomically; otherwise answer 0 and ``submit`` takes the WATCH/MULTI path,
# which knows how to share or reuse a task. The writes are those of that path's new-task branch
# (``_queue_new_task`` and ``_queue_export_writes``): change both together. With a slot limit
# in ARGV[8] it then dispatches too (as ``_DISPATCH``), sparing the caller a round trip, and
# answers {1, task ids now holding a slot...}.
_SUBMIT_NEW = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local ttl = ARGV[1]
redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
redis.call('SET', KEYS[3], ARGV[3], 'EX', ttl)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])"""
    + _fair_score_lua("KEYS[11]", "ARGV[4]", "ARGV[9]")
    + """
redis.call('ZADD', KEYS[5], score, ARGV[2])
redis.call('SET', KEYS[6], ARGV[5], 'EX', ttl)
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[7])
redis.call('SADD', KEYS[8], ARGV[7])
redis.call('EXPIRE', KEYS[8], ttl)
redis.call('ZADD', KEYS[10], ARGV[6], ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', tonumber(ARGV[6]) - tonumber(ttl) * 1000)
if ARGV[8] == '' then
  return 1
end"""
    + _dispatch_lua("KEYS[5]", "KEYS[9]", "ARGV[8]")
    + """
table.insert(started, 1, 1)
return started
"""
)


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A task before and after ``ExportStore.update_task`` (both None: no such task)."""

    before: TaskRecord | None
    after: TaskRecord | None

    @property
    def changed(self) -> bool:
        return self.before is not None and self.after is not self.before


@dataclass(frozen=True, slots=True)
class Submitted:
    export: ExportRecord
    task: TaskRecord
    new_task: bool
    # Tasks moved into upstream slots by the submission itself (None: it did not dispatch).
    dispatched: list[str] | None = None


CancelOutcome = Literal["canceled", "finished", "missing"]


class ExportStore:
    def __init__(self, redis: Redis, *, record_ttl: float) -> None:
        self.redis = redis
        self._ttl = int(record_ttl)
        self._dispatch = redis.register_script(_DISPATCH)
        self._export_with_task = redis.register_script(_EXPORT_WITH_TASK)
        self._submit_new = redis.register_script(_SUBMIT_NEW)
        self._replace_if_unchanged = redis.register_script(_REPLACE_IF_UNCHANGED)
        self._fair_requeue = redis.register_script(_FAIR_REQUEUE)

    # -- reads -----------------------------------------------------------------------------

    async def get_export(self, export_id: str) -> ExportRecord | None:
        raw = await self.redis.get(keys.export(export_id))
        return ExportRecord.model_validate_json(raw) if raw else None

    async def get_export_with_task(
        self, export_id: str
    ) -> tuple[ExportRecord | None, TaskRecord | None]:
        """The export and the task serving it, read in one round trip."""
        raw_export, raw_task = await self._export_with_task(
            keys=[keys.export(export_id)], args=[keys.task("")]
        )
        record = ExportRecord.model_validate_json(raw_export) if raw_export else None
        if record is None or not raw_task:
            return record, None
        task = TaskRecord.model_validate_json(raw_task)
        return record, task if task.id == record.task_id else None

    async def get_task(self, task_id: str) -> TaskRecord | None:
        raw = await self.redis.get(keys.task(task_id))
        return TaskRecord.model_validate_json(raw) if raw else None

    async def get_tasks(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        if not task_ids:
            return []
        raws = await self.redis.mget([keys.task(t) for t in task_ids])
        return [
            _each(TaskRecord, task_id, raw) for task_id, raw in zip(task_ids, raws, strict=True)
        ]

    async def get_exports(self, export_ids: Sequence[str]) -> list[ExportRecord | None]:
        if not export_ids:
            return []
        raws = await self.redis.mget([keys.export(e) for e in export_ids])
        return [
            _each(ExportRecord, export_id, raw)
            for export_id, raw in zip(export_ids, raws, strict=True)
        ]

    async def client_exports_before(
        self, client_id: str, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        """Up to ``count`` of the client's (export id, creation ms), newest first, strictly
        after the position ``before`` in that order (ms descending, then id descending: the
        order Redis gives equal scores in reverse). New exports are newer than any position
        already handed out, so they never shift what comes after it."""
        return await newest_before(self.redis, keys.client_exports(client_id), before, count)

    async def all_exports_before(
        self, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        """As ``client_exports_before``, over every client's exports (the operator console's
        all-clients view, ``gw:exports:all``)."""
        return await newest_before(self.redis, keys.ALL_EXPORTS, before, count)

    async def slot_counts(self) -> tuple[int, int]:
        """How many tasks wait for an upstream slot, and how many hold one."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.UPSTREAM_WAITING)
            pipe.zcard(keys.UPSTREAM_ACTIVE)
            waiting, active = await pipe.execute()
        return int(waiting), int(active)

    async def task_export_ids(self, task_id: str) -> list[str]:
        members: set[str] = await self.redis.smembers(keys.task_exports(task_id))  # type: ignore[misc]
        return sorted(members)

    async def open_task_ids(self, limit: int = 10_000) -> list[str]:
        return list(await self.redis.zrange(keys.OPEN_TASKS, 0, limit - 1))

    async def latest_task_id(self, fingerprint: str) -> str | None:
        value: str | None = await self.redis.get(keys.latest(fingerprint))
        return value

    # -- submission ------------------------------------------------------------------------

    async def submit(
        self,
        export: ExportRecord,
        new_task: TaskRecord,
        reusable: Callable[[TaskRecord], bool],
        max_active: int | None = None,
        shareable: Callable[[TaskRecord], bool] | None = None,
    ) -> Submitted:
        """Store ``export``, attached to the task now serving its query if there is one (and
        ``shareable``, when given, accepts it), or to a completed one that ``reusable``
        accepts, else to ``new_task``, which is then queued for an upstream slot. Atomic with
        respect to every other submission. Given ``max_active``, a new task's submission may
        also dispatch (``Submitted.dispatched``)."""
        fingerprint = new_task.fingerprint
        inflight_key = keys.inflight(fingerprint)
        latest_key = keys.latest(fingerprint)
        record = export.model_copy(update={"task_id": new_task.id, "coalesced": False})
        created = await self._submit_new(
            keys=[
                inflight_key,
                latest_key,
                keys.task(new_task.id),
                keys.OPEN_TASKS,
                keys.UPSTREAM_WAITING,
                keys.export(record.id),
                keys.client_exports(record.client_id),
                keys.task_exports(new_task.id),
                keys.UPSTREAM_ACTIVE,
                keys.ALL_EXPORTS,
                keys.client_queue(record.client_id),
            ],
            args=[
                self._ttl,
                new_task.id,
                new_task.model_dump_json(),
                _ms(new_task.created_at),
                record.model_dump_json(),
                _ms(record.created_at),
                record.id,
                "" if max_active is None else max_active,
                FAIR_SPACING_MS,
            ],
        )
        if isinstance(created, list):
            return Submitted(record, new_task, new_task=True, dispatched=_strs(created[1:]))
        if created:
            return Submitted(record, new_task, new_task=True)

        async def attempt(pipe: Pipeline) -> Submitted:
            await pipe.watch(inflight_key, latest_key)
            candidates = await pipe.mget(inflight_key, latest_key)  # one round trip, not two
            for candidate_key, task_id in zip((inflight_key, latest_key), candidates, strict=True):
                if not task_id:
                    continue
                await pipe.watch(keys.task(task_id))
                raw = await pipe.get(keys.task(task_id))
                task = TaskRecord.model_validate_json(raw) if raw else None
                if task is None:
                    continue
                if candidate_key == inflight_key and not task.finished:
                    if shareable is None or shareable(task):
                        return self._attach(pipe, export, task)
                    continue
                if candidate_key == latest_key and task.status == "completed" and reusable(task):
                    return self._attach(pipe, export, task)
            pipe.multi()
            self._queue_new_task(pipe, new_task, inflight_key)
            self._queue_export_writes(pipe, record)
            return Submitted(record, new_task, new_task=True)

        result: Submitted = await self.redis.transaction(attempt, value_from_callable=True)
        if result.new_task:
            await self._fair_requeue(
                keys=[keys.UPSTREAM_WAITING, keys.client_queue(record.client_id)],
                args=[new_task.id, _ms(new_task.created_at), FAIR_SPACING_MS],
            )
        return result

    def _queue_new_task(self, pipe: Pipeline, task: TaskRecord, inflight_key: str) -> None:
        pipe.set(inflight_key, task.id, ex=self._ttl)
        pipe.set(keys.task(task.id), task.model_dump_json(), ex=self._ttl)
        pipe.zadd(keys.OPEN_TASKS, {task.id: _ms(task.created_at)})
        pipe.zadd(keys.UPSTREAM_WAITING, {task.id: _ms(task.created_at)})

    def _attach(self, pipe: Pipeline, export: ExportRecord, task: TaskRecord) -> Submitted:
        record = export.model_copy(update={"task_id": task.id, "coalesced": True})
        pipe.multi()
        self._queue_export_writes(pipe, record)
        return Submitted(record, task, new_task=False)

    def _queue_export_writes(self, pipe: Pipeline, record: ExportRecord) -> None:
        pipe.set(keys.export(record.id), record.model_dump_json(), ex=self._ttl)
        pipe.zadd(keys.client_exports(record.client_id), {record.id: _ms(record.created_at)})
        # The all-clients index is everybody's: it forgets exports past their retention as
        # it goes, so it never outgrows the records it names.
        pipe.zadd(keys.ALL_EXPORTS, {record.id: _ms(record.created_at)})
        pipe.zremrangebyscore(keys.ALL_EXPORTS, "-inf", _ms(record.created_at) - self._ttl * 1000)
        pipe.sadd(keys.task_exports(record.task_id), record.id)
        pipe.expire(keys.task_exports(record.task_id), self._ttl)

    # -- task changes ----------------------------------------------------------------------

    async def update_task(
        self, task_id: str, change: Callable[[TaskRecord], TaskRecord | None]
    ) -> TaskUpdate:
        """Apply ``change`` to the stored task atomically. ``change`` returns the new record,
        or None to leave it as it is. A change that finishes the task also releases its
        upstream slot and its coalescing entry in the same transaction."""
        task_key = keys.task(task_id)
        # Fast path: a change between two unfinished states touches only the record, so a
        # compare-and-set suffices; a finishing change (slot, coalescing entry, indexes), or a
        # record changed since it was read, takes the transaction below.
        raw = await self.redis.get(task_key)
        if not raw:
            return TaskUpdate(None, None)
        current = TaskRecord.model_validate_json(raw)
        updated = change(current)
        if updated is None or updated == current:
            return TaskUpdate(current, current)
        if not current.finished and not updated.finished:
            replaced = await self._replace_if_unchanged(
                keys=[task_key], args=[raw, updated.model_dump_json(), self._ttl]
            )
            if replaced:
                return TaskUpdate(current, updated)

        async def attempt(pipe: Pipeline) -> TaskUpdate:
            await pipe.watch(task_key)
            raw = await pipe.get(task_key)
            if not raw:
                return TaskUpdate(None, None)
            current = TaskRecord.model_validate_json(raw)
            updated = change(current)
            if updated is None or updated == current:
                pipe.multi()
                return TaskUpdate(current, current)
            inflight_key = keys.inflight(current.fingerprint)
            releasing = updated.finished and not current.finished
            if releasing:
                await pipe.watch(inflight_key)
                still_inflight = await pipe.get(inflight_key) == task_id
            pipe.multi()
            pipe.set(task_key, updated.model_dump_json(), ex=self.record_ttl(updated))
            if releasing:
                self._queue_release(pipe, updated, still_inflight)
            self._queue_completed_index(pipe, current, updated)
            self._queue_archive_index(pipe, current, updated)
            return TaskUpdate(current, updated)

        result: TaskUpdate = await self.redis.transaction(attempt, value_from_callable=True)
        return result

    async def update_export(
        self, export_id: str, change: Callable[[ExportRecord], ExportRecord | None]
    ) -> ExportRecord | None:
        """Apply ``change`` to the stored export atomically (None: leave it); answers the
        record as it then is (None: no such export)."""
        export_key = keys.export(export_id)

        async def attempt(pipe: Pipeline) -> ExportRecord | None:
            await pipe.watch(export_key)
            raw = await pipe.get(export_key)
            if not raw:
                return None
            current = ExportRecord.model_validate_json(raw)
            updated = change(current)
            pipe.multi()
            if updated is None:
                return current
            pipe.set(export_key, updated.model_dump_json(), keepttl=True)
            return updated

        result: ExportRecord | None = await self.redis.transaction(
            attempt, value_from_callable=True
        )
        return result

    def _queue_release(self, pipe: Pipeline, task: TaskRecord, inflight: bool) -> None:
        if inflight:
            pipe.delete(keys.inflight(task.fingerprint))
        if task.status == "completed":
            pipe.set(keys.latest(task.fingerprint), task.id, ex=self._ttl)
        pipe.zrem(keys.OPEN_TASKS, task.id)
        pipe.zrem(keys.UPSTREAM_WAITING, task.id)
        pipe.zrem(keys.UPSTREAM_ACTIVE, task.id)

    @staticmethod
    def _queue_completed_index(pipe: Pipeline, before: TaskRecord, after: TaskRecord) -> None:
        """Keep ``gw:tasks:completed`` (completed, unexpired tasks by ``expires_at``) in step
        with the task, in the transaction that changes it."""
        if after.status == "completed" and after.expires_at is not None:
            if before.status != "completed" or before.expires_at != after.expires_at:
                pipe.zadd(keys.COMPLETED_TASKS, {after.id: _ms(after.expires_at)})
        elif before.status == "completed":
            pipe.zrem(keys.COMPLETED_TASKS, after.id)

    def record_ttl(self, task: TaskRecord) -> int | None:
        """How long the task's records are kept (seconds; None: for ever). An archived copy
        keeps them (the export is still served) until it expires, plus the usual time."""
        archive = task.archive
        if archive is None or archive.state != "archived":
            return self._ttl
        if task.expires_at is None:
            return None
        left = (task.expires_at - utcnow()).total_seconds()
        return max(self._ttl, int(left) + self._ttl)

    async def keep_followers(self, task: TaskRecord) -> None:
        """Give the task's exports (and their index) the task's own record lifetime."""
        ttl = self.record_ttl(task)
        export_ids = await self.task_export_ids(task.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in [keys.task_exports(task.id), *(keys.export(i) for i in export_ids)]:
                if ttl is None:
                    pipe.persist(key)
                else:
                    pipe.expire(key, ttl)
            await pipe.execute()

    @staticmethod
    def _queue_archive_index(pipe: Pipeline, before: TaskRecord, after: TaskRecord) -> None:
        """Keep ``gw:archive:pending`` (copies still to make, by next attempt) and
        ``gw:archive:kept`` (copies in the store, by expiry) in step with the task."""
        was, now = before.archive, after.archive
        pending = after.status == "completed" and now is not None and now.state == "pending"
        if pending and now is not None:
            due = now.next_attempt_at or after.completed_at or utcnow()
            pipe.zadd(keys.ARCHIVE_PENDING, {after.id: _ms(due)})
        elif was is not None and was.state == "pending":
            pipe.zrem(keys.ARCHIVE_PENDING, after.id)
        if now is not None and now.state == "archived" and (was is None or was != now):
            score: float = _ms(now.expires_at) if now.expires_at else float("inf")
            pipe.zadd(keys.ARCHIVE_KEPT, {after.id: score})

    async def archive_pending_due(self, before: datetime, limit: int = 1000) -> list[str]:
        """Task ids whose copy is pending with its next attempt due at or before ``before``."""
        ids = await self.redis.zrangebyscore(
            keys.ARCHIVE_PENDING, "-inf", _ms(before), start=0, num=limit
        )
        return [str(i) for i in ids]

    async def archive_kept_due(self, before: datetime, limit: int = 1000) -> list[str]:
        """Task ids whose archived copy expired at or before ``before``."""
        ids = await self.redis.zrangebyscore(
            keys.ARCHIVE_KEPT, "-inf", _ms(before), start=0, num=limit
        )
        return [str(i) for i in ids]

    async def archive_kept_sample(self, count: int) -> list[str]:
        """Up to ``count`` random task ids with an archived copy (for verification)."""
        if count <= 0:
            return []
        ids = await self.redis.zrandmember(keys.ARCHIVE_KEPT, count)
        return [str(i) for i in ids or []]

    async def forget_archived(self, task_ids: Iterable[str]) -> None:
        """Drop ids from the archive indexes (their copies are deleted, or records gone)."""
        ids = list(task_ids)
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.ARCHIVE_KEPT, *ids)
                pipe.zrem(keys.ARCHIVE_PENDING, *ids)
                await pipe.execute()

    async def completed_tasks_due(self, before: datetime, limit: int = 1000) -> list[str]:
        """Ids of completed, not yet expired tasks whose ``expires_at`` is at or before
        ``before``, soonest first (the sweep's view of expiry steps that may be lost)."""
        ids = await self.redis.zrangebyscore(
            keys.COMPLETED_TASKS, "-inf", _ms(before), start=0, num=limit
        )
        return [str(i) for i in ids]

    async def forget_completed(self, task_ids: Iterable[str]) -> None:
        """Drop ids from the completed index (their records are gone)."""
        ids = list(task_ids)
        if ids:
            await self.redis.zrem(keys.COMPLETED_TASKS, *ids)

    async def cancel_export(
        self, export_id: str, now: datetime, finished: Callable[[ExportRecord, TaskRecord], bool]
    ) -> tuple[CancelOutcome, ExportRecord | None, TaskRecord | None]:
        """Mark an unfinished export canceled and detach it from its task; a task left with
        nobody following it is canceled too (it stops polling and frees its slot)."""
        export_key = keys.export(export_id)

        async def attempt(
            pipe: Pipeline,
        ) -> tuple[CancelOutcome, ExportRecord | None, TaskRecord | None]:
            await pipe.watch(export_key)
            raw = await pipe.get(export_key)
            if not raw:
                return "missing", None, None
            record = ExportRecord.model_validate_json(raw)
            task_key, followers_key = keys.task(record.task_id), keys.task_exports(record.task_id)
            await pipe.watch(task_key, followers_key)
            task_raw = await pipe.get(task_key)
            if not task_raw:
                return "missing", None, None
            task = TaskRecord.model_validate_json(task_raw)
            if finished(record, task):
                return "finished", record, task
            record = record.model_copy(update={"canceled_at": now})
            followers: set[str] = await pipe.smembers(followers_key)  # type: ignore[misc]
            others = followers - {record.id}
            inflight_key = keys.inflight(task.fingerprint)
            await pipe.watch(inflight_key)
            still_inflight = await pipe.get(inflight_key) == task.id
            pipe.multi()
            pipe.set(export_key, record.model_dump_json(), ex=self._ttl)
            pipe.srem(followers_key, record.id)
            if not others and not task.finished:
                task = task.model_copy(update={"status": "canceled"})
                pipe.set(task_key, task.model_dump_json(), ex=self._ttl)
                self._queue_release(pipe, task, still_inflight)
            return "canceled", record, task

        result: tuple[CancelOutcome, ExportRecord | None, TaskRecord | None]
        result = await self.redis.transaction(attempt, value_from_callable=True)
        return result

    # -- upstream slots --------------------------------------------------------------------

    async def dispatch(self, max_active: int) -> list[str]:
        """Move waiting tasks, oldest first, into free upstream slots; returns those moved."""
        started = await self._dispatch(
            keys=[keys.UPSTREAM_WAITING, keys.UPSTREAM_ACTIVE], args=[max_active]
        )
        return _strs(started)

    async def slot_state(self) -> tuple[list[str], list[str]]:
        """(waiting task ids oldest first, active task ids)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.UPSTREAM_WAITING, 0, -1)
            pipe.zrange(keys.UPSTREAM_ACTIVE, 0, -1)
            waiting, active = await pipe.execute()
        return list(waiting), list(active)

    async def requeue(self, task: TaskRecord) -> None:
        await self.redis.zadd(keys.UPSTREAM_WAITING, {task.id: _ms(task.created_at)}, nx=True)

    async def drop_open(self, task_ids: Iterable[str]) -> None:
        """Forget tasks in the open index (the sweep, for finished or vanished ones)."""
        ids = list(task_ids)
        if ids:
            await self.redis.zrem(keys.OPEN_TASKS, *ids)

    async def claim_sweep(self, owner: str, seconds: float) -> bool:
        """Whether ``owner`` may sweep now: one sweep per interval across all workers."""
        claimed = await self.redis.set(keys.SWEEP_LOCK, owner, nx=True, px=int(seconds * 1000))
        return bool(claimed)

    async def drop_slots(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.UPSTREAM_ACTIVE, *ids)
                pipe.zrem(keys.UPSTREAM_WAITING, *ids)
                await pipe.execute()


def _each(model: type[Record], record_id: str, raw: str | None) -> Record | None:
    """One record of a batch read, or None when it is missing or cannot be read. Batch reads
    serve loops over many records (a task's followers, a page, the sweep): one record that
    cannot be read (stored by an older version, damaged) is logged, counted and skipped
    instead of failing the read of every other."""
    if not raw:
        return None
    try:
        return model.model_validate_json(raw)
    except (ValidationError, ValueError, RecursionError) as exc:
        log.error(
            "unreadable record skipped",
            extra={"record": model.__name__, "record_id": record_id, "error": type(exc).__name__},
        )
        metrics.ISOLATED_FAILURES.labels(f"read_{model.__name__}").inc()
        return None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _strs(values: list[str | bytes]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
