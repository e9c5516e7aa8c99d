"""HTTP face of the sandbox: the imitated Clickwrap v1.1 routes, CSV files and control routes.

Routes (see the package docstring for the full list) live under `/v1.1`, so the upstream base
URL of a sandbox on port 8090 is `http://127.0.0.1:8090/v1.1`. A pure ASGI middleware counts
every request, measures the arrival rate of the upstream API routes and injects the configured
faults before a request reaches its handler (a faulted request never creates anything).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from email.utils import formatdate
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.config import SandboxConfig, merge_patch
from app.sandbox.data import CsvAbortedError, csv_file_chunks, format_time, timeline_file_chunks
from app.sandbox.filters import parse_filter, strict_problem
from app.sandbox.state import (
    FILES_ROUTE,
    SandboxState,
    Task,
    activity_selection,
)

API_PREFIX = "/v1.1"
CONTROL_PREFIX = "/_sandbox"
MAX_PER_PAGE = 100
_LINK_KEY = b"clickwrap-sandbox-link-signature"
_FILE_NAME = re.compile(r"^(\d{1,9})\.csv$")
_TRUE = frozenset({"true", "1", "yes"})
# The vendor's own example answer, verbatim: its text lacks a comma after the inner object.
_MALFORMED_BODY = (
    b'{"data": {"status": "pending", "source": "api", "retry_count": 0, "active": true, '
    b'"job_name": "GenerateExportCSV", "created_by": 9785, "account": 2785, "site": 5193, '
    b'"data": {"exportName": "action", "exportType": "Action", "sendTo": "someone@example.com"} '
    b'"id": "5f88abf5f4689d7295cf1134"}}'
)

_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/v1\.1/tasks/export/activity/?$"), "/v1.1/tasks/export/activity"),
    ("GET", re.compile(r"^/v1\.1/tasks/export/[^/]+/?$"), "/v1.1/tasks/export/{task_id}"),
    ("GET", re.compile(r"^/v1\.1/activity/?$"), "/v1.1/activity"),
    (
        "GET",
        re.compile(r"^/v1\.1/sites/[^/]+/exportFields/?$"),
        "/v1.1/sites/{site_id}/exportFields",
    ),
    ("GET", re.compile(r"^/v1\.1/files/[^/]+/[^/]+$"), FILES_ROUTE),
)


def route_label(method: str, path: str) -> str:
    """`METHOD /template` of a request, as the stats show it."""
    for route_method, pattern, template in _ROUTES:
        if method == route_method and pattern.match(path):
            return f"{method} {template}"
    return f"{method} (unmatched)"


class ApiError(Exception):
    """An error answer of the imitated API: `{"status", "error", "message"}` JSON."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"status": status, "error": _REASONS.get(status, "Error"), "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


def retry_after_value(config: SandboxConfig) -> str:
    seconds = config.retry_after_seconds
    if config.retry_after_http_date:
        return formatdate(time.time() + seconds, usegmt=True)
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


class SandboxMiddleware:
    """Counts requests by route and status; on API routes, rate-measures and injects faults."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        state = self.state
        path: str = scope["path"]
        label = route_label(scope["method"], path)
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path.startswith(API_PREFIX + "/") and not label.endswith(FILES_ROUTE):
                fault = await self._fault(state)
                if fault is not None:
                    await fault(scope, receive, send_counted)
                    return
            await self.app(scope, receive, send_counted)
        except CsvAbortedError:
            # Returning with the body unfinished makes the server drop the connection (it logs
            # one line, "ASGI callable returned without completing response"): a cut download.
            pass
        finally:
            state.note_response(label, status)

    async def _fault(self, state: SandboxState) -> Response | None:
        arrivals = state.note_api_arrival()
        config = state.config
        if state.draw_slow() and config.slow_seconds > 0:
            state.note_fault("slow")
            await asyncio.sleep(config.slow_seconds)
            config = state.config
        limit = config.rate_limit_per_second
        if limit is not None and arrivals > limit:
            state.note_fault("rate_limited")
            return error_response(
                429,
                f"Rate limit of {limit} requests per second exceeded.",
                {"Retry-After": retry_after_value(config)},
            )
        fault = state.draw_fault()
        if fault is None:
            return None
        state.note_fault(fault)
        if fault == "malformed":
            return Response(_MALFORMED_BODY, media_type="application/json")
        if fault == "429":
            return error_response(
                429, "Too many requests.", {"Retry-After": retry_after_value(config)}
            )
        if fault == "503":
            return error_response(
                503, "Service temporarily unavailable.", {"Retry-After": retry_after_value(config)}
            )
        return error_response(500, "Internal server error.")


# --- helpers of the API routes ------------------------------------------------------------------
def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _authorize(request: Request, config: SandboxConfig) -> None:
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(401, "Missing bearer token.", {"WWW-Authenticate": "Bearer"})
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), config.token.encode()
    ):
        raise ApiError(401, "Invalid access token.", {"WWW-Authenticate": "Bearer"})


def _check_site(site: int, config: SandboxConfig) -> None:
    allowed = config.allowed_sites
    if site in config.forbidden_sites or (allowed is not None and site not in allowed):
        raise ApiError(403, f"The access token has no permission for site {site}.")


def _site(raw: str | None, config: SandboxConfig) -> int:
    if raw is None or raw == "":
        return config.default_site
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid site id {raw!r}.") from None


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"Query parameter {name} must be an integer.") from None


def _link_signature(task_id: str, number: int) -> str:
    message = f"{task_id}/{number}".encode()
    return hmac.new(_LINK_KEY, message, hashlib.sha256).hexdigest()[:32]


def _root_url(request: Request, config: SandboxConfig) -> str:
    if config.public_base_url:
        return config.public_base_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def file_url(root: str, task_id: str, number: int, signed: bool) -> str:
    """The absolute URL of file `number` of a task's export."""
    url = f"{root}{API_PREFIX}/files/{task_id}/{number}.csv"
    return f"{url}?signature={_link_signature(task_id, number)}" if signed else url


def render_task(task: Task, state: SandboxState, root: str) -> dict[str, Any]:
    """The task as upstream shows it, under the current shape knobs."""
    config = state.config
    phase = state.phase(task)
    body: dict[str, Any] = {
        "status": {
            "pending": config.pending_status,
            "running": config.running_status,
            "complete": config.complete_status,
            "failed": config.failed_status,
        }[phase],
        "source": "api",
        "retry_count": 0,
        "active": phase in ("pending", "running"),
        "job_name": "GenerateExportCSV",
        "created_by": config.created_by,
        "account": config.account,
        "site": task.site,
        "data": {"exportName": "action", "exportType": "Action", "sendTo": "someone@example.com"},
        "created_time": _iso(task, finished=False),
        "updated_time": _iso(task, finished=phase in ("complete", "failed")),
        "id": task.id,
    }
    if phase == "complete":
        urls = [
            file_url(root, task.id, number, config.signed_links)
            for number in range(1, task.file_count + 1)
        ]
        shape = config.links_shape
        body["links"] = urls if shape == "strings" else [{shape: url} for url in urls]
        if config.completion_time_field:
            body[config.completion_time_field] = _iso(task, finished=True)
    elif phase == "failed":
        body["error"] = "The export could not be generated."
    return {"data": body} if config.envelope else body


def _iso(task: Task, *, finished: bool) -> str:
    moment = task.finished_wall if finished else None
    return format_time(moment or task.created_wall)


# --- the app --------------------------------------------------------------------------------------
def create_app(config: SandboxConfig | None = None) -> FastAPI:
    """A fresh sandbox app with its own state (`app.state.sandbox`, a `SandboxState`)."""
    state = SandboxState(config or SandboxConfig())
    app = FastAPI(
        title="Clickwrap sandbox upstream",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sandbox = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    @app.post("/v1.1/tasks/export/activity")
    async def create_export(request: Request) -> Response:
        state = _state(request)
        config = state.config
        _authorize(request, config)
        query = dict(request.query_params)
        site = _site(query.get("site"), config)
        _check_site(site, config)
        flt = parse_filter(query.get("filter"))
        if flt.reject:
            raise ApiError(400, "Invalid filter.")
        if config.strict_filters and (problem := strict_problem(query.get("filter"))):
            raise ApiError(400, f"Invalid filter: {problem}")
        requested = [name.strip() for name in (query.get("fields") or "").split(",")]
        columns = [name for name in requested if name] or list(config.default_columns)
        known = set(config.fields_for_site(site))
        unknown = [name for name in columns if name not in known]
        if unknown:
            raise ApiError(400, f"Unknown export field(s) for site {site}: {', '.join(unknown)}.")
        limit = config.max_active_tasks_limit
        if limit is not None and state.active_now() >= limit:
            state.note_fault("active_limited")
            raise ApiError(
                429,
                f"Too many export tasks in progress (limit {limit}).",
                {"Retry-After": retry_after_value(config)},
            )
        task = state.create_task(site=site, columns=columns, flt=flt, query=query)
        return JSONResponse(render_task(task, state, _root_url(request, config)))

    @app.get("/v1.1/tasks/export/{task_id}")
    async def get_export(task_id: str, request: Request) -> Response:
        state = _state(request)
        _authorize(request, state.config)
        task = state.tasks.get(task_id)
        if task is None:
            raise ApiError(404, f"Task {task_id} not found.")
        task.polls += 1
        return JSONResponse(render_task(task, state, _root_url(request, state.config)))

    @app.get(FILES_ROUTE)
    async def download(task_id: str, file_name: str, request: Request) -> Response:
        state = _state(request)
        config = state.config
        task = state.tasks.get(task_id)
        match = _FILE_NAME.match(file_name)
        if task is None or match is None:
            return error_response(404, "No such file.")
        number = int(match.group(1))
        if config.signed_links:
            given = request.query_params.get("signature", "")
            if not hmac.compare_digest(given.encode(), _link_signature(task_id, number).encode()):
                return error_response(403, "Invalid or missing link signature.")
        if (
            state.phase(task) != "complete"
            or not 1 <= number <= task.file_count
            or state.is_expired(task)
        ):
            return error_response(404, "No such file.")
        task.downloads += 1
        first, stop = task.file_rows(number)
        if task.timeline_rows is not None:
            return StreamingResponse(
                timeline_file_chunks(
                    task.columns,
                    task.timeline_rows[first:stop],
                    bom=config.csv_bom,
                    trailing_newline=config.csv_trailing_newline,
                    crlf=config.csv_crlf,
                ),
                media_type="text/csv; charset=utf-8",
            )
        if config.csv_fault_after_bytes is not None:
            state.note_fault("csv_abort")
        chunks = csv_file_chunks(
            task.source(config.account),
            task.columns,
            first,
            stop,
            bom=config.csv_bom,
            trailing_newline=config.csv_trailing_newline,
            crlf=config.csv_crlf,
            chunk_rows=config.csv_chunk_rows,
            fault_after_bytes=config.csv_fault_after_bytes,
            chunk_delay=config.csv_chunk_delay_seconds,
        )
        return StreamingResponse(
            chunks,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{task_id}-{number}.csv"'},
        )

    @app.get("/v1.1/activity")
    async def list_activity(request: Request) -> Response:
        state = _state(request)
        config = state.config
        _authorize(request, config)
        query = request.query_params
        page = _int_param(query.get("page"), "page", 1)
        per_page = _int_param(query.get("per_page"), "per_page", 25)
        if page < 1:
            raise ApiError(400, "page must be 1 or more.")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ApiError(400, f"per_page must be between 1 and {MAX_PER_PAGE}.")
        site = _site(query.get("site"), config)
        _check_site(site, config)
        filter_text = query.get("filter") or ""
        if parse_filter(filter_text).reject:
            raise ApiError(400, "Invalid filter.")
        if config.strict_filters and (problem := strict_problem(filter_text)):
            raise ApiError(400, f"Invalid filter: {problem}")
        records = activity_selection(
            site, config.account, config.activity_records, filter_text, query.get("sort") or ""
        )
        start = (page - 1) * per_page
        items = list(records[start : start + per_page])
        body: dict[str, Any] = {"page": page, "per_page": per_page, "count": len(items)}
        total = len(records)
        if (query.get("no_count") or "").lower() not in _TRUE:
            body["total_count"] = total
        elif config.no_count_total == "minus_one":
            body["total_count"] = -1
        elif config.no_count_total == "null":
            body["total_count"] = None
        body["has_more"] = start + per_page < total
        body["data"] = items
        return JSONResponse(body)

    @app.get("/v1.1/sites/{site_id}/exportFields")
    async def export_fields(site_id: str, request: Request) -> Response:
        state = _state(request)
        config = state.config
        _authorize(request, config)
        site = _site(site_id, config)
        _check_site(site, config)
        names = config.fields_for_site(site)
        shape = config.fields_shape
        items: list[Any] = (
            list(names) if shape.endswith("strings") else [{"name": name} for name in names]
        )
        return JSONResponse({"data": items} if shape.startswith("data_") else items)

    # --- control routes (no token) ------------------------------------------------------------
    @app.get("/_sandbox/config")
    async def read_config(request: Request) -> Response:
        return JSONResponse(_state(request).config.model_dump(mode="json"))

    @app.post("/_sandbox/config")
    async def patch_config(request: Request) -> Response:
        state = _state(request)
        try:
            patch = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "The body is not JSON."}, status_code=400)
        if not isinstance(patch, dict):
            return JSONResponse({"error": "The body must be a JSON object."}, status_code=400)
        try:
            new = merge_patch(state.config, patch)
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False))
            return JSONResponse({"error": "Invalid config.", "errors": errors}, status_code=422)
        state.set_config(new)
        return JSONResponse(new.model_dump(mode="json"))

    @app.get("/_sandbox/stats")
    async def read_stats(request: Request) -> Response:
        return JSONResponse(_state(request).stats())

    @app.post("/_sandbox/reset")
    async def reset(request: Request) -> Response:
        state = _state(request)
        state.reset()
        return JSONResponse({"reset": True, "config": state.config.model_dump(mode="json")})

    @app.get("/_sandbox/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    app.add_middleware(SandboxMiddleware, state=state)
    return app


def serve(host: str, port: int, config: SandboxConfig) -> None:
    """Run a sandbox with uvicorn until interrupted (blocking; access log off)."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        ws="none",
        backlog=8192,
        timeout_keep_alive=30,
    )
