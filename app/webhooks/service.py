"""Webhook events of exports: publish, deliver (one attempt per job), redeliver, list attempts.

No framework code here: the worker's ``deliver_event`` job calls ``deliver``; the routes call
``deliveries`` and ``redeliver``; ``ExportService`` calls ``check_callback`` at submission, and
the task lifecycle calls ``publish`` (this class is its ``Notifier``).

One attempt per job, keyed ``deliver:{event_id}:{round}:{attempt}``, so scheduling is
idempotent and each job knows exactly which attempt it is:

    publish --> attempt 1 --2xx--> delivered
                    |--5xx/3xx/timeout/refused connection--> wait schedule[i] (+-10 %) --> next
                    |--429/503 + Retry-After--> wait max(Retry-After, schedule[i]) --> next
                    |--410, forbidden address, no secret--> gave_up (dead letter)
                    '--schedule exhausted--> gave_up (dead letter)
    redeliver --> a new round: attempt n+1 at once, then the schedule again, same webhook-id

At-least-once: a job first marks its attempt "in flight" in the event, then POSTs, then records
the result and clears the mark, in one transaction with the log entry. A job rerun after its
worker died mid-attempt finds its own attempt still in flight and makes it again; a rerun after
the result was recorded finds nothing to do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
from pydantic import TypeAdapter, ValidationError

from app.exports.lifecycle import EventType
from app.exports.schemas import Export, ExportRecord, UtcTime
from app.exports.service import EXPORT_ID
from app.exports.store import ExportStore
from app.platform import keys, metrics
from app.platform.clock import utcnow
from app.platform.errors import Conflict, NotFound, invalid
from app.platform.jobs import JobQueue
from app.platform.leases import ClientLeases
from app.platform.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DEAD_LETTERS
from app.webhooks.delivery import DELIVERY_TIMEOUT_SECONDS, DeliveryResult, post_webhook
from app.webhooks.schemas import Attempt, Deliveries, Event, EventView, Outcome
from app.webhooks.signing import WebhookSigner
from app.webhooks.ssrf import (
    CallbackPolicy,
    CallbackRefused,
    Resolver,
    check_callback_url,
    system_resolver,
)
from app.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

JITTER = 0.10
RETRY_AFTER_CAP_SECONDS = 86_400.0
# An attempt marked in flight for longer than this was lost with its worker (one attempt takes
# at most the 15 s delivery timeout; the worker's job timeout is 120 s).
STALE_IN_FLIGHT_SECONDS = 180.0
NO_SECRET = "no webhook secret configured for this client"  # noqa: S105 (a message)
_TIME = TypeAdapter(UtcTime)


def event_id_for(export_id: str, event_type: str) -> str:
    """The webhook-id of an export's event: one per (export, type), so publishing the same
    event twice (a step rerun after a crash) creates it once."""
    digest = hashlib.sha256(f"{export_id}\n{event_type}".encode()).digest()[:16]
    return "msg_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def job_key(event_id: str, round_no: int, attempt: int) -> str:
    return f"deliver:{delivery_subject(event_id, round_no, attempt)}"


def delivery_subject(event_id: str, round_no: int, attempt: int) -> str:
    """The ``deliver_event`` job's argument: which attempt of which round of which event."""
    return f"{event_id}:{round_no}:{attempt}"


DEFER_SECONDS = 1.0


class DeliveryDeferred(Exception):
    """The event's client has its maximum of deliveries in flight: run this job again after
    ``seconds`` (nothing was claimed or sent)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"client at its cap of deliveries in flight; again in {seconds:g} s")
        self.seconds = seconds


def parse_delivery_subject(subject: str) -> tuple[str, int, int]:
    event_id, round_no, attempt = subject.rsplit(":", 2)
    return event_id, int(round_no), int(attempt)


class WebhookService:
    def __init__(
        self,
        *,
        store: WebhookStore,
        exports: ExportStore,
        queue: JobQueue,
        signer: WebhookSigner,
        policy: CallbackPolicy,
        client: httpx.AsyncClient,
        retry_schedule: Sequence[float],
        resolver: Resolver = system_resolver,
        timeout: float = DELIVERY_TIMEOUT_SECONDS,
        in_flight: ClientLeases | None = None,
    ) -> None:
        self.in_flight = in_flight  # per-client cap on deliveries in flight (None: no cap)
        self.store = store
        self.exports = exports
        self.queue = queue
        self.signer = signer
        self.policy = policy
        self.client = client
        self.retry_schedule = [max(0.0, float(step)) for step in retry_schedule]
        self.resolver = resolver
        self.timeout = timeout

    # -- submission ------------------------------------------------------------------------

    async def check_callback(self, client_id: str, url: str) -> None:
        """Refuse (422 naming ``callback_url``) a callback the gateway would not call, or one
        it could not sign for."""
        try:
            await check_callback_url(url, self.policy, self.resolver)
        except CallbackRefused as exc:
            raise invalid("callback_url", exc.reason) from None
        if not self.signer.has_secret(client_id):
            raise invalid("callback_url", NO_SECRET)

    # -- events ----------------------------------------------------------------------------

    async def publish(self, record: ExportRecord, export: Export, event_type: EventType) -> None:
        """Record an event carrying the export as the API shows it now, and deliver it."""
        if not record.callback_url or record.canceled_at is not None:
            return
        now = utcnow()
        event_id = event_id_for(record.id, event_type)
        body = json.dumps(
            {
                "type": event_type,
                "timestamp": _TIME.dump_python(now, mode="json"),
                "data": export.model_dump(mode="json"),
            },
            separators=(",", ":"),
        )  # ASCII only (ensure_ascii), so the signed text and the sent bytes are the same
        event = Event(
            id=event_id,
            export_id=record.id,
            client_id=record.client_id,
            type=event_type,
            timestamp=now,
            callback_url=record.callback_url,
            body=body,
            next_attempt_at=now,
            next_job_key=job_key(event_id, 0, 1),
        )
        if await self.store.create_event(event):
            log.info(
                "webhook event published",
                extra={"event_id": event_id, "export_id": record.id, "type": event_type},
            )
            await self._schedule(event, now)

    async def deliver(self, event_id: str, round_no: int, attempt: int) -> None:
        """Make attempt ``attempt`` of round ``round_no``, unless it is stale or already made.

        A client has at most ``GATEWAY_CLIENT_MAX_DELIVERIES`` deliveries in flight: one more
        raises ``DeliveryDeferred`` before anything is claimed (the job runs again shortly), so
        a client whose receiver hangs holds that many of the delivery lane's slots, never all
        of them, and other clients' webhooks go out on time."""
        if self.in_flight is None:
            await self._deliver(event_id, round_no, attempt)
            return
        event = await self.store.get_event(event_id)
        if event is None or event.state != "pending":
            return
        lease = await self.in_flight.try_take(keys.client_deliveries(event.client_id))
        if lease is None:
            raise DeliveryDeferred(DEFER_SECONDS)
        try:
            await self._deliver(event_id, round_no, attempt)
        finally:
            await lease.release()

    async def _deliver(self, event_id: str, round_no: int, attempt: int) -> None:
        now = utcnow()

        def claim(event: Event) -> tuple[Event, Attempt | None] | None:
            if event.state != "pending":
                return None
            resuming = event.in_flight == attempt and event.in_flight_round == round_no
            fresh = (
                event.in_flight is None
                and event.round == round_no
                and event.next_attempt == attempt
            )
            if not (resuming or fresh):
                return None
            update = {"in_flight": attempt, "in_flight_round": round_no, "in_flight_since": now}
            return event.model_copy(update=update), None

        claimed, _ = await self.store.update_event(event_id, claim)
        if claimed is None:
            return
        started = utcnow()
        result = await self._send(claimed)
        await self._record(event_id, round_no, attempt, started, result)

    async def _send(self, event: Event) -> DeliveryResult:
        if not self.signer.has_secret(event.client_id):
            return DeliveryResult(None, NO_SECRET, 0, refused=True)
        headers = self.signer.sign(event.client_id, event.id, utcnow(), event.body)
        return await post_webhook(
            self.client,
            event.callback_url,
            event.body.encode(),
            headers.as_dict(),
            timeout=self.timeout,
        )

    async def _record(
        self, event_id: str, round_no: int, attempt: int, started: datetime, result: DeliveryResult
    ) -> None:
        now = utcnow()
        jitter = random.uniform(1 - JITTER, 1 + JITTER)

        def entry(event: Event, outcome: Outcome) -> Attempt:
            return Attempt(
                event_id=event.id,
                type=event.type,
                attempt=attempt,
                at=started,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
                outcome=outcome,
                response_body=result.response_body,
            )

        def record(event: Event) -> tuple[Event, Attempt | None] | None:
            plain: Outcome = "delivered" if result.delivered else "failed"
            if event.in_flight != attempt or event.in_flight_round != round_no:
                # A redelivery gave up waiting for this attempt: log it, change nothing else.
                return event, entry(event, plain)
            update: dict[str, object] = {
                "in_flight": None,
                "in_flight_round": None,
                "in_flight_since": None,
                "next_attempt": max(event.next_attempt, attempt + 1),
            }
            finished = {"next_attempt_at": None, "next_job_key": None}
            if event.round != round_no:  # redelivery asked for meanwhile: start it now
                outcome = plain
                update |= {
                    "next_attempt_at": now,
                    "next_job_key": job_key(event.id, event.round, attempt + 1),
                    "round_first_attempt": attempt + 1,
                }
            elif result.delivered:
                outcome = "delivered"
                update |= {"state": "delivered", **finished}
            elif result.refused or result.status_code == 410:
                outcome = "gave_up"
                update |= {"state": "gave_up", "dead_lettered": True, **finished}
            else:
                index = attempt - event.round_first_attempt
                if index >= len(self.retry_schedule):
                    outcome = "gave_up"
                    update |= {"state": "gave_up", "dead_lettered": True, **finished}
                else:
                    outcome = "failed"
                    delay = self.retry_schedule[index] * jitter
                    if result.status_code in (429, 503) and result.retry_after is not None:
                        delay = max(delay, min(result.retry_after, RETRY_AFTER_CAP_SECONDS))
                    update |= {
                        "next_attempt_at": now + timedelta(seconds=delay),
                        "next_job_key": job_key(event.id, round_no, attempt + 1),
                    }
            return event.model_copy(update=update), entry(event, outcome)

        after, logged = await self.store.update_event(event_id, record)
        if after is None or logged is None:
            return
        WEBHOOK_ATTEMPTS.labels(logged.outcome).inc()
        if logged.outcome == "gave_up":
            WEBHOOK_DEAD_LETTERS.inc()
        log.info(
            "webhook attempt",
            extra={
                "event_id": event_id,
                "export_id": after.export_id,
                "attempt": attempt,
                "status_code": result.status_code,
                "error": result.error,
                "outcome": logged.outcome,
            },
        )
        await self._schedule(after, now)

    async def _schedule(self, event: Event, now: datetime) -> None:
        if event.state != "pending" or event.next_job_key is None or event.in_flight is not None:
            return
        delay = 0.0
        if event.next_attempt_at is not None:
            delay = max(0.0, (event.next_attempt_at - now).total_seconds())
        subject = event.next_job_key.removeprefix("deliver:")
        await self.queue.schedule(
            "deliver_event", subject, key=event.next_job_key, delay=delay, urgent=delay == 0
        )

    # -- callers ---------------------------------------------------------------------------

    async def deliveries(self, client_id: str, export_id: str) -> Deliveries:
        await self._owned(client_id, export_id)
        # Events first: an attempt's log entry and its event's new state are written in one
        # transaction, so an event read as settled has its attempt in the log read after it.
        # (The other order could show an event `gave_up` with no attempt yet.)
        events = await self.store.events_of(export_id)
        attempts = await self.store.attempts_of(export_id)
        return Deliveries(data=attempts, events=[EventView.of(e) for e in events])

    async def redeliver(self, client_id: str, export_id: str) -> EventView:
        """Send the export's latest event again (same webhook-id), starting a new round of
        attempts at once, whatever became of the earlier ones."""
        await self._owned(client_id, export_id)
        event_id = await self.store.latest_event_id(export_id)
        if event_id is None:
            raise Conflict("the export has no webhook event yet; nothing to redeliver")
        now = utcnow()
        stale_before = now - timedelta(seconds=STALE_IN_FLIGHT_SECONDS)

        def restart(event: Event) -> tuple[Event, Attempt | None]:
            in_flight = event.in_flight is not None and (
                event.in_flight_since is None or event.in_flight_since > stale_before
            )
            round_no = event.round + 1
            update: dict[str, object] = {"round": round_no, "state": "pending"}
            update["dead_lettered"] = False
            if in_flight:  # the attempt in flight starts the new round when it is recorded
                update["round_first_attempt"] = event.next_attempt + 1
            else:
                update |= {
                    "in_flight": None,
                    "in_flight_round": None,
                    "in_flight_since": None,
                    "round_first_attempt": event.next_attempt,
                    "next_attempt_at": now,
                    "next_job_key": job_key(event.id, round_no, event.next_attempt),
                }
            return event.model_copy(update=update), None

        after, _ = await self.store.update_event(event_id, restart)
        if after is None:
            raise Conflict("the export has no webhook event yet; nothing to redeliver")
        log.info("webhook redelivery", extra={"event_id": event_id, "export_id": export_id})
        await self._schedule(after, now)
        return EventView.of(after)

    async def give_ups_in_last_day(self) -> int:
        """Events given up on in the last 24 hours, every client's (for operators)."""
        return await self.store.give_ups_since(utcnow() - timedelta(days=1))

    async def _owned(self, client_id: str, export_id: str) -> ExportRecord:
        record = await self.exports.get_export(export_id) if EXPORT_ID.match(export_id) else None
        # Another client's export is exactly as absent as one that never existed.
        if record is None or record.client_id != client_id:
            raise NotFound(f"no export {export_id!r}")
        return record

    # -- repair ----------------------------------------------------------------------------

    async def repair(self, grace_seconds: float) -> int:
        """Re-create the job of every event whose next attempt is overdue by ``grace_seconds``
        and no longer scheduled (queue flushed, job retries exhausted). For the sweep; returns
        how many it rescheduled."""
        now = utcnow()
        repaired = 0
        for event_id in await self.store.due_event_ids(now - timedelta(seconds=grace_seconds)):
            try:
                event = await self.store.get_event(event_id)
            except (ValidationError, ValueError):  # one unreadable event stops no other's repair
                log.exception("webhook event unreadable", extra={"event_id": event_id})
                metrics.ISOLATED_FAILURES.labels("read_Event").inc()
                continue
            if event is None or event.state != "pending" or event.next_job_key is None:
                continue
            if await self.queue.is_scheduled(event.next_job_key):
                continue
            subject = event.next_job_key.removeprefix("deliver:")
            if await self.queue.schedule("deliver_event", subject, key=event.next_job_key):
                repaired += 1
        return repaired
