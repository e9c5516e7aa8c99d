"""Shapes of the operator console: who is signed in, and what each page shows.

These are view models: each is built by ``ConsoleService`` from what the export and webhook
services answer (never from Redis directly), and rendered by the templates, which escape every
value they print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel

from app.exports.schemas import Export, UtcTime
from app.webhooks.schemas import Attempt, EventView


class Session(BaseModel):
    """One signed-in console session (``gw:console:session:{id}``)."""

    id: str
    holder: str  # the client id, or the admin's name
    admin: bool
    key_digest: str  # sha256 of the key signed in with: the session ends when it is removed
    created_at: UtcTime


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks: a client sees its own exports; an admin sees every client's."""

    name: str
    admin: bool

    @property
    def client_id(self) -> str | None:
        """The one client this viewer may see (None: every client)."""
        return None if self.admin else self.name


@dataclass(frozen=True, slots=True)
class SignedIn:
    session: Session
    viewer: Viewer
    csrf_token: str


@dataclass(frozen=True, slots=True)
class Health:
    workers_alive: int
    queue_depth: int
    upstream_active: int
    upstream_waiting: int
    upstream_cap: int
    webhook_give_ups_last_day: int


@dataclass(frozen=True, slots=True)
class ExportRow:
    client_id: str
    export: Export


@dataclass(frozen=True, slots=True)
class ExportsPage:
    rows: list[ExportRow]
    next_cursor: str | None
    status: str | None
    client: str | None
    clients: list[str]

    @property
    def unfinished(self) -> bool:
        return any(not row.export.finished for row in self.rows)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    what: str
    detail: str = ""
    kind: str = "export"  # export | event | attempt
    attempt: Attempt | None = None


@dataclass(frozen=True, slots=True)
class ExportDetail:
    client_id: str
    export: Export
    retry_after: int | None
    events: list[EventView]
    attempts: list[Attempt]
    timeline: list[TimelineEntry] = field(default_factory=list)

    @property
    def unfinished(self) -> bool:
        return not self.export.finished or any(e.state == "pending" for e in self.events)
