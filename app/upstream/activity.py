"""One page of upstream ``GET /activity`` for small queries (``GET /v1/activity``).

The filter is checked by the same grammar as an export's (a malformed one answers 422 naming
``filter`` and the position) and sent in its normal form; ``no_count=true&lean=true`` always go
along, as the vendor asks. The page is handed back exactly as upstream sent it. Upstream's
failures become problems, never a 500:

    429 / 5xx / network / timeout   503 with Retry-After (upstream's own, when it sent one)
    401 / 403 / other 4xx           502 (the detail says what upstream answered, never the token)

The request is paced with every other upstream request; a caller waits at most
``wait_seconds`` for its turn and its answer, then gets the 503.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from app.platform.errors import ServiceUnavailable, UpstreamFailure, invalid
from app.upstream.client import UpstreamClient
from app.upstream.errors import PermanentUpstreamError, TransientUpstreamError
from app.upstream.filters import FilterSyntaxError, normalise_filter

MAX_PER_PAGE = 100
DEFAULT_RETRY_AFTER_SECONDS = 5


class ActivityService:
    def __init__(self, upstream: UpstreamClient, *, wait_seconds: float) -> None:
        self.upstream = upstream
        self.wait_seconds = wait_seconds

    async def page(self, *, filter: str | None, page: int, per_page: int) -> Any:
        try:
            query_filter = normalise_filter(filter)
        except FilterSyntaxError as exc:
            raise invalid("filter", str(exc)) from None
        if not 1 <= per_page <= MAX_PER_PAGE:  # the route checks too; services stand alone
            raise invalid("per_page", f"must be between 1 and {MAX_PER_PAGE}")
        params = {"page": str(page), "per_page": str(per_page)}
        if query_filter:
            params["filter"] = query_filter
        try:
            async with asyncio.timeout(self.wait_seconds):
                return await self.upstream.activity(params)
        except TimeoutError:
            raise _unavailable("upstream did not answer in time", None) from None
        except TransientUpstreamError as exc:
            raise _unavailable(exc.message, exc.retry_after) from None
        except PermanentUpstreamError as exc:
            raise UpstreamFailure(exc.message, extra={"upstream_status": exc.status_code}) from None


def _unavailable(message: str, retry_after: float | None) -> ServiceUnavailable:
    seconds = DEFAULT_RETRY_AFTER_SECONDS if retry_after is None else math.ceil(retry_after)
    return ServiceUnavailable(
        f"{message}; try again shortly", headers={"Retry-After": str(max(1, seconds))}
    )
