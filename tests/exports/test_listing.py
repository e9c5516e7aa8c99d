"""GET /v1/exports: the caller's exports, newest first, in stable pages."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from app.exports.schemas import ExportRecord, TaskRecord
from app.exports.store import ExportStore
from tests.support import Stack, running_stack, wait_for


async def _walk(api: httpx.AsyncClient, limit: int, **params: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(200):
        query: dict[str, Any] = {"limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        response = await api.get("/v1/exports", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= limit
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


def _position(export: dict[str, Any]) -> tuple[datetime, str]:
    # parsed: "…:05Z" (a whole second) sorts after "…:05.088Z" as text
    return datetime.fromisoformat(export["created_at"].replace("Z", "+00:00")), export["id"]


async def test_listing_shows_only_the_callers_exports_newest_first(stack: Stack) -> None:
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        mine = [(await alice.post("/v1/exports", json={})).json()["id"] for _ in range(5)]
        theirs = [(await bob.post("/v1/exports", json={})).json()["id"] for _ in range(2)]
        response = await alice.get("/v1/exports")
    assert response.status_code == 200
    page = response.json()
    assert page["next_cursor"] is None
    assert [e["id"] for e in page["data"]] == mine[::-1]
    assert not set(theirs) & {e["id"] for e in page["data"]}


async def test_listing_pages_follow_an_opaque_cursor_until_it_is_null(stack: Stack) -> None:
    async with stack.client() as api:
        created = [(await api.post("/v1/exports", json={})).json()["id"] for _ in range(7)]
        first = (await api.get("/v1/exports", params={"limit": 3})).json()
        walked = await _walk(api, 3)
        default = (await api.get("/v1/exports")).json()
    assert len(first["data"]) == 3 and first["next_cursor"]
    assert ":" not in first["next_cursor"] and "=" not in first["next_cursor"]
    assert [e["id"] for e in walked] == created[::-1]
    assert len(default["data"]) == 7  # default limit 20


async def test_walking_pages_while_exports_are_created_repeats_none_and_skips_none(
    stack: Stack,
) -> None:
    async with stack.client() as api:
        before = {(await api.post("/v1/exports", json={})).json()["id"] for _ in range(24)}
        stop = asyncio.Event()
        added: set[str] = set()

        async def keep_creating() -> None:
            while not stop.is_set():
                added.add((await api.post("/v1/exports", json={})).json()["id"])

        creator = asyncio.create_task(keep_creating())
        walked: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
            page = (await api.get("/v1/exports", params=params)).json()
            walked += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            # let at least one more export be created between any two pages
            target, deadline = len(added) + 1, time.monotonic() + 20
            while len(added) < target and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        stop.set()
        await creator
    ids = [e["id"] for e in walked]
    assert len(added) >= 6, "the walk should have raced some inserts"
    assert len(ids) == len(set(ids)), "an export was listed twice"
    assert before <= set(ids), "an export that existed before the walk was skipped"
    positions = [_position(e) for e in walked]
    assert positions == sorted(positions, reverse=True)
    assert len(set(positions)) == len(positions)


async def test_exports_created_in_the_same_millisecond_page_by_id_without_repeats(
    stack: Stack, redis_client: Redis
) -> None:
    store = ExportStore(redis_client, record_ttl=3600)
    moment = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
    task = TaskRecord(
        id="tsk_same", fingerprint="f" * 32, filter=None, fields=None, site_id=None,
        created_at=moment,
    )  # fmt: skip
    ids = [f"exp_{letter * 22}" for letter in "ABCDEFG"]
    for export_id in ids:
        record = ExportRecord(
            id=export_id, client_id="alice", task_id=task.id, filter=None, fields=None,
            site_id=None, callback_url=None, metadata=None, coalesced=False, created_at=moment,
        )  # fmt: skip
        await store.submit(record, task, lambda _: False)
    async with stack.client() as api:
        walked = await _walk(api, 2)
    assert [e["id"] for e in walked] == sorted(ids, reverse=True)


async def test_listing_filters_by_status(stack: Stack) -> None:
    async with stack.client() as api:
        done = [
            (await api.post("/v1/exports", json={"filter": f"batch=={n}"})).json()["id"]
            for n in range(2)
        ]
        for export_id in done:
            assert (await wait_for(api, export_id))["status"] == "completed"
        never = {"filter": "batch==__never__"}
        canceled = (await api.post("/v1/exports", json=never)).json()["id"]
        assert (await api.delete(f"/v1/exports/{canceled}")).status_code == 200
        running_body = {"filter": "batch==__never__ and event_type==agreed"}
        running = (await api.post("/v1/exports", json=running_body)).json()["id"]
        failing = (await api.post("/v1/exports", json={"filter": "batch==__fail__"})).json()["id"]
        await wait_for(api, running, statuses=("running",))
        assert (await wait_for(api, failing))["status"] == "failed"
        completed = await _walk(api, 1, status="completed")
        only_canceled = await _walk(api, 5, status="canceled")
        only_running = await _walk(api, 5, status="running")
        only_failed = await _walk(api, 5, status="failed")
        everything = await _walk(api, 5)
    assert [e["id"] for e in completed] == done[::-1]
    assert [e["id"] for e in only_canceled] == [canceled]
    assert [e["id"] for e in only_running] == [running]
    assert [e["id"] for e in only_failed] == [failing]
    assert len(everything) == 5


async def test_out_of_range_limit_unknown_status_and_foreign_cursor_are_422(
    stack: Stack,
) -> None:
    forged = base64.urlsafe_b64encode(b"not a cursor").decode()
    async with stack.client() as api:
        answers = {
            "limit": [await api.get("/v1/exports", params={"limit": n}) for n in (0, 101, "x")],
            "status": [await api.get("/v1/exports", params={"status": "done"})],
            "cursor": [await api.get("/v1/exports", params={"cursor": c}) for c in (forged, "%%%")],
        }
        fine = [await api.get("/v1/exports", params={"limit": n}) for n in (1, 100)]
    for member, responses in answers.items():
        for response in responses:
            assert response.status_code == 422, (member, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert [e["member"] for e in problem["errors"]] == [member]
            assert problem["type"] and problem["title"] and problem["detail"]
    assert [r.status_code for r in fine] == [200, 200]


async def test_a_page_costs_one_index_read_and_two_batch_reads_whatever_its_size(
    tmp_path: Path, upstream_url: str, sandbox: httpx.Client
) -> None:
    from app.platform.localredis import LocalRedis

    server = LocalRedis(tmp_path / "redis").start()
    try:
        with running_stack(server.url, upstream_url, tmp_path, workers=0) as gateway:
            async with gateway.client() as api:
                for n in range(30):
                    body = {"filter": f"batch=={n % 3}"}
                    assert (await api.post("/v1/exports", json=body)).status_code == 202
                counts = await _command_counts(server.url)
                page = (await api.get("/v1/exports", params={"limit": 30})).json()
                after = await _command_counts(server.url)
    finally:
        server.stop()
    assert len(page["data"]) == 30
    used = {name: after.get(name, 0) - counts.get(name, 0) for name in after}
    used = {name: n for name, n in used.items() if n and not _handshake_or_probe(name)}
    assert used == {"zrevrangebyscore": 1, "mget": 2}, used


# Commands that are not the page's reads: this test's own INFO, and the handshake redis-py
# sends when the API opens a connection (CLIENT SETINFO, HELLO/AUTH/SELECT when configured).
# How Redis counts the handshake depends on its version: 6.2 counts CLIENT SETINFO as a call of
# `client` (which answers an error), 7.0 refuses the unknown subcommand without counting a
# call, 7.2 and later count it as `client|setinfo`. So any 6.2-7.x server gives the same answer.
_NOT_THE_PAGE = frozenset({"info", "client", "hello", "auth", "select"})


def _handshake_or_probe(name: str) -> bool:
    return name.split("|", 1)[0] in _NOT_THE_PAGE


async def _command_counts(url: str) -> dict[str, int]:
    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
