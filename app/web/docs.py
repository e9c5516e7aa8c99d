"""The OpenAPI document and ``/docs``, which works without internet access.

* ``/openapi.json`` is FastAPI's OpenAPI 3.1 document, finished here: every error response is
  ``application/problem+json`` with the ``Problem`` schema (FastAPI would file it under
  ``application/json``), with an example, and FastAPI's own ``HTTPValidationError`` is gone
  (our 422 is a Problem too).
* ``/docs`` is Swagger UI served from the ``swagger-ui-bundle`` package under
  ``/docs/static``: no CDN. That Swagger UI (4.15) renders only OpenAPI 3.0, so it is given
  ``/docs/openapi.json``, the same document said in 3.0 terms (``nullable`` instead of a
  ``null`` type, ``example`` instead of ``examples`` in schemas).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from app.platform.errors import PROBLEM_JSON

STATIC = "/docs/static"
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


def as_openapi_3_0(node: Any) -> Any:
    """The same document in OpenAPI 3.0 terms, for Swagger UI 4."""
    if isinstance(node, list):
        return [as_openapi_3_0(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for combinator in ("anyOf", "oneOf"):  # before the options themselves are converted
        options = node.get(combinator)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            del node[combinator]
            if len(rest) == 1 and "$ref" not in rest[0]:
                node = {**rest[0], **node}
            elif len(rest) == 1:
                node["allOf"] = rest
            else:
                node[combinator] = rest
            node["nullable"] = True
    out = {key: as_openapi_3_0(value) for key, value in node.items()}
    if isinstance(out.get("openapi"), str) and out["openapi"].startswith("3.1"):
        out["openapi"] = "3.0.3"
    if out.get("type") == "null":
        out.pop("type")
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    examples = out.get("examples")
    if isinstance(examples, list):  # a schema's `examples` list is 3.1 (elsewhere: a map)
        del out["examples"]
        if examples:
            out["example"] = examples[0]
    return out


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
            app.openapi_schema = finish_openapi(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(STATIC, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/docs/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/docs/openapi.json", include_in_schema=False)
    async def openapi_3_0() -> JSONResponse:
        return JSONResponse(as_openapi_3_0(app.openapi()))
