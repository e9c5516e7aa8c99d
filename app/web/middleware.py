"""Per-request context for the API: the request id (``X-Request-ID`` in and out), one log
line per request with its method, route path, status, duration and client id, the HTTP
request metrics (requests by route template, method and status class; a duration histogram),
and the catch-all: any exception nothing else handled becomes a problem+json 500 carrying the
request id, logged once with it (so every answer, 5xx included, is problem+json with
``X-Request-ID``).

A request the client abandoned before any answer started is logged with status 499 (the
convention of nginx), not as a server error."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.platform import metrics
from app.platform.errors import PROBLEM_JSON, GatewayError
from app.platform.logs import bound, log_context
from app.web.serverlimits import MAX_HEADER_BYTES, HeadersTooLarge

log = logging.getLogger("app.requests")
CLIENT_CLOSED_REQUEST = 499

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is echoed only when it is short and plain; otherwise a fresh one is made.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_EXPORT_PATH = re.compile(r"^/v1/exports/(exp_[A-Za-z0-9_-]{1,64})")


# A request id needs to be unique, not secret: a random prefix per process (made again in a
# forked child) and a counter. Reading the system's random source on every request showed up
# in the profile.
_prefix = ""
_next_number = itertools.count(1).__next__


def _new_prefix() -> None:
    global _prefix, _next_number
    _prefix = "req_" + secrets.token_hex(6)
    _next_number = itertools.count(1).__next__


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    return f"{_prefix}{_next_number():012x}"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        header_bytes = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4  # as sent: "name: value\r\n"
            if name == b"x-request-id":
                given = value.decode("latin-1")
        request_id = given if _ACCEPTABLE_ID.match(given) else new_request_id()
        status = CLIENT_CLOSED_REQUEST  # until an answer starts
        answered = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        path = scope.get("path", "")
        found = _EXPORT_PATH.match(path)
        app = self.app if header_bytes <= MAX_HEADER_BYTES else _headers_too_large
        with log_context(request_id=request_id, export_id=found.group(1) if found else None):
            try:
                await app(scope, receive, send_with_id)
            except Exception as exc:
                status = 500
                log.exception("unhandled error", extra={"error": type(exc).__name__})
                if not answered:
                    await _internal_error(scope, send_with_id)
                # else the answer is cut short: the server drops the connection
            finally:
                seconds = time.perf_counter() - started
                _count(scope, status, seconds)
                if path not in ("/healthz", "/readyz", "/metrics") or status >= 500:
                    log.info(
                        "request",
                        extra={
                            "method": scope.get("method"),
                            "path": path,
                            "status": status,
                            "duration_ms": round(seconds * 1000, 1),
                            "client_id": bound("client_id"),
                        },
                    )


UNMATCHED = "<unmatched>"


def _count(scope: Scope, status: int, seconds: float) -> None:
    """HTTP request metrics by route *template* (``/v1/exports/{export_id}``, never the id
    itself, so the series stay few), method and status class."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:  # a mount (the docs' static files) grows root_path by its own path
        mounted = scope.get("root_path", "").removeprefix(scope.get("app_root_path", ""))
        template = f"{mounted}/{{path}}" if mounted else UNMATCHED
    method = scope.get("method", "")
    metrics.HTTP_REQUESTS.labels(template, method, f"{status // 100}xx").inc()
    metrics.HTTP_DURATION.labels(template, method).observe(seconds)


async def _internal_error(scope: Scope, send: Send) -> None:
    error = GatewayError("the gateway failed to handle this request; it has been logged")
    await _send_problem(error, scope, send)


async def _headers_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    # The connection's own guard (app.web.serverlimits) stops header floods as they arrive;
    # this is the exact limit on what did arrive in one go.
    detail = f"request headers may be at most {MAX_HEADER_BYTES} bytes"
    await _send_problem(HeadersTooLarge(detail), scope, send, close=True)


async def _send_problem(error: GatewayError, scope: Scope, send: Send, close: bool = False) -> None:
    payload = json.dumps(error.problem(instance=scope.get("path"))).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
