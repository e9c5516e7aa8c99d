"""One webhook POST over the SSRF-guarded client, and what came of it.

The client is ``app.webhooks.ssrf.guarded_client``: it connects only to addresses the policy
allows (checked on the address actually connected to), never follows a redirect and ignores
proxy variables. The whole exchange (connect, send, the first 2 KiB of the answer) is bounded
by one deadline, 15 s by default, so a receiver that trickles its answer cannot hold a worker.

Error texts are fixed phrases (plus the SSRF guard's own reasons, which name only the host and
the kind of address): the attempt log is shown to callers, so it must not leak what an
internal address or a resolver said.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from app.upstream.client import parse_retry_after
from app.webhooks.schemas import MAX_RESPONSE_BODY_BYTES
from app.webhooks.ssrf import CallbackAddressRefused

DELIVERY_TIMEOUT_SECONDS = 15.0
USER_AGENT = "clickwrap-export-gateway-webhooks/1"
NO_HTTP_ANSWER = "no HTTP answer (connection refused or dropped, or the answer was not HTTP)"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status_code: int | None
    error: str | None
    duration_ms: int
    response_body: str | None = None
    retry_after: float | None = None
    refused: bool = False  # the SSRF guard refused the address: retrying cannot help

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _describe(exc: httpx.HTTPError, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if text.startswith("host "):  # the guard's own "host ... does not resolve"
            return text
    # One phrase for a refused connection, a dropped one and an answer that is not HTTP: told
    # apart, they would tell a caller which ports of an allowed network run some service.
    return NO_HTTP_ANSWER


async def post_webhook(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = DELIVERY_TIMEOUT_SECONDS,  # noqa: ASYNC109 (one deadline for it all)
) -> DeliveryResult:
    """POST ``body`` to ``url`` once. Never raises for network or HTTP trouble."""
    started = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    send_headers = {
        **headers,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",  # the 2 KiB kept are the bytes the receiver sent
    }
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", url, content=body, headers=send_headers, timeout=timeout
            ) as response:
                captured = bytearray()
                async for chunk in response.aiter_raw():
                    captured += chunk
                    if len(captured) >= MAX_RESPONSE_BODY_BYTES:
                        break
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
    except CallbackAddressRefused as exc:
        return DeliveryResult(None, f"callback refused: {exc.reason}", elapsed(), refused=True)
    except TimeoutError:
        return DeliveryResult(None, f"timed out after {timeout:g} s", elapsed())
    except httpx.HTTPError as exc:
        return DeliveryResult(None, _describe(exc, timeout), elapsed())
    # The answer's body is kept only from a receiver that answered as one (2xx-4xx); a 5xx
    # may come from anything that speaks HTTP at all, and is not the caller's to read.
    text = None
    if 200 <= status < 500:
        text = bytes(captured[:MAX_RESPONSE_BODY_BYTES]).decode("utf-8", errors="replace")
    error = None
    if 300 <= status < 400:
        error = f"answered a redirect ({status}); redirects are never followed"
    return DeliveryResult(status, error, elapsed(), text, retry_after)
