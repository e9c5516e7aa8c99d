"""What a caller can do with exports: submit one, read one. No framework code here.

Submission validates and normalises the query, then lets the store attach the export to the
task already serving an identical query (or to a fresh one), and starts whatever the upstream
slots allow. Nothing is queued unless every check passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from app.exports import listing
from app.exports.lifecycle import Notifier, TaskLifecycle
from app.exports.schemas import (
    Export,
    ExportPage,
    ExportRecord,
    ExportRequest,
    ExportStatus,
    RunFile,
    TaskRecord,
    Window,
    normalise_fields,
)
from app.exports.store import ExportStore
from app.platform import metrics
from app.platform.clock import utcnow
from app.platform.errors import Conflict, NotFound, invalid
from app.upstream.catalog import FieldCatalog
from app.upstream.filters import FilterSyntaxError, normalise_filter

log = logging.getLogger(__name__)

EXPORT_ID = re.compile(r"^exp_[A-Za-z0-9_-]{22}$")


def new_export_id() -> str:
    return "exp_" + secrets.token_urlsafe(16)  # 128 random bits


def new_task_id() -> str:
    return "tsk_" + secrets.token_urlsafe(16)


def fingerprint(filter: str | None, fields: list[str] | None, site_id: int | None) -> str:
    """Identity of a query: requests with equal fingerprints share one upstream task."""
    canonical = json.dumps([filter, fields, site_id], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class CallbackCheck(Protocol):
    async def check_callback(self, client_id: str, url: str) -> None:
        """Raise a 422 naming ``callback_url`` when the gateway would not call ``url``."""
        ...


@dataclass(frozen=True, slots=True)
class FeedRunOrder:
    """What makes a submission a feed's run: the feed, the window, the export id the feed
    chose (so a run claimed before a crash is submitted under the same id), and how recent an
    upstream task must be to serve it: one asked upstream before ``not_before`` may have
    missed rows of the window, so the run then gets a task of its own."""

    feed_id: str
    window: Window
    export_id: str
    not_before: datetime


class ExportService:
    def __init__(
        self,
        *,
        store: ExportStore,
        lifecycle: TaskLifecycle,
        notifier: Notifier | None,
        poll_initial_seconds: float,
        callbacks: CallbackCheck | None = None,
        catalog: FieldCatalog | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.lifecycle = lifecycle
        self.notifier = notifier
        self.poll_initial_seconds = poll_initial_seconds
        self.callbacks = callbacks

    async def submit(
        self, client_id: str, request: ExportRequest, *, run: FeedRunOrder | None = None
    ) -> Export:
        try:
            query_filter = normalise_filter(request.filter)
        except FilterSyntaxError as exc:
            raise invalid("filter", str(exc)) from None
        fields = normalise_fields(request.fields)
        if request.callback_url is not None and self.callbacks is not None:
            await self.callbacks.check_callback(client_id, request.callback_url)
        fields_verified = await self._verify_fields(request)
        now = utcnow()
        task = TaskRecord(
            id=new_task_id(),
            fingerprint=fingerprint(query_filter, fields, request.site_id),
            filter=query_filter,
            fields=fields,
            site_id=request.site_id,
            created_at=now,
        )
        record = ExportRecord(
            id=new_export_id() if run is None else run.export_id,
            client_id=client_id,
            task_id=task.id,
            filter=query_filter,
            fields=fields,
            site_id=request.site_id,
            callback_url=request.callback_url,
            metadata=request.metadata,
            coalesced=False,
            fields_verified=fields_verified,
            created_at=now,
        )
        if run is not None:
            record.feed_id, record.window, record.run_file = run.feed_id, run.window, RunFile()
        # Any age past the links' retention means "any": cap it so that the date stays valid.
        oldest = now - timedelta(seconds=request.max_age_seconds)

        def reusable(done: TaskRecord) -> bool:
            return (
                run is None
                and request.max_age_seconds > 0
                and done.completed_at is not None
                and done.completed_at >= oldest
                and (done.expires_at is None or done.expires_at > now)
            )

        def shareable(running: TaskRecord) -> bool:
            return (
                run is None
                or running.submitted_at is None
                or running.submitted_at >= run.not_before
            )

        submitted = await self.store.submit(
            record,
            task,
            reusable,
            max_active=self.lifecycle.settings.upstream_max_active_tasks,
            shareable=None if run is None else shareable,
        )
        metrics.EXPORTS.labels("queued").inc()
        if not submitted.new_task:
            metrics.COALESCED.inc()
        log.info(
            "export accepted",
            extra={
                "export_id": record.id,
                "client_id": client_id,
                "task_id": submitted.task.id,
                "coalesced": not submitted.new_task,
            },
        )
        if submitted.dispatched is not None:
            await self.lifecycle.start_dispatched(submitted.dispatched)
        elif submitted.new_task:
            await self.lifecycle.dispatch()
        export = Export.of(submitted.export, submitted.task)
        if export.status == "completed" and self.notifier and record.callback_url and run is None:
            await self.notifier.publish(submitted.export, export, "export.completed")
            archive = submitted.task.archive
            if archive is not None and archive.state == "archived":  # reused with its copy
                await self.notifier.publish(submitted.export, export, "export.archived")
            if submitted.task.warned_at is not None:  # reused after its warning went out
                await self.notifier.publish(submitted.export, export, "export.expiring")
        return export

    async def _verify_fields(self, request: ExportRequest) -> bool | None:
        """None: nothing to check (no site or no fields); True: checked against the site's
        fields; False: upstream could not tell us the site's fields, so the export goes ahead
        unchecked. Unknown fields answer 422 naming each (``FieldCatalog.verify``)."""
        if self.catalog is None or request.site_id is None or not request.fields:
            return None
        return await self.catalog.verify(request.site_id, request.fields)

    async def get(self, client_id: str, export_id: str) -> tuple[Export, int | None]:
        """The export, and while it is unfinished, how many seconds to wait before asking
        again (the time until the gateway next asks upstream)."""
        record, task = await self._load(client_id, export_id)
        export = Export.of(record, task)
        return export, None if export.finished else self._retry_after(task)

    async def rerun(self, client_id: str, export_id: str) -> Export:
        """A fresh export of a finished one: same query, site, callback and metadata, through
        ``submit`` so every rule applies (an identical export still running is shared)."""
        record, task = await self._load(client_id, export_id)
        previous = Export.of(record, task)
        if not previous.finished:
            raise Conflict(
                f"export {export_id} is still {previous.status}; rerun it once it has finished",
                extra={"export_status": previous.status},
            )
        request = ExportRequest(
            filter=record.filter,
            fields=record.fields,
            site_id=record.site_id,
            callback_url=record.callback_url,
            metadata=record.metadata,
        )
        return await self.submit(client_id, request)

    async def page(
        self, client_id: str, *, status: ExportStatus | None, limit: int, cursor: str | None
    ) -> ExportPage:
        """The client's exports, newest first, one page at a time (see ``listing``)."""
        return await listing.list_exports(
            self.store, client_id, status=status, limit=limit, cursor=cursor
        )

    async def page_across_clients(
        self,
        client_id: str | None,
        *,
        status: ExportStatus | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[tuple[str, Export]], str | None]:
        """For operators: one page of (client id, export), newest first, of one client's
        exports or (``client_id`` None) every client's; the same walk and cursors as ``page``."""
        rows, next_cursor = await listing.walk(
            self.store, client_id, status=status, limit=limit, cursor=cursor
        )
        return [(record.client_id, export) for record, export in rows], next_cursor

    async def owner_of(self, export_id: str) -> str | None:
        """The client an export belongs to (None: no such export), so that an operator can
        act on it exactly as its client would."""
        if not EXPORT_ID.match(export_id):
            return None
        record = await self.store.get_export(export_id)
        return record.client_id if record is not None else None

    async def cancel(self, client_id: str, export_id: str) -> Export:
        """Cancel an unfinished export. Its task stops (and frees its upstream slot) only when
        no other export follows it; otherwise it carries on serving them."""
        await self._load(client_id, export_id)
        outcome, record, task = await self.store.cancel_export(
            export_id, utcnow(), lambda r, t: Export.of(r, t).finished
        )
        if outcome == "missing" or record is None or task is None:
            raise NotFound(f"no export {export_id!r}")
        export = Export.of(record, task)
        if outcome == "finished":
            raise Conflict(
                f"export {export_id!r} is already {export.status}; only a queued or running "
                "export can be canceled",
                extra={"export_status": export.status},
            )
        if task.status == "canceled":  # nobody else followed it: its slot is free again
            await self.lifecycle.dispatch()
        return export

    async def load(self, client_id: str, export_id: str) -> tuple[ExportRecord, TaskRecord]:
        """The caller's export record and its task (404 for anyone else's)."""
        return await self._load(client_id, export_id)

    async def _load(self, client_id: str, export_id: str) -> tuple[ExportRecord, TaskRecord]:
        if not EXPORT_ID.match(export_id):
            raise NotFound(f"no export {export_id!r}")
        record, task = await self.store.get_export_with_task(export_id)
        # Another client's export is exactly as absent as one that never existed.
        if record is None or record.client_id != client_id or task is None:
            raise NotFound(f"no export {export_id!r}")
        return record, task

    def _retry_after(self, task: TaskRecord) -> int:
        if task.next_poll_at is None:
            return max(1, round(self.poll_initial_seconds))
        wait = (task.next_poll_at - utcnow()).total_seconds()
        return max(1, min(round(wait) + 1, 3600))
