"""Shapes of webhook events and delivery attempts: what is stored and what callers see.

An ``Event`` is one thing that happened to one export (``export.completed``, ...). Its ``body``
is serialised once, when the event is published, and those exact bytes are signed and sent on
every attempt, so every retry and every redelivery carries the same ``webhook-id`` and the same
payload. Delivery runs in *rounds*: the first round starts when the event is published, and each
redelivery starts a new one; within a round, attempts follow ``GATEWAY_WEBHOOK_RETRY_SCHEDULE``.
Attempt numbers count across rounds, so each attempt of an event has its own number.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.exports.schemas import UtcTime

# Every event type the gateway sends, with what it means: the OpenAPI document's ``webhooks``
# and the API reference follow this list (a new event type is one more entry).
WEBHOOK_EVENTS: list[tuple[str, str]] = [
    (
        "export.completed",
        "The export completed: `data.links` holds its CSV files (also served merged by "
        "`GET /v1/exports/{id}/csv`) until `data.links_expire_at`.",
    ),
    (
        "export.failed",
        "The export failed: `data.error` says why (`upstream_unauthorized`, "
        "`upstream_rejected`, `upstream_failed`, `upstream_timeout`, `upstream_unavailable`).",
    ),
    (
        "export.expiring",
        "The export's CSV files will be deleted at `data.expires_at` "
        "(sent GATEWAY_EXPIRY_WARNING_SECONDS before, once).",
    ),
    (
        "export.expired",
        "The export's CSV files are gone: `data.status` is `expired` and `data.links` empty; "
        "`POST /v1/exports/{id}/rerun` runs the same export again.",
    ),
    (
        "export.archived",
        "The gateway's own copy of the export's CSV was made (`data.archive.state` is "
        "`archived`): `GET /v1/exports/{id}/csv` serves it from now on, also after upstream's "
        "links expire, and `data.expires_at` is the new expiry. Sent only with an archive "
        "configured (GATEWAY_ARCHIVE_URL).",
    ),
]

# The Standard Webhooks headers on every delivery.
WEBHOOK_HEADERS: tuple[tuple[str, str], ...] = (
    ("webhook-id", "The event's id: the same on every retry and redelivery of one event."),
    ("webhook-timestamp", "Unix time (seconds) of this attempt; part of what is signed."),
    (
        "webhook-signature",
        "`v1,` followed by the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, "
        "keyed by the client's webhook secret (the bytes after `whsec_`, base64-decoded).",
    ),
)

EventState = Literal["pending", "delivered", "gave_up"]
Outcome = Literal["delivered", "failed", "gave_up"]
MAX_RESPONSE_BODY_BYTES = 2048


class Event(BaseModel):
    """One webhook event and where its delivery stands (``gw:event:{id}``)."""

    id: str
    export_id: str
    client_id: str
    type: str
    timestamp: UtcTime
    callback_url: str
    body: str  # the exact JSON text that is signed and sent
    state: EventState = "pending"
    round: int = 0
    round_first_attempt: int = 1
    next_attempt: int = 1
    next_attempt_at: UtcTime | None = None
    next_job_key: str | None = None
    # The attempt a worker is making right now (so a rerun of its job, after the worker died,
    # makes it again instead of skipping it).
    in_flight: int | None = None
    in_flight_round: int | None = None
    in_flight_since: UtcTime | None = None
    dead_lettered: bool = False


class Attempt(BaseModel):
    """One delivery attempt, as ``GET /v1/exports/{id}/deliveries`` lists it."""

    event_id: str = Field(description="The event's webhook-id.")
    type: str
    attempt: int = Field(description="1 for the event's first attempt, counting across rounds.")
    at: UtcTime = Field(description="When the attempt started.")
    status_code: int | None
    error: str | None
    duration_ms: int
    outcome: Outcome
    response_body: str | None = Field(
        None, description="The first 2 KiB of the receiver's answer (UTF-8)."
    )


class EventView(BaseModel):
    """Where an event's delivery stands."""

    id: str = Field(description="The event's webhook-id.")
    type: str
    timestamp: UtcTime
    state: EventState
    dead_lettered: bool = Field(description="Delivery failed for good (a dead letter).")
    attempts: int = Field(description="Attempts made so far, across rounds.")
    next_attempt_at: UtcTime | None

    @classmethod
    def of(cls, event: Event) -> EventView:
        return cls(
            id=event.id,
            type=event.type,
            timestamp=event.timestamp,
            state=event.state,
            dead_lettered=event.dead_lettered,
            attempts=event.next_attempt - 1,
            next_attempt_at=event.next_attempt_at if event.state == "pending" else None,
        )


class Deliveries(BaseModel):
    """Body of ``GET /v1/exports/{id}/deliveries``."""

    data: list[Attempt] = Field(description="Every delivery attempt, oldest first.")
    events: list[EventView] = Field(description="The export's events, oldest first.")
