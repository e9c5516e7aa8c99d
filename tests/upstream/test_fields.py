"""A site's export fields (``GET /v1/fields``) and field validation of exports: cached
from upstream ``/sites/:id/exportFields`` in Redis, served stale while one refresh runs, and an
unknown field refused with 422 unless upstream cannot tell."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.platform import keys
from app.sandbox.config import DEFAULT_SITE_FIELDS
from tests.support import Stack, running_stack, wait_for

FIELDS_ROUTE = "GET /v1.1/sites/{site_id}/exportFields"
CLIENT_EXPORTS = keys.client_exports("alice")


def configure(sandbox: httpx.Client, **patch: Any) -> None:
    sandbox.post("/_sandbox/config", json=patch).raise_for_status()


def field_requests(sandbox: httpx.Client) -> int:
    counts = sandbox.get("/_sandbox/stats").json()["requests"].get(FIELDS_ROUTE, {})
    return sum(counts.values())


@pytest.fixture
def short_cache_stack(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> Iterator[Stack]:
    with running_stack(redis_url, upstream_url, tmp_path, GATEWAY_FIELDS_CACHE_SECONDS="1") as s:
        yield s


async def test_fields_of_a_site_come_from_upstream_once_then_from_the_cache(
    shared_stack: Stack, sandbox: httpx.Client, shared_redis: Redis
) -> None:
    async with shared_stack.client() as api:
        first = await api.get("/v1/fields", params={"site_id": 5001})
        second = await api.get("/v1/fields", params={"site_id": 5001})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"data": list(DEFAULT_SITE_FIELDS)}
    assert field_requests(sandbox) == 1
    assert await shared_redis.ttl(keys.site_fields(5001)) > 0


async def test_each_upstream_fields_shape_reads_the_same(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    site_fields = ["id", "signer_id", "created_time", "custom_data.vip"]
    async with shared_stack.client() as api:
        for site, shape in enumerate(
            ["data_strings", "bare_strings", "data_objects", "bare_objects"], start=5010
        ):
            configure(sandbox, fields_shape=shape, sites={str(site): site_fields})
            response = await api.get("/v1/fields", params={"site_id": site})
            assert response.json() == {"data": site_fields}, shape


@pytest.mark.parametrize("query", [{}, {"site_id": "abc"}, {"site_id": "0"}, {"site_id": "-4"}])
async def test_fields_without_a_valid_site_id_answer_422_naming_it(
    shared_stack: Stack, sandbox: httpx.Client, query: dict[str, str]
) -> None:
    async with shared_stack.client() as api:
        response = await api.get("/v1/fields", params=query)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["member"] for e in response.json()["errors"]] == ["site_id"]
    assert field_requests(sandbox) == 0


async def test_fields_need_an_api_key(shared_stack: Stack) -> None:
    async with shared_stack.client("nobody") as anonymous:
        response = await anonymous.get("/v1/fields", params={"site_id": 5020})
    assert response.status_code == 401


async def test_fields_of_a_site_the_token_cannot_reach_answer_422_naming_site_id(
    shared_stack: Stack,
) -> None:
    async with shared_stack.client() as api:
        response = await api.get("/v1/fields", params={"site_id": 403})
    assert response.status_code == 422
    (problem,) = response.json()["errors"]
    assert problem["member"] == "site_id"
    assert "not accessible with the gateway's token" in problem["detail"]


async def test_fields_answer_503_with_retry_after_when_upstream_is_down_and_nothing_is_cached(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, fail_rate_503=1.0)
    async with shared_stack.client() as api:
        response = await api.get("/v1/fields", params={"site_id": 5030})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1


async def test_concurrent_requests_for_a_cold_site_ask_upstream_once(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, slow_rate=1.0, slow_seconds=0.5)
    async with shared_stack.client() as api:
        responses = await asyncio.gather(
            *(api.get("/v1/fields", params={"site_id": 5040}) for _ in range(20))
        )
    assert [r.status_code for r in responses] == [200] * 20
    assert all(r.json() == {"data": list(DEFAULT_SITE_FIELDS)} for r in responses)
    assert field_requests(sandbox) == 1


async def test_stale_fields_are_served_at_once_and_refreshed_once_in_the_background(
    short_cache_stack: Stack, sandbox: httpx.Client
) -> None:
    old, new = ["id", "signer_id", "created_time"], ["id", "signer_id", "created_time", "plan"]
    configure(sandbox, sites={"77": old})
    async with short_cache_stack.client() as api:
        first = await api.get("/v1/fields", params={"site_id": 77})
        configure(sandbox, sites={"77": new}, slow_rate=1.0, slow_seconds=1.0)
        await asyncio.sleep(1.2)  # the cached list is now stale
        stale = await asyncio.gather(
            *(api.get("/v1/fields", params={"site_id": 77}) for _ in range(20))
        )
        deadline = time.monotonic() + 15
        while (await api.get("/v1/fields", params={"site_id": 77})).json()["data"] != new:
            assert time.monotonic() < deadline, "the stale list was never refreshed"
            await asyncio.sleep(0.1)
    assert first.json() == {"data": old}
    # a slow upstream (1 s) does not hold anybody up: all 20 got the stale list at once
    assert [r.json()["data"] for r in stale] == [old] * 20
    assert field_requests(sandbox) == 2


# -- fields of an export ------------------------------------------------------------------------


async def test_an_unknown_field_answers_422_naming_it_and_nothing_is_queued(
    shared_stack: Stack, sandbox: httpx.Client, shared_redis: Redis
) -> None:
    body = {"site_id": 5050, "fields": ["event_type", "no_such_field", "id", "custom_data.x.y"]}
    before = await shared_redis.zcard(CLIENT_EXPORTS)
    async with shared_stack.client() as api:
        response = await api.post("/v1/exports", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert [e["member"] for e in problem["errors"]] == ["fields[1]", "fields[3]"]
    assert "no_such_field" in problem["errors"][0]["detail"]
    assert problem["errors"][0]["pointer"] == "/fields/1"
    assert await shared_redis.zcard(CLIENT_EXPORTS) == before
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 0


async def test_known_fields_are_verified_and_the_export_says_so(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, sites={"5060": ["id", "signer_id", "created_time", "custom_data"]})
    async with shared_stack.client() as api:
        checked = await api.post(
            "/v1/exports", json={"site_id": 5060, "fields": ["custom_data.vip", "id"]}
        )
        no_site = await api.post("/v1/exports", json={"fields": ["anything.at_all"]})
        no_fields = await api.post("/v1/exports", json={"site_id": 5060})
        again = await api.get(f"/v1/exports/{checked.json()['id']}")
    # a listed object column (custom_data) admits its dotted members (custom_data.vip)
    assert checked.status_code == 202 and checked.json()["fields_verified"] is True
    assert again.json()["fields_verified"] is True
    assert no_site.status_code == 202 and no_site.json()["fields_verified"] is None
    assert no_fields.status_code == 202 and no_fields.json()["fields_verified"] is None


async def test_an_export_is_accepted_unchecked_when_upstream_cannot_tell_its_fields(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, fail_rate_503=1.0, retry_after_seconds=0.2)
    async with shared_stack.client() as api:
        response = await api.post(
            "/v1/exports", json={"site_id": 5070, "fields": ["maybe_a_field"]}
        )
        configure(sandbox, fail_rate_503=0.0)
        assert response.status_code == 202
        created = response.json()
        assert created["fields_verified"] is False
        done = await wait_for(api, created["id"])
    # upstream itself then judged the fields: the sandbox refuses unknown ones with a 400
    assert done["fields_verified"] is False
    assert done["status"] == "failed" and done["error"]["code"] == "upstream_rejected"


async def test_an_export_for_a_site_the_token_cannot_reach_answers_422_naming_site_id(
    shared_stack: Stack, shared_redis: Redis
) -> None:
    before = await shared_redis.zcard(CLIENT_EXPORTS)
    async with shared_stack.client() as api:
        response = await api.post("/v1/exports", json={"site_id": 403, "fields": ["event_type"]})
    assert response.status_code == 422
    assert [e["member"] for e in response.json()["errors"]] == ["site_id"]
    assert await shared_redis.zcard(CLIENT_EXPORTS) == before


async def test_with_a_token_upstream_refuses_fields_answer_502_and_exports_go_unchecked(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    wrong = "wrong-token-77c1"
    with running_stack(redis_url, upstream_url, tmp_path, GATEWAY_UPSTREAM_TOKEN=wrong) as stack:
        async with stack.client() as api:
            fields = await api.get("/v1/fields", params={"site_id": 5193})
            export = await api.post("/v1/exports", json={"site_id": 5193, "fields": ["plan"]})
    assert fields.status_code == 502
    assert fields.headers["content-type"] == "application/problem+json"
    assert wrong not in fields.text
    # the export itself then fails upstream_unauthorized, which says exactly what is wrong
    assert export.status_code == 202 and export.json()["fields_verified"] is False


async def test_a_submission_waits_for_a_slow_upstreams_fields_a_bounded_time_then_goes_unchecked(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, slow_rate=1.0, slow_seconds=8.0)
    async with shared_stack.client() as api:
        response = await api.post("/v1/exports", json={"site_id": 5080, "fields": ["event_type"]})
    configure(sandbox, slow_rate=0.0)
    assert response.status_code == 202
    assert response.json()["fields_verified"] is False
