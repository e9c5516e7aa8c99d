"""Strict request bodies, checked before anything parses them (an ASGI middleware).

For every request that carries a body (POST, PUT, PATCH):

* a ``Content-Length`` above ``MAX_BODY_BYTES`` (64 KiB) answers 413 at once, unread;
* a body streamed without a length is read in chunks and refused with 413 as soon as it
  passes the cap, so at most 64 KiB plus one chunk is ever held;
* a non-empty body that is not ``application/json`` (or ``application/*+json``) answers 415,
  except that the operator console's pages (``/console/...``) also take HTML forms
  (``application/x-www-form-urlencoded``).

The body that passes is handed on unchanged. Errors are the usual problem+json.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.platform.errors import (
    PROBLEM_JSON,
    BadRequest,
    GatewayError,
    MemberProblem,
    PayloadTooLarge,
    UnsupportedMediaType,
)

MAX_BODY_BYTES = 64 * 1024
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _is_form(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/x-www-form-urlencoded"


def _takes_forms(path: str) -> bool:
    """The operator console's pages post HTML forms; every other route takes JSON only."""
    return path == "/console" or path.startswith("/console/")


def _too_large(max_bytes: int) -> PayloadTooLarge:
    detail = f"the body may be at most {max_bytes} bytes"
    return PayloadTooLarge(detail, errors=[MemberProblem("body", detail)])


class RequestBodyGuard:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                detail = "Content-Length is not a number"
                error: GatewayError = BadRequest(
                    detail, errors=[MemberProblem("Content-Length", detail)]
                )
                await _reject(error, scope, send)
                return
            if int(declared) > self.max_bytes:
                await _reject(_too_large(self.max_bytes), scope, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reject(_too_large(self.max_bytes), scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and not (
            is_json(headers.get("content-type"))
            or (_is_form(headers.get("content-type")) and _takes_forms(scope["path"]))
        ):
            detail = "send the body as application/json"
            got = headers.get("content-type") or "none"
            await _reject(
                UnsupportedMediaType(
                    f"{detail} (Content-Type was {got})",
                    errors=[MemberProblem("Content-Type", detail)],
                ),
                scope,
                send,
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(error: GatewayError, scope: Scope, send: Send) -> None:
    payload = json.dumps(error.problem(instance=scope.get("path"))).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
