"""Retries and failures against a misbehaving upstream: transient faults are retried
(Retry-After honoured, bounded in count and time) without a second upstream task; permanent ones
fail the export at once with a clear code and a message that never holds the token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.upstream.client import UpstreamClient, parse_retry_after
from app.upstream.errors import (
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamBadResponse,
    UpstreamNetworkError,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamThrottled,
    UpstreamUnauthorized,
)
from app.upstream.pacing import RequestPacer
from tests.support import SANDBOX_TOKEN, Stack, running_stack, wait_for

EXPORT = {"filter": "event_type==agreed", "fields": ["event_type"], "site_id": 5193}
# The shared stack retries little and gives tasks little time, so failures come quickly.
SHARED_STACK_ENV = {
    "GATEWAY_UPSTREAM_MAX_RETRIES": "2",
    "GATEWAY_UPSTREAM_TASK_MAX_AGE_SECONDS": "1.5",
}


def configure(sandbox: httpx.Client, **patch: Any) -> None:
    sandbox.post("/_sandbox/config", json=patch).raise_for_status()


def stats(sandbox: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = sandbox.get("/_sandbox/stats").json()
    return result


async def submit_and_wait(stack: Stack, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with stack.client() as api:
        created = [(await api.post("/v1/exports", json=body)).json() for body in bodies]
        return list(await asyncio.gather(*(wait_for(api, c["id"], timeout=60) for c in created)))


# -- end to end ---------------------------------------------------------------------------------


async def test_every_export_completes_under_503_and_429_faults_without_a_second_upstream_task(
    stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, seed=3, fail_rate_503=0.2, fail_rate_429=0.1, retry_after_seconds=0.2)
    done = await submit_and_wait(stack, [{"filter": f"batch=={n}"} for n in range(8)])
    assert [d["status"] for d in done] == ["completed"] * 8, done
    observed = stats(sandbox)
    assert observed["faults_injected"].get("503", 0) + observed["faults_injected"].get("429", 0)
    assert observed["tasks_created"] == 8


async def test_retry_after_as_an_http_date_is_honoured_too(
    stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, seed=5, fail_rate_429=0.3, retry_after_http_date=True)
    done = await submit_and_wait(stack, [{"filter": f"batch=={n}"} for n in range(3)])
    assert [d["status"] for d in done] == ["completed"] * 3, done
    assert stats(sandbox)["faults_injected"].get("429", 0) >= 1


async def test_a_wrong_upstream_token_fails_fast_without_a_retry_storm(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    wrong = "wrong-token-3f9a7c"
    with running_stack(redis_url, upstream_url, tmp_path, GATEWAY_UPSTREAM_TOKEN=wrong) as stack:
        done = await submit_and_wait(stack, [{"filter": f"batch=={n}"} for n in range(3)])
        logs = stack.log_text()
    assert [d["status"] for d in done] == ["failed"] * 3
    assert {d["error"]["code"] for d in done} == {"upstream_unauthorized"}
    observed = stats(sandbox)
    assert observed["api_requests_total"] == 3  # one refused POST per export, no retry
    assert observed["tasks_created"] == 0
    for export in done:
        assert wrong not in str(export) and SANDBOX_TOKEN not in str(export)
    assert wrong not in logs


async def test_a_forbidden_site_fails_with_upstream_unauthorized(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    (done,) = await submit_and_wait(shared_stack, [{"filter": "batch==1", "site_id": 403}])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_unauthorized"
    assert stats(sandbox)["api_requests_total"] == 1


async def test_a_filter_upstream_refuses_fails_with_upstream_rejected(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    (done,) = await submit_and_wait(shared_stack, [{"filter": "event_type==__reject__"}])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_rejected"
    assert "400" in done["error"]["message"]
    assert stats(sandbox)["api_requests_total"] == 1


async def test_a_task_running_past_the_maximum_age_fails_with_upstream_timeout(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, never_finish=True)
    (done,) = await submit_and_wait(shared_stack, [{"filter": "batch==2"}])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_timeout"
    assert done["upstream_status"] == "running"


async def test_retries_are_bounded_in_count_then_fail_with_upstream_unavailable(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, fail_rate_503=1.0, retry_after_seconds=0.1)
    (done,) = await submit_and_wait(shared_stack, [{"filter": "batch==3"}])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_unavailable"
    assert "503" in done["error"]["message"]
    assert stats(sandbox)["api_requests_total"] == 3  # the first try and GATEWAY_..._RETRIES=2


async def test_retries_are_bounded_in_time_then_fail_with_upstream_unavailable(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    configure(sandbox, fail_rate_500=1.0)
    with running_stack(
        redis_url,
        upstream_url,
        tmp_path,
        GATEWAY_UPSTREAM_MAX_RETRIES="1000",
        GATEWAY_UPSTREAM_RETRY_MAX_SECONDS="1.5",
    ) as stack:
        (done,) = await submit_and_wait(stack, [EXPORT])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_unavailable"
    assert "500" in done["error"]["message"]
    assert 2 <= stats(sandbox)["api_requests_total"] < 1000


async def test_a_transient_failure_while_polling_keeps_the_same_upstream_task(
    stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, task_seconds=1.0)
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json=EXPORT)).json()
        await wait_for(api, created["id"], statuses=("running",))
        configure(sandbox, fail_rate_503=0.6, retry_after_seconds=0.1, seed=11)
        await asyncio.sleep(1.0)
        configure(sandbox, fail_rate_503=0.0)
        done = await wait_for(api, created["id"])
    assert done["status"] == "completed"
    assert stats(sandbox)["tasks_created"] == 1


# -- Retry-After --------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("99999", 3600.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Fri, 27 Nov 2026 10:01:00 GMT", 60.0),
        ("Fri, 27 Nov 2026 09:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


# -- the client's error mapping (network edge replaced by httpx.MockTransport) --------------------

SECRET = "upstream-secret-token-xyz"


def client_for(redis: Redis, handler: Any) -> UpstreamClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return UpstreamClient(
        http, base_url="https://upstream.example/v1.1", token=SECRET, pacer=RequestPacer(redis, 100)
    )


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"Retry-After": "4"}, UpstreamThrottled, 4.0),
        (429, {}, UpstreamThrottled, None),
        (503, {"Retry-After": "2"}, UpstreamThrottled, 2.0),
        (503, {}, UpstreamServerError, None),
        (500, {}, UpstreamServerError, None),
        (502, {}, UpstreamServerError, None),
        (408, {}, TransientUpstreamError, None),
        (401, {}, UpstreamUnauthorized, None),
        (403, {}, UpstreamUnauthorized, None),
        (400, {}, UpstreamRejected, None),
        (404, {}, UpstreamRejected, None),
        (422, {}, UpstreamRejected, None),
    ],
)
async def test_upstream_answers_map_onto_the_error_tree(
    redis_client: Redis,
    status: int,
    headers: dict[str, str],
    kind: type[Exception],
    retry_after: float | None,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        # an upstream that echoes the token back must not get it into our message
        return httpx.Response(status, headers=headers, json={"message": f"bad token {SECRET}"})

    client = client_for(redis_client, handler)
    with pytest.raises(kind) as caught:
        await client.get_export("5f88abf5f4689d7295cf1134")
    error = caught.value
    assert type(error) is kind
    assert SECRET not in str(error) and SECRET not in error.message  # type: ignore[attr-defined]
    assert str(status) in str(error)
    assert "/tasks/export/:id" in str(error)
    if isinstance(error, TransientUpstreamError):
        assert error.retry_after == retry_after
    else:
        assert isinstance(error, PermanentUpstreamError)
        expected = "upstream_unauthorized" if status in (401, 403) else "upstream_rejected"
        assert error.code == expected


async def test_network_failures_and_unreadable_bodies_are_transient(redis_client: Redis) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>maintenance</html>")

    for handler, kind in (
        (refuse, UpstreamNetworkError),
        (time_out, UpstreamNetworkError),
        (garbage, UpstreamBadResponse),
    ):
        with pytest.raises(kind) as caught:
            await client_for(redis_client, handler).create_export(
                filter="event_type==agreed", fields=None, site_id=None
            )
        assert isinstance(caught.value, TransientUpstreamError)
        assert SECRET not in str(caught.value)
