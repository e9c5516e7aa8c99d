"""``DirectRoute``: a FastAPI route that hands the request straight to its handler.

FastAPI still declares and documents it like any other (path parameters, body and headers from
the endpoint's signature, ``response_model``, ``responses``, ``openapi_extra``), but does no
per-request work for it: no dependency solving, no parameter or response validation. The
handler receives the ``Request`` and its path parameters (as strings) and returns a
``Response`` itself; it does its own checks, with FastAPI's own errors (``json_body``). For
the two hottest routes only (``GET`` and ``POST /v1/exports``), where that work was most of
the cost (docs/PERFORMANCE.md). ``get_route_handler`` is FastAPI's documented hook for custom
route classes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[..., Awaitable[Response]]


class DirectRoute(APIRoute):
    """The endpoint both declares the route and handles it: it is called as
    ``endpoint(request=..., **path_params)``."""

    def handler(self) -> Handler:
        return self.endpoint

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = self.handler()

        async def handle(request: Request) -> Response:
            return await handler(request=request, **request.path_params)

        return handle


def handled_by(handler: Handler) -> type[DirectRoute]:
    """A ``DirectRoute`` class whose requests go to ``handler``, for a route whose endpoint
    (given to FastAPI as usual) only declares its body and headers for the OpenAPI document."""

    class Route(DirectRoute):
        def handler(self) -> Handler:
            return handler

    return Route


async def json_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as ``model``, failing exactly as FastAPI does for a body
    parameter: ``RequestValidationError`` for a missing body, JSON it cannot decode
    (``json_invalid``) or a member that does not validate (its ``loc`` under ``body``), and a
    400 ``HTTPException`` for bytes that are not text. (``app.web.requestbody`` has already
    refused a body that is too large or not ``application/json``.)"""
    raw = await request.body()
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc
    except ValueError as exc:  # bytes that are not UTF-8/16/32 text
        raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        return model.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=data) from None
