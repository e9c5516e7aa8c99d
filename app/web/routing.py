"""``DirectRoute``: a FastAPI route that hands the request straight to its endpoint.

FastAPI declares and documents it like any other route, from the endpoint's own signature
(path parameters, headers, body model, dependencies, ``response_model``, ``responses``), but
does none of its per-request work for it: no dependency solving, no parameter or response
validation. Instead, the route reads the endpoint's signature once, when it is declared, and
fills each parameter per request with one small step, in declaration order:

* ``Request``: the request;
* a path parameter: its value as a string;
* ``Annotated[..., Header(...)]``: the header's value, or the parameter's default;
* ``Annotated[..., Depends(fn)]``: ``await fn(request)`` (so a dependency declared first, such
  as authentication, runs before the body is read);
* a pydantic model: the JSON body, read and validated with FastAPI's own errors
  (``json_body``).

The endpoint returns a ``Response`` itself. Used for the two hottest routes only (``GET`` and
``POST /v1/exports``), where FastAPI's per-request work was most of the cost
(docs/PERFORMANCE.md). ``get_route_handler`` is FastAPI's documented hook for custom route
classes.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Step = Callable[[Request], Awaitable[Any]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])


class DirectRoute(APIRoute):
    """A route whose endpoint is called with its parameters filled by ``_steps`` (see the
    module's docstring), without FastAPI's per-request machinery."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        steps = _steps(endpoint, set(self.param_convertors))

        async def handle(request: Request) -> Response:
            arguments = {name: await step(request) for name, step in steps}
            response: Response = await endpoint(**arguments)
            return response

        return handle


def direct_route(
    router: APIRouter, path: str, *, method: str, **options: Any
) -> Callable[[Endpoint], Endpoint]:
    """Declare the decorated endpoint as ``method path`` on ``router``, served as a
    ``DirectRoute``; ``options`` are ``add_api_route``'s (``response_model``, ``responses``...)."""

    def declare(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path, endpoint, methods=[method], route_class_override=DirectRoute, **options
        )
        return endpoint

    return declare


def _steps(endpoint: Callable[..., Any], path_names: set[str]) -> list[tuple[str, Step]]:
    hints = typing.get_type_hints(endpoint, include_extras=True)
    steps: list[tuple[str, Step]] = []
    for name, parameter in inspect.signature(endpoint).parameters.items():
        hint = hints.get(name)
        annotation, *extras = typing.get_args(hint) if _is_annotated(hint) else (hint,)
        declared = next((e for e in extras if isinstance(e, params.Header | params.Depends)), None)
        steps.append((name, _step(name, annotation, declared, parameter.default, path_names)))
    return steps


def _step(name: str, annotation: Any, declared: Any, default: Any, path_names: set[str]) -> Step:
    if annotation is Request:

        async def the_request(request: Request) -> Request:
            return request

        return the_request
    if name in path_names:

        async def path_parameter(request: Request) -> str:
            value: str = request.path_params[name]
            return value

        return path_parameter
    if isinstance(declared, params.Header):
        header = (declared.alias or name.replace("_", "-")).lower()
        fallback = None if default is inspect.Parameter.empty else default

        async def header_value(request: Request) -> str | None:
            return request.headers.get(header, fallback)

        return header_value
    if isinstance(declared, params.Depends) and declared.dependency is not None:
        dependency = declared.dependency

        async def dependency_value(request: Request) -> Any:
            return await dependency(request)

        return dependency_value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model = annotation

        async def body(request: Request) -> BaseModel:
            return await json_body(request, model)

        return body
    raise TypeError(f"DirectRoute cannot fill parameter {name!r} ({annotation!r})")


def invalid_text_at(data: object) -> tuple[str | int, ...] | None:
    """Where the first string (a key or a value) of decoded JSON that is not valid Unicode
    sits (``\\ud800`` decodes to a lone surrogate, which no UTF-8 encoder will write back), or
    None. Iterative: the depth of ``data`` cannot exhaust the stack."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    return path
        elif isinstance(item, dict):
            for key, value in item.items():
                stack.append((key, path))
                stack.append((value, (*path, key)))
        elif isinstance(item, list):
            stack.extend((value, (*path, index)) for index, value in enumerate(item))
    return None


def _is_annotated(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Annotated


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
    except RecursionError:
        error = {
            "type": "json_invalid",
            "loc": ("body",),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "nested too deeply"},
        }
        raise RequestValidationError([error]) from None
    except ValueError as exc:  # bytes that are not UTF-8/16/32 text
        raise HTTPException(400, "There was an error parsing the body") from exc
    invalid = invalid_text_at(data)
    if invalid is not None:
        unicode_error: dict[str, Any] = {
            "type": "string_unicode",
            "loc": ("body", *invalid),
            "msg": "is not valid Unicode text (it holds a lone surrogate)",
        }
        raise RequestValidationError([unicode_error])
    try:
        return model.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=data) from None
