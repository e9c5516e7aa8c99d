"""Identical exports share one upstream task (docs/API.md, "the request"): concurrently, while
running, and, with ``max_age_seconds``, after completion. Real API, worker, Redis and sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support import Stack, wait_for


def query(batch: int) -> dict[str, Any]:
    """A query of its own for each test (they share one stack: see ``shared_stack``)."""
    return {
        "filter": f"created_time>=2020-10-10 and batch=={batch}",
        "fields": ["event_type", "connection_data.remote_address"],
        "site_id": 5193,
    }


def same_query(batch: int) -> dict[str, Any]:
    """``query(batch)`` spelled differently: the normal form is what identity uses."""
    return {
        "filter": f"  created_time >= 2020-10-10   AND batch == {batch} ",
        "fields": ["id", "event_type", "connection_data.remote_address", "event_type"],
        "site_id": 5193,
    }


async def test_twenty_concurrent_identical_submissions_share_one_upstream_task(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 1.0}).raise_for_status()
    bodies = [{**(query(1) if n % 2 else same_query(1)), "metadata": {"n": n}} for n in range(20)]
    async with shared_stack.client() as api:
        responses = await asyncio.gather(*(api.post("/v1/exports", json=b) for b in bodies))
        assert [r.status_code for r in responses] == [202] * 20
        created = [r.json() for r in responses]
        done = await asyncio.gather(*(wait_for(api, c["id"], timeout=30) for c in created))
    assert len({c["id"] for c in created}) == 20
    assert [d["status"] for d in done] == ["completed"] * 20
    assert sorted(d["coalesced"] for d in done) == [False] + [True] * 19
    assert len({tuple(d["links"]) for d in done}) == 1 and done[0]["links"]
    assert [d["metadata"] for d in done] == [{"n": n} for n in range(20)]
    assert len({d["upstream_task_id"] for d in done}) == 1
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 1


async def test_max_age_seconds_reuses_a_completed_identical_export(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    async with shared_stack.client() as api:
        first = await wait_for(api, (await api.post("/v1/exports", json=query(2))).json()["id"])
        reused = await api.post("/v1/exports", json={**same_query(2), "max_age_seconds": 3600})
    assert first["status"] == "completed"
    assert reused.status_code == 202
    body = reused.json()
    assert body["id"] != first["id"]
    assert body["status"] == "completed" and body["coalesced"] is True
    assert body["links"] == first["links"]
    assert body["completed_at"] == first["completed_at"]
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 1


async def test_max_age_zero_never_reuses_a_completed_export(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    async with shared_stack.client() as api:
        first = await wait_for(api, (await api.post("/v1/exports", json=query(3))).json()["id"])
        again = (await api.post("/v1/exports", json={**query(3), "max_age_seconds": 0})).json()
        done = await wait_for(api, again["id"])
    assert first["status"] == done["status"] == "completed"
    assert again["coalesced"] is False
    assert done["upstream_task_id"] != first["upstream_task_id"]
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 2


async def test_max_age_does_not_reuse_an_export_older_than_asked(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    async with shared_stack.client() as api:
        first = await wait_for(api, (await api.post("/v1/exports", json=query(4))).json()["id"])
        await asyncio.sleep(1.2)
        again = (await api.post("/v1/exports", json={**query(4), "max_age_seconds": 1})).json()
        done = await wait_for(api, again["id"])
    assert again["coalesced"] is False
    assert done["upstream_task_id"] != first["upstream_task_id"]
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 2


async def test_different_queries_are_never_coalesced(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    variants = [
        query(5),
        {**query(5), "site_id": 5194},
        {**query(5), "fields": ["event_type"]},
        {**query(5), "filter": "created_time>=2020-10-11 and batch==5"},
    ]
    async with shared_stack.client() as api:
        created = [(await api.post("/v1/exports", json=v)).json() for v in variants]
        done = [await wait_for(api, c["id"]) for c in created]
    assert [c["coalesced"] for c in created] == [False] * 4
    assert len({d["upstream_task_id"] for d in done}) == 4
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 4
