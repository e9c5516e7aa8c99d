"""Settings of the sandbox upstream: timing, data volume, response shapes and injected faults.

`SandboxConfig` is the one source of truth for every knob. It is built from code, from
`SANDBOX_*` environment variables (`SandboxConfig.from_env`) or changed at run time through the
control route `POST /_sandbox/config` (a JSON merge-patch, see `merge_patch`).
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LinksShape = Literal["strings", "url", "link", "href", "download_url"]
FieldsShape = Literal["data_strings", "bare_strings", "data_objects", "bare_objects"]

#: The connection_data members documented for an activity record.
CONNECTION_DATA_KEYS: tuple[str, ...] = (
    "page_title",
    "page_url",
    "page_domain",
    "page_path",
    "page_query",
    "hostname",
    "referrer",
    "browser_timezone",
    "browser_locale",
    "user_agent",
    "device_fingerprint",
    "operating_system",
    "environment",
    "screen_color_depth",
    "screen_resolution",
    "cookies",
    "remote_address",
)

#: Top-level members of an activity record, in the order of the vendor's reference.
RECORD_KEYS: tuple[str, ...] = (
    "id",
    "uuid",
    "version",
    "contract",
    "group",
    "site",
    "account",
    "signer_id",
    "event_type",
    "batch",
    "created_time",
)

#: custom_data keys every default site knows about (a site's own, free-form data).
DEFAULT_CUSTOM_DATA_KEYS: tuple[str, ...] = ("vip", "plan", "order_id", "first_name", "notes")

#: Every field an export may name on a site without an explicit field list.
DEFAULT_SITE_FIELDS: tuple[str, ...] = (
    *RECORD_KEYS,
    *(f"connection_data.{key}" for key in CONNECTION_DATA_KEYS),
    *(f"custom_data.{key}" for key in DEFAULT_CUSTOM_DATA_KEYS),
)

#: Columns of an export that names no `fields` (the vendor's default is undocumented).
DEFAULT_EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "signer_id",
    "created_time",
    "event_type",
    "contract",
    "version",
    "group",
    "site",
    "connection_data.remote_address",
)


class TimelineRecord(BaseModel):
    """One activity record of the sandbox's timeline (see `SandboxConfig.timeline`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    created_time: str
    """As upstream would write it (`2026-11-30T10:00:00.000Z`); any text, to test bad rows."""
    event_type: str = "agreed"
    late_seconds: float | None = Field(default=None, ge=0)
    """How long after `created_time` upstream indexes it (None: `index_delay_seconds`)."""


class SandboxConfig(BaseModel):
    """Every knob of the sandbox. Unknown names are rejected (a typo in a patch is an error)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- identity and authorisation -------------------------------------------------------
    token: str = "sandbox-token"  # noqa: S105 - a fake token of a fake API
    """Bearer token accepted on the upstream API routes (not on CSV files or control routes)."""
    forbidden_sites: set[int] = Field(default_factory=lambda: {403})
    """Sites the token lacks permission for: 403 on export, activity and exportFields."""
    allowed_sites: set[int] | None = None
    """When set, every other site answers 403 too."""
    default_site: int = 5193
    """Site used when a request names none (the vendor's example site)."""
    account: int = 2785
    created_by: int = 9785

    # --- export tasks ----------------------------------------------------------------------
    task_seconds: float = Field(default=3.0, ge=0)
    """How long a task stays pending/running before it completes (or fails)."""
    task_seconds_max: float | None = Field(default=None, ge=0)
    """When set, each task's duration lies between task_seconds and this, by task id hash."""
    pending_fraction: float = Field(default=0.25, ge=0, le=1)
    """Share of a task's duration spent `pending` before it turns `running`."""
    rows: int = Field(default=250, ge=0)
    """Rows of every export (fixed when the task is created)."""
    rows_per_file: int = Field(default=100, ge=1)
    """Rows per CSV file: an export has ceil(rows / rows_per_file) links (at least one)."""
    retention_seconds: float = Field(default=2_592_000, ge=0)
    """CSV files answer 404 this long after the task completed."""
    sites: dict[int, list[str]] = Field(default_factory=dict)
    """Export fields per site; a site not listed has DEFAULT_SITE_FIELDS."""
    default_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_SITE_FIELDS))
    """Fields of every site not named in `sites`."""
    default_columns: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPORT_COLUMNS))
    """Columns of an export requested without `fields`."""
    public_base_url: str | None = None
    """Root URL used to build CSV links (e.g. `http://sandbox:8090`); default: the request's."""
    signed_links: bool = True
    """CSV links carry a `signature` query parameter (like a pre-signed URL) that is checked."""

    # --- response shapes -------------------------------------------------------------------
    envelope: bool = True
    """Task responses are `{"data": task}` (True) or the bare task (False)."""
    links_shape: LinksShape = "strings"
    """`links` items: URL strings, or objects carrying the URL under this key."""
    complete_status: str = "complete"
    running_status: str = "running"
    pending_status: str = "pending"
    failed_status: str = "failed"
    completion_time_field: str | None = "completed_at"
    """Name of the completion time member of a finished task; None leaves it out."""
    fields_shape: FieldsShape = "data_strings"
    """exportFields answer: {"data": [str]}, [str], {"data": [{"name": str}]} or [{"name"}]."""
    no_count_total: Literal["omit", "minus_one", "null"] = "omit"
    """What `total_count` becomes in an activity page asked for with no_count=true."""
    activity_records: int = Field(default=237, ge=0)
    """Size of the fixed, deterministic data set behind GET /activity (per site)."""

    # --- a timeline of activity arriving while the gateway runs (feeds) ---------------------
    strict_filters: bool = False
    """Answer 400 to any filter operator but `==` and `>=`, and to `>=` on created_time with
    anything but a date (`YYYY-MM-DD`): only what upstream is known to understand."""
    timeline: list[TimelineRecord] | None = None
    """When set, an export holds exactly the timeline's records that match its filter and are
    visible when the task is created (instead of generated rows)."""
    now: str | None = None
    """The timeline's "now" (an ISO time; None: the real clock). A record is visible once it
    was created before now and indexed (created_time + its lateness) by now."""
    index_delay_seconds: float = Field(default=0, ge=0)
    """How long after its created_time upstream indexes a timeline record, by default."""

    # --- CSV files -------------------------------------------------------------------------
    csv_bom: bool = False
    """Prefix every CSV file with a UTF-8 byte order mark."""
    csv_trailing_newline: bool = True
    """End every CSV file with a line break (False drops the last one)."""
    csv_crlf: bool = False
    """Rows end with CRLF instead of LF."""
    csv_tricky_values: bool = False
    """Some values then hold line breaks, quotes and non-ASCII text (CSV quoting tests)."""
    csv_fault_after_bytes: int | None = Field(default=None, ge=0)
    """When set, every CSV download aborts (connection dropped) after this many bytes."""
    csv_chunk_rows: int = Field(default=512, ge=1)
    """Rows rendered per streamed chunk."""
    csv_chunk_delay_seconds: float = Field(default=0.0, ge=0)
    """A pause after every streamed chunk: a slow file host (downloads that take a while)."""

    # --- faults (decided before a request is processed, on the upstream API routes) ---------
    seed: int | None = None
    """Seed of the fault RNG (None: unpredictable). Changing it reseeds."""
    fail_rate_429: float = Field(default=0.0, ge=0, le=1)
    fail_rate_503: float = Field(default=0.0, ge=0, le=1)
    fail_rate_500: float = Field(default=0.0, ge=0, le=1)
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of answers that are 200 with a body that is not JSON (nothing is processed)."""
    retry_after_seconds: float = Field(default=1.0, ge=0)
    """Retry-After of 429 and 503 answers (an integer unless given with a fraction)."""
    retry_after_http_date: bool = False
    """Send Retry-After as an HTTP date instead of seconds."""
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_seconds: float = Field(default=0.0, ge=0)
    task_fail_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of new tasks that end `failed` (decided at creation)."""
    never_finish: bool = False
    """New tasks stay running forever (also: a filter containing `__never__`)."""
    rate_limit_per_second: int | None = Field(default=None, ge=1)
    """When set, an API request arriving while more than this many arrived in the last second
    (itself included) answers 429."""
    max_active_tasks_limit: int | None = Field(default=None, ge=0)
    """When set, creating a task while this many are active answers 429."""

    def fields_for_site(self, site: int) -> list[str]:
        """The export fields of `site`."""
        return self.sites.get(site, self.default_fields)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Build a config from `SANDBOX_<FIELD>` variables (e.g. SANDBOX_TASK_SECONDS=0.5).

        Every field can be set; non-text values are read as JSON (`SANDBOX_SITES={"1":["id"]}`,
        `SANDBOX_FORBIDDEN_SITES=[403,404]`, `SANDBOX_CSV_BOM=true`); an empty value turns an
        optional text knob off (`SANDBOX_COMPLETION_TIME_FIELD=`).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"SANDBOX_{name.upper()}")
            if raw is None:
                continue
            if _is_textual(field.annotation):
                values[name] = None if raw == "" and _is_optional(field.annotation) else raw
            else:
                values[name] = _json_or_text(raw)
        return cls.model_validate(values)


def merge_patch(config: SandboxConfig, patch: Mapping[str, Any]) -> SandboxConfig:
    """Apply a JSON merge-patch (RFC 7396) to `config`; validate the result.

    A top-level `null` sets the field to None (meaningful for optional knobs); inside a nested
    object (e.g. `sites`), `null` deletes the member, as RFC 7396 says.
    """
    current = config.model_dump(mode="json")
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key] = _merge(current[key], value)
        else:
            current[key] = value
    return SandboxConfig.model_validate(current)


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def _is_textual(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return len(args) == 1 and _is_textual(args[0])
    return False


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
