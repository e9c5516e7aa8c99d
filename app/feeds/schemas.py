"""Shapes of a feed: the caller's requests, the stored record and the caller-facing view.

``FeedRecord`` is stored (``gw:feed:{id}``); besides what the caller sees it holds the run in
progress (``RunState``), which is what makes runs of one feed never overlap and a failed run
retry the same window. ``Feed`` is what callers see.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.exports.schemas import UtcTime, Window, _check_field_names, _check_metadata

FEED_EXAMPLE: dict[str, Any] = {
    "id": "feed_9sQeLk2v0Qe2bW7sYv1LcR",
    "filter": "event_type==agreed",
    "fields": ["id", "signer_id", "created_time"],
    "site_id": 5193,
    "schedule": "0 2 * * *",
    "start_from": "2026-01-01T00:00:00Z",
    "watermark": "2026-11-30T01:55:00Z",
    "next_run_at": "2026-12-01T02:00:00Z",
    "last_export_id": "exp_3kTMd9x0Qe2bW7sYv1LcRg",
    "paused": False,
    "callback_url": "https://warehouse.internal.example/hooks/feeds",
    "metadata": {"team": "billing"},
    "created_at": "2026-01-01T00:00:00Z",
}


class FeedCreate(BaseModel):
    """Body of ``POST /v1/feeds``: the query (as an export's), the schedule and where to
    start. Unknown members are refused."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "filter": "event_type==agreed",
                    "fields": ["id", "signer_id", "created_time"],
                    "site_id": 5193,
                    "schedule": "0 2 * * *",
                    "start_from": "2026-01-01T00:00:00Z",
                    "callback_url": "https://warehouse.internal.example/hooks/feeds",
                    "metadata": {"team": "billing"},
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
    site_id: int | None = Field(None, ge=1, le=2**53, description="The Clickwrap site.")
    schedule: str = Field(
        max_length=200, description="Five-field cron expression in UTC (at most once a minute)."
    )
    start_from: str | None = Field(
        None,
        max_length=64,
        description="ISO 8601 time, not in the future: the first run's lower bound "
        "(default: the feed's creation time).",
    )
    paused: bool = Field(False, description="Created paused: no run until resumed.")
    callback_url: str | None = Field(None, max_length=2048, description="Where webhooks go.")
    metadata: Annotated[dict[str, Any] | None, AfterValidator(_check_metadata)] = Field(
        None, description="A JSON object of at most 4 KiB, echoed in every run's export."
    )

    @field_validator("filter")
    @classmethod
    def _blank_filter_is_none(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None


# How often the scheduler looks at a run in progress, to move on what a crash left half-done.
RUN_CHECK = timedelta(seconds=60)

IMMUTABLE_MEMBERS = ("filter", "fields", "site_id", "start_from")


class FeedPatch(BaseModel):
    """Body of ``PATCH /v1/feeds/{id}``: only ``schedule``, ``paused``, ``callback_url`` and
    ``metadata`` change. The query members are named here only to be refused with a reason
    (a changed query would break exactly-once: create a new feed instead)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    schedule: str | None = Field(None, max_length=200, description="Five-field cron, UTC.")
    paused: bool | None = Field(None, description="Pause (no new runs) or resume.")
    callback_url: str | None = Field(None, max_length=2048, description="null removes it.")
    metadata: Annotated[dict[str, Any] | None, AfterValidator(_check_metadata)] = Field(
        None, description="Replaces the metadata (null: none)."
    )
    filter: Any = Field(None, description="Cannot be changed (422): create a new feed.")
    fields: Any = Field(None, description="Cannot be changed (422): create a new feed.")
    site_id: Any = Field(None, description="Cannot be changed (422): create a new feed.")
    start_from: Any = Field(None, description="Cannot be changed (422): create a new feed.")


class RunState(BaseModel):
    """The feed's run in progress: one window, tried up to ``GATEWAY_FEED_RUN_ATTEMPTS``
    times, each attempt an export. ``retry_at`` is set while waiting to try again."""

    export_id: str
    window: Window
    attempt: int = 1
    started_at: UtcTime
    retry_at: UtcTime | None = None


class FeedRecord(BaseModel):
    """One feed as stored."""

    id: str
    client_id: str
    filter: str | None
    fields: list[str] | None
    site_id: int | None
    schedule: str
    start_from: UtcTime
    watermark: UtcTime
    next_run_at: UtcTime | None
    last_export_id: str | None = None
    paused: bool = False
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: UtcTime
    run: RunState | None = None

    def due_at(self) -> datetime | None:
        """When the scheduler must next look at the feed (None: never, until changed): its
        next run, or while a run is in progress, its retry or a check on how it is doing."""
        if self.run is not None:
            return self.run.retry_at or self.run.started_at + RUN_CHECK
        return None if self.paused else self.next_run_at


class Feed(BaseModel):
    """The caller-facing feed."""

    model_config = ConfigDict(json_schema_extra={"examples": [FEED_EXAMPLE]})

    id: str
    filter: str | None
    fields: list[str] | None
    site_id: int | None
    schedule: str
    start_from: UtcTime
    watermark: UtcTime = Field(
        description="The last completed run's `to` (`start_from` before any): the next run's "
        "`from`."
    )
    next_run_at: UtcTime | None = Field(description="The next scheduled run (null when paused).")
    last_export_id: str | None
    paused: bool
    callback_url: str | None
    metadata: dict[str, Any] | None
    created_at: UtcTime
    running_export_id: str | None = Field(
        None, description="Extension: the export of the run in progress (null when none)."
    )

    @classmethod
    def of(cls, record: FeedRecord) -> Feed:
        return cls(
            id=record.id,
            filter=record.filter,
            fields=record.fields,
            site_id=record.site_id,
            schedule=record.schedule,
            start_from=record.start_from,
            watermark=record.watermark,
            next_run_at=None if record.paused else record.next_run_at,
            last_export_id=record.last_export_id,
            paused=record.paused,
            callback_url=record.callback_url,
            metadata=record.metadata,
            created_at=record.created_at,
            running_export_id=record.run.export_id if record.run is not None else None,
        )


class FeedPage(BaseModel):
    """One page of ``GET /v1/feeds``, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"data": [FEED_EXAMPLE], "next_cursor": None}]}
    )

    data: list[Feed]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there are no more."
    )
