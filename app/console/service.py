"""What the operator console does: sessions, and the pages' contents. No framework code here.

The console is another edge over the same services as the API: every export and webhook
question is answered by ``ExportService`` and ``WebhookService`` with the same rules (who may
see what, what can be canceled, redelivered or rerun). An admin acts on an export exactly as
its own client would: the console looks up the export's client and asks the service as that
client, so no rule is written twice.

Sessions: a sign-in with a key makes a random session id (256 bits) kept in Redis for
``GATEWAY_CONSOLE_SESSION_SECONDS``; the cookie carries that id signed with a timestamp
(``itsdangerous``), so a cookie older than the session length is refused even before Redis is
asked, and a forged or altered one never reaches Redis. Each request checks that the key
signed in with is still configured. CSRF tokens are an HMAC of the session id under the same
secret (synchronizer tokens without server state); the sign-in form's token is bound the same
way to a random nonce in a short-lived cookie (double submit), so a foreign page cannot sign a
browser in under someone else's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.console.schemas import (
    ExportDetail,
    ExportRow,
    ExportsPage,
    Health,
    Session,
    SignedIn,
    TimelineEntry,
    Viewer,
)
from app.console.store import ConsoleStore
from app.exports.schemas import Export, ExportStatus
from app.exports.service import ExportService
from app.exports.store import ExportStore
from app.platform.clock import utcnow
from app.platform.errors import NotFound
from app.platform.heartbeat import workers_alive
from app.platform.keyring import KeyRing
from app.webhooks.schemas import Deliveries, EventView
from app.webhooks.service import WebhookService

PAGE_SIZE = 25


class FeedSource(Protocol):
    """What the feeds page asks of the feeds service (``app/feeds/``), through a small adapter
    in the composition root. Each method acts as ``client_id``, with that client's rules, just
    as the export pages do; ``owner_of`` lets an admin act as a feed's own client."""

    async def page_across_clients(
        self, client_id: str | None, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, Any]], str | None]:
        """(client id, feed) pairs, newest first; a feed has ``id``, ``filter``, ``schedule``,
        ``watermark``, ``next_run_at``, ``last_export_id`` and ``paused``."""
        ...

    async def owner_of(self, feed_id: str) -> str | None: ...

    async def set_paused(self, client_id: str, feed_id: str, paused: bool) -> Any: ...

    async def run_now(self, client_id: str, feed_id: str) -> Any:
        """Start a run now (409 while one is unfinished); answers the run's export."""
        ...


_SESSION_SALT = "gw-console-session"


class ConsoleService:
    def __init__(
        self,
        *,
        store: ConsoleStore,
        exports: ExportService,
        export_store: ExportStore,
        webhooks: WebhookService,
        client_keys: KeyRing,
        admin_keys: KeyRing,
        clients: Sequence[str],
        session_seconds: float,
        upstream_cap: int,
        ready_worker_seconds: float,
        queue_keys: Sequence[str],
        feeds: FeedSource | None = None,
    ) -> None:
        self.store = store
        self.exports = exports
        self.export_store = export_store
        self.webhooks = webhooks
        self.client_keys = client_keys
        self.admin_keys = admin_keys
        self.clients = sorted(set(clients))
        self.session_seconds = session_seconds
        self.upstream_cap = upstream_cap
        self.ready_worker_seconds = ready_worker_seconds
        self.queue_keys = tuple(queue_keys)
        self.feeds = feeds

    @property
    def pages(self) -> list[str]:
        """The console's pages, in the navigation's order (feeds once a source is wired)."""
        return ["exports", "feeds"] if self.feeds is not None else ["exports"]

    # -- sign-in and sessions --------------------------------------------------------------

    async def signin_wait_seconds(self, address: str) -> int:
        """Count a sign-in attempt from ``address``: 0, or how long it must wait first."""
        return await self.store.signin_wait_seconds(address)

    async def signin_token(self, nonce: str) -> str:
        return await self._mac("signin", nonce)

    async def signin_token_ok(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(await self.signin_token(nonce), token)

    async def sign_in(self, key: str) -> str | None:
        """A signed session cookie for ``key`` (an admin key first, then a client's), or None
        when the key is not configured."""
        key = key.strip()
        if not key:
            return None
        admin = self.admin_keys.match(key)
        found = admin or self.client_keys.match(key)
        if found is None:
            return None
        holder, digest = found
        session = Session(
            id=secrets.token_urlsafe(32),
            holder=holder,
            admin=admin is not None,
            key_digest=digest,
            created_at=utcnow(),
        )
        await self.store.save_session(session, self.session_seconds)
        return (await self._serializer()).dumps(session.id)

    async def signed_in(self, cookie: str | None) -> SignedIn | None:
        """The session a cookie names, while it lasts and its key is still configured."""
        if not cookie:
            return None
        try:
            session_id = (await self._serializer()).loads(
                cookie, max_age=math.ceil(self.session_seconds)
            )
        except BadSignature:  # also an expired signature (SignatureExpired)
            return None
        if not isinstance(session_id, str):
            return None
        session = await self.store.get_session(session_id)
        if session is None:
            return None
        ring = self.admin_keys if session.admin else self.client_keys
        if ring.holder_of_digest(session.key_digest) != session.holder:
            return None
        viewer = Viewer(session.holder, session.admin)
        return SignedIn(session, viewer, await self._mac("csrf", session.id))

    async def csrf_ok(self, signed_in: SignedIn, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(signed_in.csrf_token, token or "")

    async def sign_out(self, signed_in: SignedIn) -> None:
        await self.store.delete_session(signed_in.session.id)

    async def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(await self.store.secret(), salt=_SESSION_SALT)

    async def _mac(self, purpose: str, subject: str) -> str:
        secret = await self.store.secret()
        return hmac.new(secret, f"{purpose}:{subject}".encode(), hashlib.sha256).hexdigest()

    # -- pages -----------------------------------------------------------------------------

    async def exports_page(
        self,
        viewer: Viewer,
        *,
        status: ExportStatus | None,
        client: str | None,
        cursor: str | None,
        limit: int = PAGE_SIZE,
    ) -> ExportsPage:
        """Newest first, one page; a client sees its own exports whatever ``client`` says."""
        scope = viewer.client_id if viewer.client_id is not None else (client or None)
        rows, next_cursor = await self.exports.page_across_clients(
            scope, status=status, limit=limit, cursor=cursor
        )
        return ExportsPage(
            rows=[ExportRow(client_id, export) for client_id, export in rows],
            next_cursor=next_cursor,
            status=status,
            client=scope if viewer.admin else None,
            clients=self.clients if viewer.admin else [],
        )

    async def export_detail(self, viewer: Viewer, export_id: str) -> ExportDetail:
        owner = await self._owner(viewer, export_id)
        export, retry_after = await self.exports.get(owner, export_id)
        deliveries = await self.webhooks.deliveries(owner, export_id)
        return ExportDetail(
            client_id=owner,
            export=export,
            retry_after=retry_after,
            events=deliveries.events,
            attempts=deliveries.data,
            timeline=_timeline(export, deliveries),
        )

    async def cancel(self, viewer: Viewer, export_id: str) -> Export:
        return await self.exports.cancel(await self._owner(viewer, export_id), export_id)

    async def redeliver(self, viewer: Viewer, export_id: str) -> EventView:
        return await self.webhooks.redeliver(await self._owner(viewer, export_id), export_id)

    async def rerun(self, viewer: Viewer, export_id: str) -> Export:
        return await self.exports.rerun(await self._owner(viewer, export_id), export_id)

    async def feeds_page(
        self, viewer: Viewer, *, client: str | None, cursor: str | None, limit: int = PAGE_SIZE
    ) -> tuple[list[tuple[str, Any]], str | None]:
        feeds = self._feeds()
        scope = viewer.client_id if viewer.client_id is not None else (client or None)
        return await feeds.page_across_clients(scope, limit=limit, cursor=cursor)

    async def set_feed_paused(self, viewer: Viewer, feed_id: str, paused: bool) -> Any:
        feeds = self._feeds()
        return await feeds.set_paused(await self._feed_owner(viewer, feed_id), feed_id, paused)

    async def run_feed(self, viewer: Viewer, feed_id: str) -> Any:
        feeds = self._feeds()
        return await feeds.run_now(await self._feed_owner(viewer, feed_id), feed_id)

    def _feeds(self) -> FeedSource:
        if self.feeds is None:
            raise NotFound("feeds are not part of this gateway")
        return self.feeds

    async def _feed_owner(self, viewer: Viewer, feed_id: str) -> str:
        if viewer.client_id is not None:
            return viewer.client_id
        owner = await self._feeds().owner_of(feed_id)
        if owner is None:
            raise NotFound(f"no feed {feed_id!r}")
        return owner

    async def health(self) -> Health:
        waiting, active = await self.export_store.slot_counts()
        return Health(
            workers_alive=await workers_alive(self.export_store.redis, self.ready_worker_seconds),
            queue_depth=await self.store.queue_depth(self.queue_keys),
            upstream_active=active,
            upstream_waiting=waiting,
            upstream_cap=self.upstream_cap,
            webhook_give_ups_last_day=await self.webhooks.give_ups_in_last_day(),
        )

    async def _owner(self, viewer: Viewer, export_id: str) -> str:
        """The client to ask the services as: the viewer itself, or for an admin the export's
        own client (another client's export is as absent to a client as a missing one; the
        services decide that)."""
        if viewer.client_id is not None:
            return viewer.client_id
        owner = await self.exports.owner_of(export_id)
        if owner is None:
            raise NotFound(f"no export {export_id!r}")
        return owner


def _timeline(export: Export, deliveries: Deliveries) -> list[TimelineEntry]:
    """The export's life, oldest first: its own steps, then its webhook events and attempts.
    Upstream polls are not recorded one by one: they show as one step with their count."""
    steps = [TimelineEntry(export.created_at, "created", "accepted by the gateway")]
    if export.submitted_at is not None:
        task = export.upstream_task_id or "?"
        steps.append(TimelineEntry(export.submitted_at, "submitted", f"upstream task {task}"))
    if export.polls:
        status = export.upstream_status or "no answer yet"
        steps.append(
            TimelineEntry(
                export.completed_at or export.canceled_at or utcnow(),
                "polled",
                f"{export.polls} poll(s); upstream status: {status}",
            )
        )
    if export.completed_at is not None:
        steps.append(TimelineEntry(export.completed_at, "completed", _links(export)))
    if export.error is not None:
        steps.append(TimelineEntry(export.completed_at or utcnow(), "failed", export.error.message))
    if export.canceled_at is not None:
        steps.append(TimelineEntry(export.canceled_at, "canceled"))
    for event in deliveries.events:
        steps.append(TimelineEntry(event.timestamp, event.type, event.state, kind="event"))
    for attempt in deliveries.data:
        what = f"delivery attempt {attempt.attempt}"
        steps.append(TimelineEntry(attempt.at, what, attempt.outcome, "attempt", attempt))
    # Equal times keep the order above (a stable sort): polled before completed, an event
    # before its first attempt.
    return sorted(steps, key=lambda step: step.at)


def _links(export: Export) -> str:
    return f"{len(export.links)} file(s)"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """A short age: "12 s", "5 min", "3 h", "2 d"."""
    if moment is None:
        return "—"
    return _span(((now or utcnow()) - moment).total_seconds())


def countdown(moment: datetime | None, now: datetime | None = None) -> str:
    """Time left until ``moment``: "in 29 d", or "passed"."""
    if moment is None:
        return "—"
    left = (moment - (now or utcnow())).total_seconds()
    return "passed" if left <= 0 else f"in {_span(left)}"


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172_800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86_400)} d"


def archive_state(export: Export) -> str:
    """The export's archive state where this build archives (``archive.state``), else "—"."""
    archive = getattr(export, "archive", None)
    state = archive.get("state") if isinstance(archive, dict) else getattr(archive, "state", None)
    return str(state) if state else "—"


def as_json(value: object) -> str:
    """Caller data as JSON text, non-ASCII kept; the template escapes it like any value."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
