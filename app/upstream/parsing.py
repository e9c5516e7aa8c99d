"""Defensive reading of what Clickwrap sends back (its answers vary, so read defensively).

Upstream documents little: one example task, the word ``pending``, and that a finished task
"carries a property links". So every reader here accepts the shapes we have reason to expect
and refuses to guess beyond them:

* the envelope: ``{"data": {...}}`` or the bare task;
* status words, case-insensitively: success words, failure words, anything else is running;
* ``links``: a list of URL strings, or of objects with the URL under url/link/href/download_url;
* a completion time under any of a few plausible names, ISO 8601 or epoch (s or ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from app.upstream.errors import UpstreamBadResponse

TaskState = Literal["running", "completed", "failed"]

SUCCESS_WORDS = frozenset({"complete", "completed", "success", "succeeded", "done", "finished"})
FAILURE_WORDS = frozenset(
    {"failed", "failure", "error", "errored", "canceled", "cancelled", "aborted"}
)
LINK_KEYS = ("url", "link", "href", "download_url")
COMPLETION_KEYS = (
    "completed_at",
    "completed_time",
    "completedAt",
    "completed",
    "finished_at",
    "finished_time",
    "finishedAt",
    "date_completed",
)
FIELD_NAME_KEYS = ("name", "key", "field", "path")
MESSAGE_KEYS = ("error", "message", "error_message", "reason", "failure_reason")


@dataclass(frozen=True, slots=True)
class ParsedTask:
    id: str
    state: TaskState
    raw_status: str | None
    links: tuple[str, ...]
    completed_at: datetime | None
    message: str | None


def unwrap(payload: Any) -> Any:
    """``{"data": X}`` -> X when X is the real object; anything else unchanged."""
    if isinstance(payload, Mapping) and "data" in payload:
        inner = payload["data"]
        # A task's own "data" member (the export settings) sits beside its "id"; an envelope
        # has no id of its own.
        if isinstance(inner, Mapping | list) and "id" not in payload:
            return inner
    return payload


def parse_task(payload: Any) -> ParsedTask:
    task = unwrap(payload)
    if not isinstance(task, Mapping):
        raise UpstreamBadResponse("upstream task is not a JSON object")
    task_id = task.get("id") or task.get("_id")
    if not isinstance(task_id, str | int) or isinstance(task_id, bool) or str(task_id) == "":
        raise UpstreamBadResponse("upstream task carries no id")
    raw_status = task.get("status")
    status_text = str(raw_status) if raw_status is not None else None
    word = (status_text or "").strip().lower()
    links = parse_links(task.get("links"))
    state: TaskState
    if word in FAILURE_WORDS:
        state = "failed"
    elif links or word in SUCCESS_WORDS:
        state = "completed"
    elif task.get("active") is False:
        state = "failed"
    else:
        state = "running"
    return ParsedTask(
        id=str(task_id),
        state=state,
        raw_status=status_text,
        links=links,
        completed_at=_completion_time(task),
        message=_message(task),
    )


def parse_links(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | Mapping):
        value = [value]
    if not isinstance(value, list):
        return ()
    links: list[str] = []
    for item in value:
        url: Any = item
        if isinstance(item, Mapping):
            url = next((item[k] for k in LINK_KEYS if isinstance(item.get(k), str)), None)
        if isinstance(url, str) and url.strip().lower().startswith(("http://", "https://")):
            links.append(url.strip())
    return tuple(links)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 text or epoch seconds/milliseconds to an aware UTC datetime; else None."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            seconds = value / 1000 if value > 10_000_000_000 else value
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _completion_time(task: Mapping[str, Any]) -> datetime | None:
    for key in COMPLETION_KEYS:
        found = parse_time(task.get(key))
        if found is not None:
            return found
    return None


def _message(task: Mapping[str, Any]) -> str | None:
    for key in MESSAGE_KEYS:
        value = task.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:500]
        if isinstance(value, Mapping) and isinstance(value.get("message"), str):
            return str(value["message"]).strip()[:500]
    return None


def parse_field_names(payload: Any) -> list[str]:
    """``GET /sites/:id/exportFields``: {"data": [...]} or a bare list; strings or objects."""
    items = unwrap(payload)
    if not isinstance(items, list):
        raise UpstreamBadResponse("upstream export fields are not a list")
    names: list[str] = []
    for item in items:
        name: Any = item
        if isinstance(item, Mapping):
            name = next((item[k] for k in FIELD_NAME_KEYS if isinstance(item.get(k), str)), None)
        if isinstance(name, str) and name.strip():
            names.append(name.strip())
    return names
