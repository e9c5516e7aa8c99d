"""The export fields of each site, from upstream ``GET /sites/:id/exportFields``, cached in Redis.

    fresh    younger than GATEWAY_FIELDS_CACHE_SECONDS       served from Redis
    stale    up to GATEWAY_FIELDS_STALE_SECONDS older        served from Redis at once, and one
                                                             process refreshes it in the background
    missing  (or older still: the key has expired)           fetched now

Only one process asks upstream for a site at a time: a short Redis lock
(``gw:fields:{site_id}:lock``) guards every fetch. A refresh that finds the lock taken does
nothing (somebody is already refreshing); a caller that needs a missing entry waits for the
lock holder's answer, then takes the lock itself if there is still none. So a thousand callers
of a cold or stale site cost upstream one request, not a thousand.

What upstream answers decides what the caller is told (``app.platform.errors``):

    401 (the gateway's token is refused)   GET /v1/fields: 502; a submission: accepted unchecked
    403 (the token lacks the site)         422 naming site_id: not accessible with the token
    404 / other 4xx                         422 naming site_id
    429 / 5xx / network / timeout           GET /v1/fields: 503; a submission: accepted unchecked

``GET /v1/fields`` waits up to GATEWAY_UPSTREAM_TIMEOUT_SECONDS for a missing entry, a
submission at most ``SUBMISSION_WAIT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from app.platform import keys
from app.platform.errors import (
    GatewayError,
    InvalidRequest,
    MemberProblem,
    ServiceUnavailable,
    UpstreamFailure,
    invalid,
)
from app.upstream.client import UpstreamClient
from app.upstream.errors import (
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
    UpstreamUnauthorized,
)

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
WAIT_STEP_SECONDS = 0.05
# A submission does not wait longer than this for a cold site's fields: it goes ahead unchecked.
SUBMISSION_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SiteFields:
    site_id: int
    names: tuple[str, ...]
    fetched_at: float  # unix seconds

    def knows(self, name: str) -> bool:
        """A listed name, or a dotted path below one (``custom_data`` admits ``custom_data.vip``:
        an object column's members are free-form)."""
        return name in self.names or any(name.startswith(listed + ".") for listed in self.names)


class _Unanswered(Exception):
    """No answer from upstream in time (the lock holder or the pacer took too long)."""


class FieldCatalog:
    def __init__(
        self,
        redis: Redis,
        upstream: UpstreamClient,
        *,
        fresh_seconds: float,
        stale_seconds: float,
        wait_seconds: float,
    ) -> None:
        self.redis = redis
        self.upstream = upstream
        self.fresh_seconds = fresh_seconds
        self.stale_seconds = stale_seconds
        self.wait_seconds = wait_seconds
        self._release = redis.register_script(_RELEASE)
        self._refreshing: set[asyncio.Task[None]] = set()

    # -- what callers use ------------------------------------------------------------------

    async def site_fields(self, site_id: int) -> SiteFields:
        """The site's fields for ``GET /v1/fields``; problems as the module docstring says."""
        try:
            return await self._get(site_id)
        except UpstreamUnauthorized as exc:
            if exc.status_code == 403:
                raise _inaccessible(site_id) from None
            raise UpstreamFailure(
                "upstream refused the gateway's credentials; the site's fields are unknown"
            ) from None
        except PermanentUpstreamError as exc:
            raise _refused(site_id, exc) from None
        except (TransientUpstreamError, _Unanswered):
            raise ServiceUnavailable(
                f"upstream did not answer for the fields of site {site_id}; try again shortly",
                headers={"Retry-After": "5"},
            ) from None

    async def verify(self, site_id: int, fields: Sequence[str]) -> bool:
        """Check a request's ``fields`` against the site's: True when checked, False when the
        fields could not be learned (upstream unreachable or refusing the gateway's token).
        Unknown fields answer 422 naming each ``fields[i]``."""
        try:
            known = await self._get(site_id, min(self.wait_seconds, SUBMISSION_WAIT_SECONDS))
        except UpstreamUnauthorized as exc:
            if exc.status_code == 403:
                raise _inaccessible(site_id) from None
            return False  # the export itself will fail upstream_unauthorized, as it should
        except PermanentUpstreamError as exc:
            raise _refused(site_id, exc) from None
        except (TransientUpstreamError, _Unanswered):
            return False
        hint = f"(GET /v1/fields?site_id={site_id} lists them)"
        problems = [
            MemberProblem(
                f"fields[{index}]",
                f"{name.strip()!r} is not an export field of site {site_id} {hint}",
            )
            for index, name in enumerate(fields)
            if not known.knows(name.strip())
        ]
        if problems:
            summary = "; ".join(f"{p.member}: {p.detail}" for p in problems)
            raise InvalidRequest(summary, errors=problems)
        return True

    async def close(self) -> None:
        for task in list(self._refreshing):
            task.cancel()
        await asyncio.gather(*self._refreshing, return_exceptions=True)

    # -- cache -----------------------------------------------------------------------------

    async def _get(self, site_id: int, wait_seconds: float | None = None) -> SiteFields:
        cached = await self._read(site_id)
        if cached is not None:
            if time.time() - cached.fetched_at >= self.fresh_seconds:
                self._refresh_in_background(site_id)
            return cached
        try:
            async with asyncio.timeout(wait_seconds or self.wait_seconds):
                return await self._fetch_once(site_id)
        except TimeoutError:
            raise _Unanswered() from None

    async def _read(self, site_id: int) -> SiteFields | None:
        raw = await self.redis.get(keys.site_fields(site_id))
        if not raw:
            return None
        data = json.loads(raw)
        return SiteFields(site_id, tuple(data["fields"]), float(data["fetched_at"]))

    async def _fetch_once(self, site_id: int) -> SiteFields:
        """The site's fields from whichever process holds the lock, or from upstream by us."""
        while True:
            token = await self._lock(site_id)
            if token is not None:
                try:
                    return await self._fetch(site_id)
                finally:
                    await self._unlock(site_id, token)
            await asyncio.sleep(WAIT_STEP_SECONDS)
            cached = await self._read(site_id)
            if cached is not None:
                return cached

    async def _fetch(self, site_id: int) -> SiteFields:
        names = await self.upstream.export_fields(site_id)
        fields = SiteFields(site_id, tuple(dict.fromkeys(names)), time.time())
        body = json.dumps({"fields": list(fields.names), "fetched_at": fields.fetched_at})
        ttl = max(1, round(self.fresh_seconds + self.stale_seconds))
        await self.redis.set(keys.site_fields(site_id), body, ex=ttl)
        log.info("site fields fetched", extra={"site_id": site_id, "count": len(fields.names)})
        return fields

    def _refresh_in_background(self, site_id: int) -> None:
        task = asyncio.create_task(self._refresh(site_id))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _refresh(self, site_id: int) -> None:
        token = await self._lock(site_id)
        if token is None:
            return  # another process is refreshing it
        try:
            cached = await self._read(site_id)
            if cached is None or time.time() - cached.fetched_at >= self.fresh_seconds:
                async with asyncio.timeout(self.wait_seconds):
                    await self._fetch(site_id)
        except (UpstreamError, TimeoutError) as exc:
            log.warning(
                "site fields refresh failed; serving the stale list",
                extra={"site_id": site_id, "error": getattr(exc, "message", type(exc).__name__)},
            )
        finally:
            await self._unlock(site_id, token)

    async def _lock(self, site_id: int) -> str | None:
        token = secrets.token_hex(8)
        ttl_ms = max(1000, int(self.wait_seconds * 1000))
        taken = await self.redis.set(keys.site_fields_lock(site_id), token, nx=True, px=ttl_ms)
        return token if taken else None

    async def _unlock(self, site_id: int, token: str) -> None:
        await self._release(keys=[keys.site_fields_lock(site_id)], args=[token])


def _inaccessible(site_id: int) -> GatewayError:
    return invalid("site_id", f"site {site_id} is not accessible with the gateway's token")


def _refused(site_id: int, exc: UpstreamError) -> GatewayError:
    if exc.status_code == 404:
        return invalid("site_id", f"upstream knows no site {site_id}")
    return invalid("site_id", f"upstream refused site {site_id} ({exc.status_code})")
