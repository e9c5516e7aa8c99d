"""The archive's rules: copy each completed task's merged CSV once, serve it, keep it for its
retention, check it is still what was written. No framework code here.

    completed --archive_task--> pending --copy ok--> archived --retention--> deleted
                                  |  ^                   \\--verify: the sha256 differs: copied
                                  |  \\-- retry (backoff)      again while the links live
                                  \\-- too many attempts, or links gone: failed

* ``copy`` (the ``archive_task`` job) streams the task's files through the same merge that
  ``/csv`` uses (``app.exports.csv``: same link client, same checks), so the archived bytes are
  exactly what ``/csv`` serves, into one object named after the task
  (``app.archive.store``), counting rows and hashing on the way. One copy per upstream task:
  coalesced exports share it. A failed attempt is retried with exponential backoff (full
  jitter) up to ``GATEWAY_ARCHIVE_MAX_ATTEMPTS``; completion webhooks never wait for it (the
  lifecycle publishes them before it schedules the copy). The object becomes visible only
  when complete, and the record says ``archived`` only after that, so a worker killed
  mid-upload leaves nothing that claims to be archived; the job is run again (arq's recovery,
  or the sweep via ``repair``) and writes the copy anew.
* Once archived, ``expires_at`` becomes the later of the link expiry and the copy's own
  (``GATEWAY_ARCHIVE_RETENTION_SECONDS``; 0 keeps it for ever) and ``export.archived`` goes to
  every follower; the lifecycle reschedules the expiry steps.
* ``repair`` (a sweep hook) re-creates lost copy jobs, deletes copies past their retention and
  schedules the verification of a random sample (``verify_task``: re-read, compare sha256; a
  copy that differs is made again while upstream still has the files, else marked failed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from app.archive.schemas import Verification
from app.archive.storage import StorageError
from app.archive.store import ArchivedCopies, object_name
from app.config import Settings
from app.exports.csv import CsvDownload, CsvStreamError, csv_filename
from app.exports.files import FileFetcher
from app.exports.lifecycle import TaskLifecycle
from app.exports.schemas import Export, TaskArchive, TaskRecord
from app.exports.service import ExportService
from app.exports.store import ExportStore
from app.platform import metrics
from app.platform.clock import utcnow
from app.platform.errors import GatewayError, ServiceUnavailable
from app.platform.jobs import JobQueue

log = logging.getLogger(__name__)

# /readyz waits at most this long for the store's answer (the probe's outcome is cached).
READY_PROBE_SECONDS = 5.0


class RowCounter:
    """Counts the records of a CSV stream as it passes: line breaks outside quoted values
    (a quoted value may hold line breaks), less the header record."""

    def __init__(self) -> None:
        self.breaks = 0
        self.quoted = False

    async def count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def feed(self, chunk: bytes) -> None:
        if not self.quoted and b'"' not in chunk:
            self.breaks += chunk.count(b"\n")
            return
        parts = chunk.split(b'"')
        outside = parts[1::2] if self.quoted else parts[0::2]
        self.breaks += sum(part.count(b"\n") for part in outside)
        if len(parts) % 2 == 0:  # an odd number of quotes: the state flips
            self.quoted = not self.quoted

    @property
    def rows(self) -> int:
        return max(0, self.breaks - 1)


@dataclass
class ArchivedCsv:
    """An export's archived copy, ready to be served."""

    export: Export
    filename: str
    name: str
    size: int
    sha256: str
    copies: ArchivedCopies

    def body(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.copies.read(self.name, start, end)


class ArchiveVerifier:
    """Re-reads an archived copy and compares it with what was recorded (read-only: the CLI's
    ``verify`` uses it directly)."""

    def __init__(self, *, store: ExportStore, copies: ArchivedCopies) -> None:
        self.store = store
        self.copies = copies

    async def check_export(self, export_id: str) -> Verification:
        record = await self.store.get_export(export_id)
        task = await self.store.get_task(record.task_id) if record is not None else None
        if record is None or task is None:
            return Verification(export_id=export_id, outcome="unknown", detail="no such export")
        return await self.check(task, export_id=export_id)

    async def check(self, task: TaskRecord, export_id: str | None = None) -> Verification:
        archive = task.archive
        found = Verification(export_id=export_id, task_id=task.id, outcome="not_archived")
        if archive is None or archive.state != "archived" or archive.sha256 is None:
            state = archive.state if archive is not None else "off"
            found.detail = f"the export has no archived copy (archive state: {state})"
            return found
        name = archive.object or object_name(task.id)
        found.object = name
        found.expected_sha256, found.expected_bytes = archive.sha256, archive.bytes
        try:
            if await self.copies.stat(name) is None:
                found.outcome, found.detail = "missing", f"{name} is not in the archive"
                return found
            found.sha256, found.bytes = await self.copies.sha256(name)
        except StorageError as exc:
            found.outcome, found.detail = "error", str(exc)
            return found
        same = found.sha256 == archive.sha256 and found.bytes == archive.bytes
        found.outcome = "ok" if same else "mismatch"
        found.detail = None if same else "the copy no longer matches the sha256 recorded"
        return found


class ArchiveService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: ExportStore,
        exports: ExportService,
        lifecycle: TaskLifecycle,
        queue: JobQueue,
        fetcher: FileFetcher,
        copies: ArchivedCopies | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.exports = exports
        self.lifecycle = lifecycle
        self.queue = queue
        self.fetcher = fetcher
        self.copies = copies
        self.verifier = ArchiveVerifier(store=store, copies=copies) if copies else None
        self._ready: tuple[float, str | None] | None = None
        self._ready_lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.copies is not None

    # -- the copy --------------------------------------------------------------------------

    async def copy(self, task_id: str) -> None:
        """Copy the task's merged CSV into the archive (the ``archive_task`` job)."""
        if self.copies is None:
            return
        task = await self.store.get_task(task_id)
        if task is None or task.archive is None or task.archive.state != "pending":
            return
        now = utcnow()
        links_expire_at = task.links_expire_at or task.expires_at
        if task.status != "completed" or (links_expire_at is not None and links_expire_at <= now):
            await self._give_up(task, "the links expired before a copy could be made")
            return
        export = await self._an_export(task)
        if export is None:
            await self._give_up(task, "no export follows the task any more")
            return
        download = CsvDownload(
            export,
            csv_filename(export),
            self.fetcher,
            None,
            list(task.links),
            deadline=self.fetcher.deadline(),
        )
        rows = RowCounter()
        started = time.monotonic()
        log.info("archive copy started", extra={"task_id": task.id, "files": len(task.links)})
        try:
            written = await self.copies.save(task.id, rows.count(download.body()))
        except (StorageError, CsvStreamError, GatewayError) as exc:
            await self._retry(task, str(exc))
            return
        finally:
            await download.aclose()
        archived = await self._record(task.id, written.name, written.size, written.sha256, rows)
        metrics.ARCHIVE_BYTES.inc(written.size)
        if archived is None:
            return
        metrics.ARCHIVE_COPIES.labels("archived").inc()
        log.info(
            "archived",
            extra={
                "task_id": task.id,
                "bytes": written.size,
                "rows": rows.rows,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        await self.store.keep_followers(archived)
        await self.lifecycle.on_archived(archived)

    async def _an_export(self, task: TaskRecord) -> Export | None:
        for record in await self.store.get_exports(await self.store.task_export_ids(task.id)):
            if record is not None:
                return Export.of(record, task)
        return None

    async def _record(
        self, task_id: str, name: str, size: int, sha256: str, rows: RowCounter
    ) -> TaskRecord | None:
        keep = self.settings.archive_retention_seconds

        def change(task: TaskRecord) -> TaskRecord | None:
            archive = task.archive
            if task.status != "completed" or archive is None or archive.state != "pending":
                return None
            archived_at = utcnow()
            copy_expires = archived_at + timedelta(seconds=keep) if keep > 0 else None
            links_expire_at = task.links_expire_at or task.expires_at
            expires_at = copy_expires
            if copy_expires is not None and links_expire_at is not None:
                expires_at = max(copy_expires, links_expire_at)
            done = archive.model_copy(
                update={
                    "state": "archived",
                    "archived_at": archived_at,
                    "bytes": size,
                    "rows": rows.rows,
                    "sha256": sha256,
                    "expires_at": copy_expires,
                    "object": name,
                    "job_key": None,
                    "next_attempt_at": None,
                    "error": None,
                }
            )
            update: dict[str, object] = {"archive": done, "expires_at": expires_at}
            if expires_at != task.expires_at:
                update["warned_at"] = None  # the warning is owed for the new time
            return task.model_copy(update=update)

        update = await self.store.update_task(task_id, change)
        return update.after if update.changed else None

    async def _retry(self, task: TaskRecord, reason: str) -> None:
        archive = task.archive
        assert archive is not None
        attempts = archive.attempts + 1
        if attempts >= self.settings.archive_max_attempts:
            await self._give_up(task, f"gave up after {attempts} attempts: {reason}")
            return
        wait = min(
            self.settings.archive_retry_max_seconds,
            self.settings.archive_retry_seconds * 2 ** (attempts - 1),
        )
        delay = random.uniform(wait / 2, wait)  # jitter: copies failing together spread out
        now = utcnow()
        log.warning(
            "archive copy failed; retrying",
            extra={"task_id": task.id, "error": reason, "retry_in": round(delay, 3)},
        )
        metrics.ARCHIVE_COPIES.labels("retry").inc()

        def change(current: TaskRecord) -> TaskRecord | None:
            now_archive = current.archive
            if (
                now_archive is None
                or now_archive.state != "pending"
                or now_archive.attempts != archive.attempts
            ):
                return None
            return current.model_copy(
                update={
                    "archive": now_archive.model_copy(
                        update={
                            "attempts": attempts,
                            "job_key": f"archive:{task.id}:{attempts}",
                            "next_attempt_at": now + timedelta(seconds=delay),
                            "error": reason,
                        }
                    )
                }
            )

        update = await self.store.update_task(task.id, change)
        if update.changed and update.after is not None:
            await self.lifecycle.schedule_archive(update.after)

    async def _give_up(self, task: TaskRecord, reason: str) -> None:
        def change(current: TaskRecord) -> TaskRecord | None:
            archive = current.archive
            if archive is None or archive.state != "pending":
                return None
            failed = archive.model_copy(
                update={
                    "state": "failed",
                    "error": reason,
                    "job_key": None,
                    "next_attempt_at": None,
                }
            )
            return current.model_copy(update={"archive": failed})

        update = await self.store.update_task(task.id, change)
        if update.changed:
            metrics.ARCHIVE_COPIES.labels("failed").inc()
            log.error("archive copy failed for good", extra={"task_id": task.id, "error": reason})

    # -- serving ---------------------------------------------------------------------------

    async def open_copy(self, client_id: str, export_id: str) -> ArchivedCsv | None:
        """The export's archived copy when it has one to serve, else None (``/csv`` then
        serves upstream's links, with its own answers for exports that are not completed)."""
        if self.copies is None:
            return None
        try:
            record, task = await self.exports.load(client_id, export_id)
        except GatewayError:
            return None  # the links path answers the 404 in its own words
        if record.feed_id is not None:
            return None  # a feed run's CSV is its own windowed file, not the task's copy
        export = Export.of(record, task)
        archive = task.archive
        if export.status != "completed" or archive is None or archive.state != "archived":
            return None
        if archive.expires_at is not None and archive.expires_at <= utcnow():
            return None  # the copy is past its retention; upstream's links outlive it
        name = archive.object or object_name(task.id)
        try:
            info = await self.copies.stat(name)
        except StorageError as exc:
            info, problem = None, str(exc)
        else:
            problem = f"{name} is missing from the archive"
        if info is None or archive.sha256 is None:
            log.error("archived copy unavailable", extra={"export_id": export.id, "error": problem})
            if export.links:
                return None  # upstream still has the files: serve those
            raise ServiceUnavailable(
                f"the archived copy of export {export.id} cannot be read right now; "
                "try again later",
                headers={"Retry-After": "30"},
            )
        return ArchivedCsv(
            export, csv_filename(export), name, info.size, archive.sha256, self.copies
        )

    # -- upkeep (the sweep) ----------------------------------------------------------------

    async def repair(self, grace_seconds: float) -> int:
        """A sweep hook: re-create lost copy jobs, delete copies past their retention, and
        schedule the verification of a sample. Returns what it repaired or deleted."""
        if self.copies is None:
            return 0
        now = utcnow()
        repaired = 0
        for task_id in await self.store.archive_pending_due(now - timedelta(seconds=grace_seconds)):
            task = await self.store.get_task(task_id)
            if task is None:
                await self.store.forget_archived([task_id])
                continue
            archive = task.archive
            if archive is None or archive.state != "pending":
                continue
            key = archive.job_key or f"archive:{task.id}:{archive.attempts}"
            if await self.queue.ensure_scheduled("archive_task", task.id, key=key):
                repaired += 1
                log.warning("sweep re-created a lost archive copy", extra={"task_id": task.id})
        for task_id in await self.store.archive_kept_due(now):
            try:
                await self.copies.delete(object_name(task_id))
            except StorageError as exc:
                log.error("archive retention: delete failed", extra={"error": str(exc)})
                continue
            await self.store.forget_archived([task_id])
            metrics.ARCHIVE_DELETED.inc()
            log.info(
                "archived copy deleted at the end of its retention", extra={"task_id": task_id}
            )
            repaired += 1
        hour = int(now.timestamp() // 3600)
        for task_id in await self.store.archive_kept_sample(self.settings.archive_verify_sample):
            await self.queue.schedule("verify_archive", task_id, key=f"verify:{task_id}:{hour}")
        return repaired

    async def verify_task(self, task_id: str) -> Verification | None:
        """Re-read one archived copy (the ``verify_archive`` job). A copy that differs from
        what was recorded, or is gone, is made again while upstream still has the files;
        otherwise the archive is marked failed and the export expires with its links."""
        if self.verifier is None:
            return None
        task = await self.store.get_task(task_id)
        if task is None:
            return None
        found = await self.verifier.check(task)
        metrics.ARCHIVE_VERIFICATIONS.labels(found.outcome).inc()
        if found.outcome == "ok":
            await self._mark_verified(task_id)
        elif found.outcome in ("mismatch", "missing"):
            log.error(
                "archived copy failed verification",
                extra={"task_id": task_id, "outcome": found.outcome, "error": found.detail},
            )
            await self._after_bad_copy(task_id, found.detail or found.outcome)
        elif found.outcome == "error":
            log.warning("archive verification: store error", extra={"error": found.detail})
        return found

    async def _mark_verified(self, task_id: str) -> None:
        now = utcnow()

        def change(task: TaskRecord) -> TaskRecord | None:
            if task.archive is None or task.archive.state != "archived":
                return None
            return task.model_copy(
                update={"archive": task.archive.model_copy(update={"verified_at": now})}
            )

        await self.store.update_task(task_id, change)

    async def _after_bad_copy(self, task_id: str, reason: str) -> None:
        now = utcnow()

        def change(task: TaskRecord) -> TaskRecord | None:
            archive = task.archive
            if task.status != "completed" or archive is None or archive.state != "archived":
                return None
            links_expire_at = task.links_expire_at or task.expires_at
            if task.links and links_expire_at is not None and now < links_expire_at:
                again = TaskArchive(
                    state="pending",
                    job_key=f"archive:{task.id}:again:{int(now.timestamp())}",
                    next_attempt_at=now,
                    error=reason,
                )
                return task.model_copy(update={"archive": again, "expires_at": links_expire_at})
            failed = archive.model_copy(update={"state": "failed", "error": reason})
            # nothing left to serve: the export expires with its links
            return task.model_copy(update={"archive": failed, "expires_at": links_expire_at})

        update = await self.store.update_task(task_id, change)
        if update.changed and update.after is not None:
            await self.lifecycle.schedule_archive(update.after)
            await self.lifecycle.ensure_expiry_jobs(update.after)

    # -- readiness -------------------------------------------------------------------------

    async def readiness(self) -> str | None:
        """None when the archive can be written and read (or archiving is off), else why
        not. The store is probed at most every ``GATEWAY_ARCHIVE_READY_CACHE_SECONDS``."""
        if self.copies is None:
            return None
        async with self._ready_lock:
            now = time.monotonic()
            if self._ready is not None and now - self._ready[0] < (
                self.settings.archive_ready_cache_seconds
            ):
                return self._ready[1]
            try:
                await asyncio.wait_for(self.copies.probe(), READY_PROBE_SECONDS)
                reason = None
            except StorageError as exc:
                reason = str(exc)
            except TimeoutError:
                reason = f"the archive at {self.copies.location} did not answer within "
                reason += f"{READY_PROBE_SECONDS:g} s"
            self._ready = (time.monotonic(), reason)
            return reason

    async def report_readiness(self) -> None:
        """Log at start-up whether the archive can be used."""
        if self.copies is None:
            return
        reason = await self.readiness()
        if reason is None:
            log.info("archive ready", extra={"archive": self.copies.location})
        else:
            log.error(
                "archive unavailable", extra={"archive": self.copies.location, "error": reason}
            )
