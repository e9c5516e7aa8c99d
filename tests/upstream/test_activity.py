"""``GET /v1/activity``: one page of upstream ``/activity``, asked with
``no_count=true&lean=true``, its filter checked by the gateway's grammar, handed back as
upstream sent it; upstream's failures are 502/503 problems, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import SANDBOX_TOKEN, Stack

ACTIVITY_ROUTE = "GET /v1.1/activity"


def configure(sandbox: httpx.Client, **patch: Any) -> None:
    sandbox.post("/_sandbox/config", json=patch).raise_for_status()


def upstream_activity(sandbox: httpx.Client, **params: str) -> Any:
    response = sandbox.get(
        "/v1.1/activity", params=params, headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    )
    response.raise_for_status()
    return response.json()


def activity_requests(sandbox: httpx.Client) -> int:
    counts = sandbox.get("/_sandbox/stats").json()["requests"].get(ACTIVITY_ROUTE, {})
    return sum(counts.values())


async def test_one_page_of_activity_is_the_upstream_envelope_asked_lean_and_without_count(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, no_count_total="minus_one")
    async with shared_stack.client() as api:
        response = await api.get(
            "/v1/activity",
            params={"filter": "event_type == agreed", "page": "2", "per_page": "10"},
        )
    assert response.status_code == 200
    body = response.json()
    expected = upstream_activity(
        sandbox,
        filter="event_type==agreed",
        page="2",
        per_page="10",
        no_count="true",
        lean="true",
    )
    assert body == expected
    assert body["page"] == 2 and body["per_page"] == 10 and len(body["data"]) == 10
    assert body["total_count"] == -1  # what this sandbox answers only with no_count=true
    assert all(record["event_type"] == "agreed" for record in body["data"])


async def test_activity_defaults_to_the_first_page_of_25(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    async with shared_stack.client() as api:
        body = (await api.get("/v1/activity")).json()
    assert (body["page"], body["per_page"], len(body["data"]), body["has_more"]) == (
        1, 25, 25, True
    )  # fmt: skip


async def test_per_page_is_capped_at_100(shared_stack: Stack, sandbox: httpx.Client) -> None:
    async with shared_stack.client() as api:
        hundred = await api.get("/v1/activity", params={"per_page": "100"})
        over = await api.get("/v1/activity", params={"per_page": "101"})
    assert hundred.status_code == 200 and len(hundred.json()["data"]) == 100
    assert over.status_code == 422
    assert [e["member"] for e in over.json()["errors"]] == ["per_page"]
    assert activity_requests(sandbox) == 1


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"page": "x"}, {"per_page": "0"}, {"per_page": "-1"}, {"per_page": "1e3"}],
)
async def test_a_bad_page_or_per_page_answers_422_naming_it(
    shared_stack: Stack, sandbox: httpx.Client, params: dict[str, str]
) -> None:
    async with shared_stack.client() as api:
        response = await api.get("/v1/activity", params=params)
    assert response.status_code == 422
    assert [e["member"] for e in response.json()["errors"]] == list(params)
    assert activity_requests(sandbox) == 0


async def test_a_malformed_filter_answers_422_naming_filter_and_the_position(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    async with shared_stack.client() as api:
        response = await api.get("/v1/activity", params={"filter": "event_type==agreed and"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    (problem,) = response.json()["errors"]
    assert problem["member"] == "filter"
    assert "position 22" in problem["detail"]
    assert activity_requests(sandbox) == 0


async def test_activity_needs_an_api_key(shared_stack: Stack, sandbox: httpx.Client) -> None:
    async with shared_stack.client("nobody") as anonymous:
        response = await anonymous.get("/v1/activity")
    assert response.status_code == 401
    assert activity_requests(sandbox) == 0


async def test_upstream_unavailable_answers_503_with_retry_after(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    configure(sandbox, fail_rate_503=1.0, retry_after_seconds=7)
    async with shared_stack.client() as api:
        response = await api.get("/v1/activity")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "7"


async def test_upstream_refusing_the_request_answers_502_without_the_token(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    async with shared_stack.client() as api:
        response = await api.get("/v1/activity", params={"filter": "event_type==__reject__"})
    assert response.status_code == 502
    problem = response.json()
    assert problem["upstream_status"] == 400
    assert "400" in problem["detail"]
    assert SANDBOX_TOKEN not in response.text
