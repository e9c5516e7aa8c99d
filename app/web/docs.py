"""The OpenAPI document and ``/docs``, which works without internet access.

* ``/openapi.json`` is FastAPI's OpenAPI 3.1 document, finished here: every error response is
  ``application/problem+json`` with the ``Problem`` schema (FastAPI would file it under
  ``application/json``), with an example, and FastAPI's own ``HTTPValidationError`` is gone
  (our 422 is a Problem too). Its ``webhooks`` describe what the gateway POSTs to a
  ``callback_url``: one entry per event type of ``WEBHOOK_EVENTS`` (a new event type is one more
  entry there), each with the Standard Webhooks signature headers.
* ``/docs`` is Swagger UI 5 (which reads OpenAPI 3.1 as it is) served from the files that the
  ``fastapi-offline`` package ships, under ``/docs/static``: no CDN.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from app.platform.errors import PROBLEM_JSON
from app.webhooks.schemas import WEBHOOK_EVENTS, WEBHOOK_HEADERS

STATIC = "/docs/static"
# Swagger UI 5's files as fastapi-offline ships them (its own app factory is not used).
SWAGGER_UI_FILES = Path(fastapi_offline.__file__).parent / "static"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


_EXAMPLES: dict[int, tuple[str, str, str | None]] = {
    400: ("bad-request", "the body is not valid JSON: EOF while parsing", "body"),
    401: ("unauthenticated", "the API key is not valid", None),
    404: ("not-found", "no export 'exp_3kTMd9x0Qe2bW7sYv1LcRg'", None),
    409: ("conflict", "export 'exp_3kTMd9x0Qe2bW7sYv1LcRg' is already completed", None),
    410: ("gone", "the export's CSV files have expired", None),
    413: ("payload-too-large", "the body may be at most 65536 bytes", "body"),
    415: ("unsupported-media-type", "send the body as application/json", "Content-Type"),
    422: ("invalid-request", "filter: expected a value at position 12", "filter"),
    429: ("too-many-requests", "more than 60 export requests in a minute", None),
    502: ("upstream-failure", "upstream refused the request", None),
    503: ("service-unavailable", "the gateway's store is unreachable; try again shortly", None),
}


def _problem_example(status: int) -> dict[str, Any]:
    slug, detail, member = _EXAMPLES.get(status, (str(status), HTTPStatus(status).phrase, None))
    example: dict[str, Any] = {
        "type": f"https://export-gateway.internal/problems/{slug}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": "/v1/exports",
    }
    if member is not None:
        pointer = "" if member == "body" else f"/{member}"
        example["errors"] = [{"member": member, "pointer": pointer, "detail": detail}]
    return example


def finish_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx response becomes a problem+json Problem with an example; every route
    that needs a key documents 401, and every ``/v1`` route 503 (Redis unreachable)."""
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                responses.setdefault("401", {"description": "Missing or wrong API key"})
            if path.startswith("/v1/"):
                responses.setdefault(
                    "503", {"description": "Redis unreachable; retry after `Retry-After` seconds"}
                )
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = {
                        PROBLEM_JSON: {
                            "schema": PROBLEM_REF,
                            "example": _problem_example(int(code)),
                        }
                    }
    schemas = spec.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def add_webhooks(spec: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.1 ``webhooks``: one POST per event type, its body ``WebhookEvent`` with that
    ``type``, its signature headers, and what the gateway makes of the receiver's answer."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["WebhookEvent"] = {
        "title": "WebhookEvent",
        "type": "object",
        "description": "The body of every webhook: the event's type, when it happened, and "
        "the export as `GET /v1/exports/{id}` shows it at that moment.",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "enum": [name for name, _ in WEBHOOK_EVENTS]},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": {"$ref": "#/components/schemas/Export"},
        },
    }
    headers = [
        {"name": name, "in": "header", "required": True, "description": text,
         "schema": {"type": "string"}}
        for name, text in WEBHOOK_HEADERS
    ]  # fmt: skip
    webhooks: dict[str, Any] = {}
    for name, description in WEBHOOK_EVENTS:
        webhooks[name] = {
            "post": {
                "summary": f"{name} (sent to the export's callback_url)",
                "description": description,
                "operationId": "webhook_" + name.replace(".", "_"),
                "parameters": headers,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "allOf": [
                                    {"$ref": "#/components/schemas/WebhookEvent"},
                                    {"properties": {"type": {"const": name}}},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "2XX": {"description": "Delivered: no more attempts."},
                    "410": {"description": "Gone: the gateway stops retrying this event."},
                    "default": {
                        "description": "Anything else (or a timeout after 15 s, or no "
                        "connection): retried on GATEWAY_WEBHOOK_RETRY_SCHEDULE."
                    },
                },
            }
        }
    spec["webhooks"] = webhooks
    return spec


def install(app: FastAPI) -> None:
    """Serve ``/docs`` from local assets and finish the OpenAPI document.
    The app must be created with ``docs_url=None, redoc_url=None``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = add_webhooks(finish_openapi(spec))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(STATIC, StaticFiles(directory=str(SWAGGER_UI_FILES)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
