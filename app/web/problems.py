"""The one place errors become HTTP: every failure is an RFC 9457 problem+json response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.platform import metrics
from app.platform.errors import (
    PROBLEM_JSON,
    BadRequest,
    GatewayError,
    InvalidRequest,
    MemberProblem,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)


class ProblemMember(BaseModel):
    member: str = Field(examples=["fields[3]"])
    pointer: str = Field(examples=["/fields/3"])
    detail: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemMember] | None = None


def _problem_response(status: int, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}},
    }


_PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: invalid JSON, a bad header value",
    401: "Missing or wrong API key",
    404: "No such export (or another client's)",
    409: "Conflict with the export's state or with a request in flight",
    410: "Gone",
    413: "The body is over 64 KiB",
    415: "The body is not application/json",
    422: "A member of the request is invalid; `errors` names each one",
    429: "Too many requests; retry after `Retry-After` seconds",
    502: "Upstream refused the request",
    503: "Redis or upstream unreachable; retry after `Retry-After` seconds",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, each an
    ``application/problem+json`` Problem (``app.web.docs`` moves the media type)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": _PROBLEM_DESCRIPTIONS[status], "model": Problem}
        if status in (409, 429, 503):
            entry["headers"] = _RETRY_AFTER
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        responses[status] = entry
    return responses


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request", "model": Problem},
    401: {"description": "Missing or wrong API key", "model": Problem},
    404: {"description": "No such export (or another client's)", "model": Problem},
    422: {"description": "A member of the request is invalid", "model": Problem},
    503: {"description": "Redis or upstream unreachable; retry later", "model": Problem},
}


def render(error: GatewayError, request: Request) -> JSONResponse:
    return JSONResponse(
        error.problem(instance=request.url.path),
        status_code=error.status,
        headers=error.headers,
        media_type=PROBLEM_JSON,
    )


def _member(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_problem(exc: RequestValidationError) -> GatewayError:
    problems: list[MemberProblem] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            detail = f"the body is not valid JSON: {err.get('ctx', {}).get('error', message)}"
            return BadRequest(detail, errors=[MemberProblem("body", detail)])
        if err.get("type") == "missing" and loc == ("body",):
            problems.append(MemberProblem("body", "a JSON object is required"))
            continue
        problems.append(MemberProblem(_member(loc), message))
    summary = "; ".join(f"{p.member}: {p.detail}" for p in problems)
    return InvalidRequest(summary or "the request is invalid", errors=problems)


def install(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(request: Request, exc: GatewayError) -> JSONResponse:
        return render(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_problem(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        # FastAPI's own 400: a body it could not read as JSON text (e.g. not UTF-8).
        errors = [MemberProblem("body", detail)] if exc.status_code == 400 else None
        error = GatewayError(detail, errors=errors)
        body = error.problem(instance=request.url.path)
        body.update(status=exc.status_code, title=_title(exc.status_code))
        body["type"] = f"https://export-gateway.internal/problems/http-{exc.status_code}"
        headers = dict(exc.headers or {})  # e.g. Allow on a 405
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(body, exc.status_code, headers, media_type=PROBLEM_JSON)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("redis unavailable", extra={"error": type(exc).__name__})
        metrics.REDIS_ERRORS.labels("api").inc()
        error = ServiceUnavailable(
            "the gateway's store is unreachable; try again shortly",
            headers={"Retry-After": "2"},
        )
        return render(error, request)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route of the app answers on this path (Starlette's own 405 names
    only the first route that matched the path, though several may share it)."""
    methods = {
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    }
    return ", ".join(sorted(methods))


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
