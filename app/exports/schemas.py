"""Shapes of an export: the caller's request, the stored records and the caller-facing view.

Two records live in Redis (see ``app.platform.keys``):

* ``TaskRecord``: one upstream task and everything upstream told us about it. Identical requests
  share one task (coalescing), so its lifecycle is the upstream one.
* ``ExportRecord``: one caller's request: who asked, where to call back, with what metadata,
  and which task serves it.

``Export`` is what callers see: the export record merged with its task.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from app.platform.clock import utcnow
from app.platform.jobs import JobName

ExportStatus = Literal["queued", "running", "completed", "failed", "canceled", "expired"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "canceled", "expired"})
REQUIRED_FIELDS: tuple[str, ...] = ("id", "signer_id", "created_time")
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 5
MAX_AGE_LIMIT_SECONDS = 10 * 365 * 86400


def _iso(value: datetime) -> str:
    """ISO 8601 UTC with a ``Z``; milliseconds only when the time carries them. (``isoformat``,
    not ``strftime``: every record written or shown formats several of these.)"""
    timespec = "milliseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


UtcTime = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


def normalise_fields(fields: list[str] | None) -> list[str] | None:
    """The fields rule (docs/API.md): id, signer_id, created_time first, then the rest, no dups."""
    if fields is None:
        return None
    ordered = dict.fromkeys([*REQUIRED_FIELDS, *(f.strip() for f in fields)])
    return list(ordered)


def _check_field_names(fields: list[str] | None) -> list[str] | None:
    if fields is None:
        return None
    for index, name in enumerate(fields):
        stripped = name.strip()
        if not stripped or any(not part for part in stripped.split(".")):
            raise ValueError(f"item {index} is not a field name (dotted path expected)")
        if any(ch in stripped for ch in ", \t\r\n"):
            raise ValueError(f"item {index} ({stripped!r}) may not contain commas or spaces")
    return fields


def json_depth(value: object) -> int:
    """How many levels of objects and arrays ``value`` nests (a scalar is 0, ``{}`` is 1).
    Iterative, so no input can exhaust the stack."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    # Whatever is accepted must read back through the same parser that reads every record
    # (pydantic's JSON, whose nesting limit a deep object would break for every reader of the
    # record): so a bound on depth as well as on size.
    if metadata is not None:
        depth = json_depth(metadata)
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(
                f"nests {depth} levels of objects and arrays; at most {MAX_METADATA_DEPTH} allowed"
            )
        size = len(json.dumps(metadata, separators=(",", ":")).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"is {size} bytes of JSON; at most {MAX_METADATA_BYTES} allowed")
    return metadata


class ExportRequest(BaseModel):
    """Body of ``POST /v1/exports``. Every member is optional; unknown members are refused."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # JSON types as declared: no "5193" for 5193, no false for 0
        json_schema_extra={
            "examples": [
                {
                    "filter": "created_time>=2020-10-10 and event_type==agreed",
                    "fields": ["id", "signer_id", "created_time", "connection_data.remote_address"],
                    "site_id": 5193,
                    "callback_url": "https://billing.internal.example/hooks/exports",
                    "metadata": {"ticket": "OPS-12"},
                    "max_age_seconds": 0,
                }
            ]
        },
    )

    filter: str | None = Field(None, max_length=4096, description="Upstream filter expression.")
    fields: Annotated[
        list[Annotated[str, Field(max_length=200)]] | None,
        Field(max_length=200),
        AfterValidator(_check_field_names),
    ] = Field(None, description="Columns; id, signer_id and created_time are always sent first.")
    site_id: int | None = Field(
        None, ge=1, le=2**53, description="The Clickwrap site to export from."
    )
    callback_url: str | None = Field(None, max_length=2048, description="Where webhooks go.")
    metadata: Annotated[dict[str, Any] | None, AfterValidator(_check_metadata)] = Field(
        None,
        description="A JSON object of at most 4 KiB and 5 levels of nesting, echoed in the "
        "export and webhooks.",
    )
    max_age_seconds: int = Field(
        0,
        ge=0,
        le=MAX_AGE_LIMIT_SECONDS,
        description="Reuse a completed identical export no older than this (at most 10 years).",
    )

    @field_validator("filter")
    @classmethod
    def _blank_filter_is_none(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"code": "upstream_failed", "message": "the upstream task ended failed"}]
        }
    )

    code: str
    message: str


# -- Feed runs ------------------------------------------------------------------------------
# A feed's run is an export with a window. Its CSV is the gateway's own file: the rows of
# upstream's files with ``from <= created_time < to``, written once the upstream task has
# completed (``RunFile``).


class Window(BaseModel):
    """``[from, to)`` of a feed run (``from`` is a Python keyword: ``start`` in code)."""

    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={
            "examples": [{"from": "2026-11-30T02:00:00Z", "to": "2026-12-01T01:55:00Z"}]
        },
    )

    start: UtcTime = Field(alias="from")
    end: UtcTime = Field(alias="to")


class RunFile(BaseModel):
    """The windowed CSV of a feed run: being written, written (where, how big) or failed."""

    state: Literal["pending", "written", "failed"] = "pending"
    object_key: str | None = None
    bytes: int | None = None
    rows: int | None = None
    sha256: str | None = None
    written_at: UtcTime | None = None
    error: ErrorInfo | None = None


ArchiveState = Literal["pending", "archived", "failed"]


class Archive(BaseModel):
    """The gateway's own copy of an export's CSV, as callers see it (null: archiving is off)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "state": "archived",
                    "archived_at": "2026-11-27T10:04:15Z",
                    "bytes": 1048576,
                    "rows": 9120,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "expires_at": "2027-11-27T10:04:15Z",
                }
            ]
        }
    )

    state: ArchiveState
    archived_at: UtcTime | None = None
    bytes: int | None = None
    rows: int | None = None
    sha256: str | None = None
    expires_at: UtcTime | None = Field(
        None, description="When the copy is deleted; null while pending, or when kept for ever."
    )


class TaskArchive(Archive):
    """The archive member of a task: what callers see, plus the copy's bookkeeping."""

    object: str | None = None  # the object's name in the store (from the task id only)
    attempts: int = 0
    job_key: str | None = None  # the copy job's key now (the sweep re-creates a lost one)
    next_attempt_at: UtcTime | None = None
    error: str | None = None  # why the last attempt failed (safe to log: no secrets)
    verified_at: UtcTime | None = None

    def view(self) -> Archive:
        return Archive.model_construct(
            state=self.state,
            archived_at=self.archived_at,
            bytes=self.bytes,
            rows=self.rows,
            sha256=self.sha256,
            expires_at=self.expires_at,
        )


class TaskRecord(BaseModel):
    """One upstream export task (possibly shared by several exports)."""

    id: str
    fingerprint: str
    filter: str | None
    fields: list[str] | None
    site_id: int | None
    status: ExportStatus = "queued"
    upstream_id: str | None = None
    upstream_status: str | None = None
    links: list[str] = Field(default_factory=list)
    created_at: UtcTime
    submitted_at: UtcTime | None = None
    completed_at: UtcTime | None = None
    expires_at: UtcTime | None = None
    polls: int = 0
    error: ErrorInfo | None = None
    warned_at: UtcTime | None = None  # when export.expiring went out (sent once per task)
    # Bookkeeping: the job that moves the task on next, so the sweep can re-create it.
    next_job: JobName | None = None
    next_job_key: str | None = None
    next_poll_at: UtcTime | None = None
    failures: int = 0
    failing_since: UtcTime | None = None
    # When upstream deletes the links (``expires_at`` is when the gateway can no longer serve
    # the CSV: later than this once an archived copy exists). None on records from before.
    links_expire_at: UtcTime | None = None
    archive: TaskArchive | None = None  # None: completed while archiving was off

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def status_at(self, now: datetime) -> ExportStatus:
        """The status as of ``now``: a completed task is expired from ``expires_at`` on,
        even while the ``expire_task`` step that records it is late."""
        if self.status == "completed" and self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.status


class ExportRecord(BaseModel):
    """One caller's export request and its bookkeeping."""

    id: str
    client_id: str
    task_id: str
    filter: str | None
    fields: list[str] | None
    site_id: int | None
    callback_url: str | None
    metadata: dict[str, Any] | None
    coalesced: bool
    fields_verified: bool | None = None
    created_at: UtcTime
    canceled_at: UtcTime | None = None
    # A feed's run (see "Feed runs" below); None for every other export.
    feed_id: str | None = None
    window: Window | None = None
    run_file: RunFile | None = None


EXPORT_EXAMPLE: dict[str, Any] = {
    "id": "exp_3kTMd9x0Qe2bW7sYv1LcRg",
    "status": "completed",
    "filter": "created_time>=2020-10-10 and event_type==agreed",
    "fields": ["id", "signer_id", "created_time", "connection_data.remote_address"],
    "site_id": 5193,
    "callback_url": "https://billing.internal.example/hooks/exports",
    "metadata": {"ticket": "OPS-12"},
    "coalesced": False,
    "upstream_task_id": "5f88abf5f4689d7295cf1134",
    "upstream_status": "complete",
    "links": ["https://files.example/export-1.csv", "https://files.example/export-2.csv"],
    "created_at": "2026-11-27T10:00:00Z",
    "submitted_at": "2026-11-27T10:00:01Z",
    "completed_at": "2026-11-27T10:04:12Z",
    "expires_at": "2026-12-27T10:04:12Z",
    "polls": 7,
    "error": None,
    "fields_verified": True,
    "canceled_at": None,
    "feed_id": None,
    "window": None,
    "links_expire_at": "2026-12-27T10:04:12Z",
    "archive": None,
}


class Export(BaseModel):
    """The caller-facing export (docs/API.md, "The export")."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXPORT_EXAMPLE]})

    id: str
    status: ExportStatus
    filter: str | None
    fields: list[str] | None
    site_id: int | None
    callback_url: str | None
    metadata: dict[str, Any] | None
    coalesced: bool
    upstream_task_id: str | None
    upstream_status: str | None
    links: list[str]
    created_at: UtcTime
    submitted_at: UtcTime | None
    completed_at: UtcTime | None
    expires_at: UtcTime | None
    polls: int
    error: ErrorInfo | None
    fields_verified: bool | None = Field(
        None,
        description="Whether `fields` were checked against the site's known fields "
        "(null when there was nothing to check).",
    )
    canceled_at: UtcTime | None = Field(None, description="When it was canceled.")
    feed_id: str | None = Field(None, description="The feed this export is a run of (else null).")
    window: Window | None = Field(
        None, description="A feed run's window: its CSV holds exactly `from <= created_time < to`."
    )
    links_expire_at: UtcTime | None = Field(
        None, description="When upstream deletes its CSV links (`expires_at` may be later)."
    )
    archive: Archive | None = Field(
        None, description="The gateway's own copy of the CSV; null when archiving is off."
    )

    @classmethod
    def of(cls, record: ExportRecord, task: TaskRecord, now: datetime | None = None) -> Export:
        now = now or utcnow()
        status: ExportStatus = "canceled" if record.canceled_at else task.status_at(now)
        if record.feed_id is not None:
            return cls._of_feed_run(record, task, status)
        links_expire_at = task.links_expire_at or task.expires_at
        # With an archived copy the export outlives its links: they are shown only while
        # upstream still keeps them (never a dead link, even while the expire step is late).
        links_alive = links_expire_at is None or now < links_expire_at
        # Built from two records that were validated when they were read: no need to validate
        # every member again (a status read is mostly this and the framework).
        return cls.model_construct(
            id=record.id,
            status=status,
            filter=record.filter,
            fields=record.fields,
            site_id=record.site_id,
            callback_url=record.callback_url,
            metadata=record.metadata,
            coalesced=record.coalesced,
            upstream_task_id=task.upstream_id,
            upstream_status=task.upstream_status,
            links=task.links if status == "completed" and links_alive else [],
            created_at=record.created_at,
            submitted_at=task.submitted_at,
            completed_at=task.completed_at,
            expires_at=task.expires_at,
            polls=task.polls,
            error=task.error if status == "failed" else None,
            fields_verified=record.fields_verified,
            canceled_at=record.canceled_at,
            links_expire_at=links_expire_at,
            archive=task.archive.view() if task.archive is not None else None,
        )

    @classmethod
    def _of_feed_run(cls, record: ExportRecord, task: TaskRecord, status: ExportStatus) -> Export:
        """A feed run's view: its CSV is the gateway's own windowed file, so it is completed
        once that file is written (not when upstream's task is), and it shows no upstream
        links (they hold rows outside the window), no upstream expiry and no archived copy
        (the archive's copy of the task is upstream's whole file, not the run's window)."""
        run = record.run_file
        error = task.error if status == "failed" else None
        if status in ("completed", "expired"):
            if run is None or run.state == "pending":
                status = "running"
            elif run.state == "failed":
                status, error = "failed", run.error
            else:
                status = "completed"
        return cls.model_construct(
            id=record.id,
            status=status,
            filter=record.filter,
            fields=record.fields,
            site_id=record.site_id,
            callback_url=record.callback_url,
            metadata=record.metadata,
            coalesced=record.coalesced,
            upstream_task_id=task.upstream_id,
            upstream_status=task.upstream_status,
            links=[],
            created_at=record.created_at,
            submitted_at=task.submitted_at,
            completed_at=run.written_at if run is not None and status == "completed" else None,
            expires_at=None,
            polls=task.polls,
            error=error,
            fields_verified=record.fields_verified,
            canceled_at=record.canceled_at,
            feed_id=record.feed_id,
            window=record.window,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class ExportPage(BaseModel):
    """One page of ``GET /v1/exports``, newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [EXPORT_EXAMPLE],
                    "next_cursor": "MTc2NDIzNzYwMDAwMDpleHBfM2tUTWQ5eDBRZTJiVzdzWXYxTGNSZw",
                }
            ]
        }
    )

    data: list[Export]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there are no more."
    )
