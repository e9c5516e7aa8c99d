"""The Clickwrap API client: one method per upstream route, one request per call.

It paces every request through the shared ``RequestPacer``, turns every failure into the
``app.upstream.errors`` tree and never retries by itself: the caller decides, because a worker
must wait for a retry by rescheduling a job, not by sleeping in one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from app.platform import metrics
from app.upstream.errors import (
    TransientUpstreamError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamNetworkError,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamThrottled,
    UpstreamUnauthorized,
)
from app.upstream.pacing import RequestPacer
from app.upstream.parsing import ParsedTask, parse_field_names, parse_task

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 3600.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class UpstreamClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        token: str | None,
        pacer: RequestPacer,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._token = token
        self._pacer = pacer

    async def create_export(
        self, *, filter: str | None, fields: list[str] | None, site_id: int | None
    ) -> ParsedTask:
        params: dict[str, str] = {"no_count": "true", "lean": "true"}
        if filter:
            params["filter"] = filter
        if fields:
            params["fields"] = ",".join(fields)
        if site_id is not None:
            params["site"] = str(site_id)
        return parse_task(await self._json("POST", "/tasks/export/activity", params))

    async def get_export(self, upstream_id: str) -> ParsedTask:
        return parse_task(await self._json("GET", f"/tasks/export/{upstream_id}", {}))

    async def export_fields(self, site_id: int) -> list[str]:
        return parse_field_names(await self._json("GET", f"/sites/{site_id}/exportFields", {}))

    async def activity(self, params: Mapping[str, str]) -> Any:
        return await self._json("GET", "/activity", {**params, "no_count": "true", "lean": "true"})

    async def _json(self, method: str, path: str, params: Mapping[str, str]) -> Any:
        response = await self._send(method, path, params)
        try:
            return response.json()
        except ValueError:
            raise UpstreamBadResponse(
                f"upstream answered {method} {_route(path)} with a body that is not JSON",
                status_code=response.status_code,
            ) from None

    async def _send(self, method: str, path: str, params: Mapping[str, str]) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        route = _route(path)
        async with self._pacer.request():
            started = time.perf_counter()
            outcome = "network"
            try:
                response = await self._http.request(
                    method, self._base + path, params=params, headers=headers
                )
                outcome = str(response.status_code)
            except httpx.TimeoutException:
                outcome = "timeout"
                raise UpstreamNetworkError(f"upstream timed out on {method} {route}") from None
            except httpx.HTTPError as exc:
                raise UpstreamNetworkError(
                    f"upstream unreachable on {method} {route}: {type(exc).__name__}"
                ) from None
            finally:
                seconds = time.perf_counter() - started
                metrics.UPSTREAM_REQUESTS.labels(route, method, outcome).inc()
                metrics.UPSTREAM_LATENCY.labels(route, method).observe(seconds)
                log.debug(
                    "upstream request",
                    extra={"route": route, "method": method, "status": outcome, "seconds": seconds},
                )
        if response.is_success:
            return response
        raise self._error(method, route, response)

    def _error(self, method: str, route: str, response: httpx.Response) -> UpstreamError:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        detail = self._redact(response.text[:300]).strip()
        message = f"upstream answered {status} to {method} {route}"
        if detail:
            message += f": {detail}"
        error: UpstreamError
        if status == 429 or (status == 503 and retry_after is not None):
            error = UpstreamThrottled(message, status_code=status, retry_after=retry_after)
        elif status >= 500:
            error = UpstreamServerError(message, status_code=status, retry_after=retry_after)
        elif status in (401, 403):
            error = UpstreamUnauthorized(message, status_code=status)
        elif status == 408:
            error = TransientUpstreamError(message, status_code=status, retry_after=retry_after)
        else:
            error = UpstreamRejected(message, status_code=status)
        return error

    def _redact(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "[redacted]")
        return " ".join(text.split())


def _route(path: str) -> str:
    """The route template of a path, for messages and metrics (ids replaced by ``:id``)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["tasks", "export"] and len(parts) == 3 and parts[2] != "activity":
        return "/tasks/export/:id"
    if parts[:1] == ["sites"] and len(parts) == 3:
        return "/sites/:id/exportFields"
    return "/" + "/".join(parts)
