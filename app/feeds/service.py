"""What feeds do: caller operations, the scheduler's tick, and the life of a run. No framework.

A run's window is ``[watermark, cutoff)``, where ``cutoff = run start - settle`` (the settle
time lets upstream index late records before a window closes over them). Its life:

    claim (feed.run set, in one transaction: never two runs of a feed, never one run twice)
      -> submit: an export with the window; upstream asked ``created_time>=<date of from>``
         and the feed's filter (upstream only understands dates)
      -> the task completes -> cut: the files streamed, rows outside the window dropped,
         the rest written as the run's own CSV (``cut_feed_run`` job)
      -> complete: the export completed, watermark := to, feed.run cleared, export.completed
    the task (or the cut) fails -> the same window again after a wait, as a new export, up to
      GATEWAY_FEED_RUN_ATTEMPTS; then export.failed and the watermark stays where it was.

The watermark moves only in ``_complete``, and only to the ``to`` of the run that wrote its
file, so across a feed's runs every record with ``start_from <= created_time`` appears once.
A step lost to a crash is found again by the scheduler, which looks at a feed with a run in
progress whenever it is due (``_reconcile``); every step is idempotent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from app.archive.storage import ObjectStorage, StorageError
from app.config import Settings
from app.exports.csv import CsvDownload, CsvStreamError
from app.exports.files import FileFetcher
from app.exports.lifecycle import EventType, Notifier
from app.exports.listing import decode_cursor, encode_cursor
from app.exports.schemas import (
    ErrorInfo,
    Export,
    ExportPage,
    ExportRecord,
    ExportRequest,
    RunFile,
    TaskRecord,
    Window,
    normalise_fields,
)
from app.exports.service import CallbackCheck, ExportService, FeedRunOrder, new_export_id
from app.exports.store import ExportStore
from app.feeds.schedule import ScheduleError, check_schedule, next_fire
from app.feeds.schemas import (
    IMMUTABLE_MEMBERS,
    RUN_CHECK,
    Feed,
    FeedCreate,
    FeedPage,
    FeedPatch,
    FeedRecord,
    RunState,
)
from app.feeds.store import FeedStore
from app.feeds.window import CutCount, WindowCutError, cut
from app.platform import metrics
from app.platform.clock import utcnow
from app.platform.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    MemberProblem,
    NotFound,
    invalid,
)
from app.platform.jobs import JobQueue
from app.upstream.catalog import FieldCatalog
from app.upstream.filters import FilterSyntaxError, normalise_filter

log = logging.getLogger(__name__)

FEED_ID = re.compile(r"^feed_[A-Za-z0-9_-]{22}$")
# A run claimed this long ago whose export does not exist was lost between claim and submit.
CLAIM_GRACE = timedelta(seconds=30)
BAD_ROW = "feed_bad_row"  # the error code of a run whose files cannot be cut (no retry helps)


def new_feed_id() -> str:
    return "feed_" + secrets.token_urlsafe(16)  # 128 random bits


def upstream_filter(feed_filter: str | None, start: datetime) -> str:
    """What upstream is asked: every record from the date of ``start`` on, and the feed's own
    filter (upstream is only known to understand ``>=`` with a date)."""
    day = start.astimezone(UTC).date().isoformat()
    narrowing = f"created_time>={day}"
    combined = narrowing if feed_filter is None else f"{narrowing} and ({feed_filter})"
    normalised = normalise_filter(combined)
    assert normalised is not None
    return normalised


def _parse_start_from(text: str, now: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise invalid("start_from", "is not an ISO 8601 time (e.g. 2026-01-01T00:00:00Z)") from None
    if isinstance(moment, datetime) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if moment > now:
        raise invalid("start_from", "is in the future; a feed starts from a time already past")
    if moment < datetime(1970, 1, 1, tzinfo=UTC):
        raise invalid("start_from", "is before 1970")
    return moment


def _checked_schedule(expression: str) -> str:
    try:
        return check_schedule(expression)
    except ScheduleError as exc:
        raise invalid("schedule", str(exc)) from None


class FeedService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: FeedStore,
        exports: ExportService,
        export_store: ExportStore,
        queue: JobQueue,
        notifier: Notifier | None,
        files: ObjectStorage,
        fetcher: FileFetcher,
        callbacks: CallbackCheck | None = None,
        catalog: FieldCatalog | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.exports = exports
        self.export_store = export_store
        self.queue = queue
        self.notifier = notifier
        self.files = files
        self.fetcher = fetcher
        self.callbacks = callbacks
        self.catalog = catalog

    # -- caller operations -----------------------------------------------------------------

    async def create(self, client_id: str, request: FeedCreate) -> Feed:
        now = utcnow()
        try:
            query_filter = normalise_filter(request.filter)
        except FilterSyntaxError as exc:
            raise invalid("filter", str(exc)) from None
        schedule = _checked_schedule(request.schedule)
        start_from = (
            now if request.start_from is None else _parse_start_from(request.start_from, now)
        )
        fields = normalise_fields(request.fields)
        if request.callback_url is not None and self.callbacks is not None:
            await self.callbacks.check_callback(client_id, request.callback_url)
        if self.catalog is not None and request.site_id is not None and request.fields:
            await self.catalog.verify(request.site_id, request.fields)
        record = FeedRecord(
            id=new_feed_id(),
            client_id=client_id,
            filter=query_filter,
            fields=fields,
            site_id=request.site_id,
            schedule=schedule,
            start_from=start_from,
            watermark=start_from,
            next_run_at=next_fire(schedule, now),
            paused=request.paused,
            callback_url=request.callback_url,
            metadata=request.metadata,
            created_at=now,
        )
        if await self.store.create(record, self.settings.client_max_feeds) == "full":
            limit = self.settings.client_max_feeds
            raise Conflict(
                f"a client may have at most {limit} feeds; delete one first",
                extra={"max_feeds": limit},
            )
        log.info("feed created", extra={"feed_id": record.id, "client_id": client_id})
        return Feed.of(record)

    async def get(self, client_id: str, feed_id: str) -> Feed:
        return Feed.of(await self._load(client_id, feed_id))

    async def page(self, client_id: str, *, limit: int, cursor: str | None) -> FeedPage:
        position = _decode_feed_cursor(cursor) if cursor else None
        entries = await self.store.client_feeds_before(client_id, position, limit + 1)
        records = await self.store.get_many([feed_id for feed_id, _ in entries[:limit]])
        data = [Feed.of(r) for r in records if r is not None and r.client_id == client_id]
        more = len(entries) > limit
        last = entries[limit - 1] if more else None
        return FeedPage(data=data, next_cursor=encode_cursor((last[1], last[0])) if last else None)

    async def page_across_clients(
        self, client_id: str | None, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, Feed]], str | None]:
        """For the operator console: (client id, feed) pairs, newest first, of one client
        (``client_id``) or of every client (None, an admin's view)."""
        position = _decode_feed_cursor(cursor) if cursor else None
        if client_id is None:
            entries = await self.store.all_feeds_before(position, limit + 1)
        else:
            entries = await self.store.client_feeds_before(client_id, position, limit + 1)
        records = await self.store.get_many([feed_id for feed_id, _ in entries[:limit]])
        pairs = [
            (r.client_id, Feed.of(r))
            for r in records
            if r is not None and client_id in (None, r.client_id)
        ]
        more = len(entries) > limit
        last = entries[limit - 1] if more else None
        return pairs, encode_cursor((last[1], last[0])) if last else None

    async def owner_of(self, feed_id: str) -> str | None:
        """The client a feed belongs to (for an admin acting as that client), or None."""
        record = await self.store.get(feed_id)
        return record.client_id if record is not None else None

    async def set_paused(self, client_id: str, feed_id: str, paused: bool) -> Feed:
        return await self.patch(client_id, feed_id, FeedPatch(paused=paused))

    async def patch(self, client_id: str, feed_id: str, request: FeedPatch) -> Feed:
        await self._load(client_id, feed_id)
        given = request.model_fields_set
        refused = [m for m in IMMUTABLE_MEMBERS if m in given]
        if refused:
            raise InvalidRequest(
                f"{', '.join(refused)} cannot be changed: a changed query would break "
                "exactly-once delivery; create a new feed instead",
                errors=[_problem(m) for m in refused],
            )
        update: dict[str, Any] = {}
        if "schedule" in given:
            if request.schedule is None:
                raise invalid("schedule", "cannot be null")
            update["schedule"] = _checked_schedule(request.schedule)
        if "paused" in given:
            if request.paused is None:
                raise invalid("paused", "must be true or false")
            update["paused"] = request.paused
        if "callback_url" in given:
            if request.callback_url is not None and self.callbacks is not None:
                await self.callbacks.check_callback(client_id, request.callback_url)
            update["callback_url"] = request.callback_url
        if "metadata" in given:
            update["metadata"] = request.metadata
        now = utcnow()

        def change(feed: FeedRecord) -> FeedRecord:
            changed = feed.model_copy(update=update)
            resumed = feed.paused and not changed.paused
            if "schedule" in update or resumed:
                changed.next_run_at = next_fire(changed.schedule, now)
            return changed

        result = await self.store.update(feed_id, change)
        if result.after is None:
            raise NotFound(f"no feed {feed_id!r}")
        return Feed.of(result.after)

    async def delete(self, client_id: str, feed_id: str) -> None:
        """Delete the feed; its runs' exports stay (a run in progress finishes as an export)."""
        await self.store.delete(await self._load(client_id, feed_id))
        log.info("feed deleted", extra={"feed_id": feed_id, "client_id": client_id})

    async def run_now(self, client_id: str, feed_id: str) -> Export:
        """Start a run now (409 while one is unfinished, or when the window would be empty)."""
        feed = await self._load(client_id, feed_id)
        now = utcnow()
        if feed.run is not None:
            feed = await self._reconcile(feed, now) or feed
        if feed.run is not None:
            raise Conflict(
                f"feed {feed_id} has a run in progress ({feed.run.export_id}); runs of a feed "
                "never overlap: try again once it has finished",
                extra={"export_id": feed.run.export_id},
            )
        started = await self._start(feed.id, now, scheduled=False)
        if started is None:
            cutoff = self._cutoff(now)
            raise Conflict(
                f"nothing to export yet: a run now would end at {_iso(cutoff)} (settle time "
                f"{self.settings.feed_settle_seconds:g} s), not after the watermark "
                f"{_iso(feed.watermark)}",
            )
        return started

    async def runs(
        self, client_id: str, feed_id: str, *, limit: int, cursor: str | None
    ) -> ExportPage:
        await self._load(client_id, feed_id)
        position = decode_cursor(cursor) if cursor else None
        entries = await self.store.runs_before(feed_id, position, limit + 1)
        data: list[Export] = []
        for export_id, _ in entries[:limit]:
            record, task = await self.export_store.get_export_with_task(export_id)
            if record is not None and task is not None and record.client_id == client_id:
                data.append(Export.of(record, task))
        more = len(entries) > limit
        last = entries[limit - 1] if more else None
        return ExportPage(
            data=data, next_cursor=encode_cursor((last[1], last[0])) if last else None
        )

    async def _load(self, client_id: str, feed_id: str) -> FeedRecord:
        if not FEED_ID.match(feed_id):
            raise NotFound(f"no feed {feed_id!r}")
        feed = await self.store.get(feed_id)
        # Another client's feed is exactly as absent as one that never existed.
        if feed is None or feed.client_id != client_id:
            raise NotFound(f"no feed {feed_id!r}")
        return feed

    # -- the scheduler ---------------------------------------------------------------------

    async def tick(self, now: datetime) -> list[str]:
        """Start every due run (and move on every run whose next step is due); answers the
        export ids started. Any number of workers may tick at once: each run is claimed in a
        transaction on its feed, so it starts once."""
        started: list[str] = []
        for feed_id in await self.store.due(now):
            try:
                feed = await self.store.get(feed_id)
                if feed is None:
                    await self.store.forget_due(feed_id)
                    continue
                if feed.run is not None:
                    feed = await self._reconcile(feed, now)
                    if feed is None:
                        continue
                    if feed.run is not None:
                        if feed.run.retry_at is None:  # still running: check again later
                            await self.store.due_again(feed_id, now + RUN_CHECK)
                        continue
                if feed.paused or feed.next_run_at is None or feed.next_run_at > now:
                    continue
                export = await self._start(feed_id, now, scheduled=True)
                if export is not None:
                    started.append(export.id)
            except GatewayError as exc:  # e.g. the site's fields changed: try next time
                log.warning("feed run not started", extra={"feed_id": feed_id, "error": exc.detail})
        return started

    def _cutoff(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.settings.feed_settle_seconds)

    async def _start(self, feed_id: str, now: datetime, *, scheduled: bool) -> Export | None:
        """Claim a run of ``[watermark, now - settle)`` and submit it. None when there is
        nothing to claim: a run in progress, not due (``scheduled``), or an empty window (a
        scheduled one then just moves on to its next time)."""
        cutoff = self._cutoff(now)
        export_id = new_export_id()

        def claim(feed: FeedRecord) -> FeedRecord | None:
            if feed.run is not None:
                return None
            if scheduled and (feed.paused or feed.next_run_at is None or feed.next_run_at > now):
                return None
            changed = feed.model_copy()
            if scheduled:
                changed.next_run_at = next_fire(feed.schedule, now)
            if cutoff > feed.watermark:
                window = Window(start=feed.watermark, end=cutoff)
                changed.run = RunState(export_id=export_id, window=window, started_at=now)
            elif not scheduled:
                return None
            return changed

        result = await self.store.update(feed_id, claim)
        feed = result.after
        if not result.changed or feed is None or feed.run is None:
            return None
        if feed.run.export_id != export_id:
            return None
        return await self._submit(feed, feed.run, now)

    async def _submit(self, feed: FeedRecord, run: RunState, now: datetime) -> Export:
        """Submit the run's export (the claim is released if the submission is refused)."""
        request = ExportRequest(
            filter=upstream_filter(feed.filter, run.window.start),
            fields=feed.fields,
            site_id=feed.site_id,
            callback_url=feed.callback_url,
            metadata=feed.metadata,
        )
        order = FeedRunOrder(
            feed_id=feed.id, window=run.window, export_id=run.export_id, not_before=now
        )
        try:
            export = await self.exports.submit(feed.client_id, request, run=order)
        except GatewayError:
            await self._release(feed.id, run.export_id)
            raise
        await self.store.add_run(feed.id, export.id, export.created_at)
        metrics.FEED_RUNS.labels("started").inc()
        log.info(
            "feed run started",
            extra={
                "feed_id": feed.id,
                "export_id": export.id,
                "attempt": run.attempt,
                "window": run.window.model_dump(mode="json"),
            },
        )
        return export

    async def _release(self, feed_id: str, export_id: str) -> None:
        def release(feed: FeedRecord) -> FeedRecord | None:
            if feed.run is None or feed.run.export_id != export_id:
                return None
            return feed.model_copy(update={"run": None})

        await self.store.update(feed_id, release)

    async def _reconcile(self, feed: FeedRecord, now: datetime) -> FeedRecord | None:
        """Move a run in progress on when its next step is due or was lost: a retry whose
        time has come, a claim whose export was never submitted, an export canceled by its
        caller, finished without the feed hearing of it, or a cut never scheduled. Answers
        the feed as it then is."""
        run = feed.run
        if run is None:
            return feed
        if run.retry_at is not None:
            if run.retry_at <= now:
                await self._retry(feed.id, run.export_id, now)
            return await self.store.get(feed.id)
        record, task = await self.export_store.get_export_with_task(run.export_id)
        if record is None or task is None:
            if now - run.started_at >= CLAIM_GRACE:
                await self._submit(feed, run, now)
            return await self.store.get(feed.id)
        export = Export.of(record, task)
        if export.status == "canceled":
            await self._release(feed.id, run.export_id)
        elif export.status == "completed":
            await self._complete(record)
        elif export.status == "failed":
            error = export.error or ErrorInfo(code="feed_run_failed", message="the run failed")
            await self._run_failed(record, error, permanent=error.code == BAD_ROW)
        elif task.status == "completed":  # upstream done, file not written: the cut was lost
            await self.queue.schedule("cut_feed_run", record.id, key=f"cut:{record.id}")
        return await self.store.get(feed.id)

    # -- a run's life ----------------------------------------------------------------------

    async def task_finished(self, record: ExportRecord, task: TaskRecord, event: EventType) -> None:
        """The lifecycle's hook: a run's upstream task finished (see ``FeedRuns``)."""
        if event == "export.completed":
            await self.queue.schedule("cut_feed_run", record.id, key=f"cut:{record.id}")
        elif event == "export.failed":
            error = task.error or ErrorInfo(code="upstream_failed", message="the task failed")
            await self._run_failed(record, error, permanent=False)

    async def cut_run(self, export_id: str) -> None:
        """Write a run's windowed CSV from its completed task's files, then complete it."""
        record, task = await self.export_store.get_export_with_task(export_id)
        if record is None or task is None or record.window is None or record.run_file is None:
            return
        if record.run_file.state == "written":
            await self._complete(record)  # a rerun after a crash: finish what is left
            return
        if record.run_file.state != "pending" or task.status != "completed":
            return
        count = CutCount()
        name = f"feeds/{record.feed_id}/{record.id}.csv"
        download = CsvDownload(
            Export.of(record, task),
            name,
            self.fetcher,
            None,
            task.links,
            deadline=self.fetcher.deadline(),
        )
        source_failure: list[Exception] = []
        window = record.window

        async def windowed() -> AsyncIterator[bytes]:
            # The store reports a failing source as its own failure: keep the real one.
            try:
                async for piece in cut(download.body(), window, count):
                    yield piece
            except (WindowCutError, CsvStreamError) as exc:
                source_failure.append(exc)
                raise

        try:
            written = await self.files.write(name, windowed())
        except (WindowCutError, CsvStreamError, StorageError) as exc:
            cause = source_failure[0] if source_failure else exc
            if isinstance(cause, WindowCutError):  # the data itself: trying again cannot help
                await self._cut_failed(record, ErrorInfo(code=BAD_ROW, message=str(cause)), True)
                return
            message = f"the run's CSV could not be written: {cause}"
            await self._cut_failed(record, ErrorInfo(code="feed_cut_failed", message=message))
            return
        now = utcnow()

        def written_file(current: ExportRecord) -> ExportRecord | None:
            if current.run_file is None or current.run_file.state != "pending":
                return None
            current.run_file = RunFile(
                state="written",
                object_key=written.name,
                bytes=written.size,
                rows=count.kept,
                sha256=written.sha256,
                written_at=now,
            )
            return current

        updated = await self.export_store.update_export(export_id, written_file)
        metrics.FEED_ROWS.inc(count.kept)
        log.info(
            "feed run written",
            extra={"export_id": export_id, "rows_read": count.read, "rows": count.kept},
        )
        if updated is not None:
            await self._complete(updated)

    async def _cut_failed(
        self, record: ExportRecord, error: ErrorInfo, permanent: bool = False
    ) -> None:
        def failed(current: ExportRecord) -> ExportRecord | None:
            if current.run_file is None or current.run_file.state != "pending":
                return None
            current.run_file = RunFile(state="failed", error=error)
            return current

        updated = await self.export_store.update_export(record.id, failed)
        log.warning("feed run cut failed", extra={"export_id": record.id, "error": error.message})
        if updated is not None:
            await self._run_failed(updated, error, permanent=permanent)

    async def _complete(self, record: ExportRecord) -> None:
        """The run's file is written: the watermark moves to its ``to``, and the caller
        hears of it. Idempotent (a repeat finds the run already cleared)."""
        if record.feed_id is None or record.window is None:
            return
        end = record.window.end

        def complete(feed: FeedRecord) -> FeedRecord | None:
            if feed.run is None or feed.run.export_id != record.id:
                return None
            return feed.model_copy(
                update={"watermark": end, "last_export_id": record.id, "run": None}
            )

        if (await self.store.update(record.feed_id, complete)).changed:
            metrics.FEED_RUNS.labels("completed").inc()
        await self._publish(record, "export.completed")

    async def _run_failed(self, record: ExportRecord, error: ErrorInfo, *, permanent: bool) -> None:
        """An attempt failed: try the same window again after a wait, or, out of attempts
        (or when trying again cannot help), give up: export.failed, the watermark stays."""
        if record.feed_id is None:
            return
        now = utcnow()
        gave_up = False

        def failed(feed: FeedRecord) -> FeedRecord | None:
            nonlocal gave_up
            run = feed.run
            if run is None or run.export_id != record.id or run.retry_at is not None:
                return None
            if permanent or run.attempt >= self.settings.feed_run_attempts:
                gave_up = True
                return feed.model_copy(update={"run": None, "last_export_id": record.id})
            wait = self.settings.feed_retry_seconds * 2 ** (run.attempt - 1)
            retry = run.model_copy(update={"retry_at": now + timedelta(seconds=wait)})
            return feed.model_copy(update={"run": retry})

        result = await self.store.update(record.feed_id, failed)
        if not result.changed:
            return
        log.warning(
            "feed run failed",
            extra={"export_id": record.id, "error": error.message, "gave_up": gave_up},
        )
        metrics.FEED_RUNS.labels("failed" if gave_up else "retrying").inc()
        if gave_up:
            await self._publish(record, "export.failed")

    async def _retry(self, feed_id: str, failed_export_id: str, now: datetime) -> None:
        export_id = new_export_id()

        def retry(feed: FeedRecord) -> FeedRecord | None:
            run = feed.run
            if run is None or run.export_id != failed_export_id or run.retry_at is None:
                return None
            again = RunState(
                export_id=export_id, window=run.window, attempt=run.attempt + 1, started_at=now
            )
            return feed.model_copy(update={"run": again})

        result = await self.store.update(feed_id, retry)
        feed = result.after
        if result.changed and feed is not None and feed.run is not None:
            await self._submit(feed, feed.run, now)

    async def _publish(self, record: ExportRecord, event: EventType) -> None:
        if self.notifier is None or not record.callback_url:
            return
        fresh, task = await self.export_store.get_export_with_task(record.id)
        if fresh is None or task is None:
            return
        await self.notifier.publish(fresh, Export.of(fresh, task), event)


def _problem(member: str) -> MemberProblem:
    return MemberProblem(member, "cannot be changed; create a new feed for another query")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _decode_feed_cursor(cursor: str) -> tuple[int, str]:
    """Feed cursors have the exports' form with a feed id (``encode_cursor``)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms_text, _, feed_id = text.partition(":")
        ms = int(ms_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("cursor", "is not a cursor this API issued") from None
    if ms < 0 or not FEED_ID.match(feed_id):
        raise invalid("cursor", "is not a cursor this API issued")
    return ms, feed_id
