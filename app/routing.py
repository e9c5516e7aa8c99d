"""``DirectRoute``: a FastAPI route that hands the request straight to its endpoint.

FastAPI still declares and documents it like any other (path parameters from the endpoint's
signature, ``response_model``, ``responses``, ``openapi_extra``), but does no per-request work
for it: no dependency solving, no parameter or response validation. The endpoint receives its
path parameters (as strings) and the ``Request``, and returns a ``Response`` itself; it does
its own checks. For the hottest route only (``GET /v1/exports/{id}``), where that work was most
of the cost (docs/PERFORMANCE.md). ``get_route_handler`` is FastAPI's documented hook for
custom route classes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[..., Awaitable[Response]] = self.endpoint

        async def handle(request: Request) -> Response:
            return await endpoint(request=request, **request.path_params)

        return handle
