"""Idempotency-Key on POST /v1/exports: one export per (client, key, body), across processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
from redis.asyncio import Redis

from app.exports.idempotency import IdempotencyKeys, StoredAnswer, request_hash
from app.exports.schemas import ExportRequest
from app.platform import keys
from tests.support import Stack, running_stack

BODY = {"filter": "event_type==agreed", "metadata": {"ticket": "OPS-12", "n": 1}}


async def _exports_of(redis: Redis, client: str) -> int:
    return int(await redis.zcard(keys.client_exports(client)))


async def test_the_same_key_and_body_answer_the_first_response_again(
    stack: Stack, redis_client: Redis
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    # the same body, its members in another order and spaced differently
    same = '{ "metadata": {"n": 1, "ticket": "OPS-12"},  "filter": "event_type==agreed" }'
    async with stack.client() as api:
        first = await api.post("/v1/exports", json=BODY, headers=headers)
        again = await api.post(
            "/v1/exports",
            content=same,
            headers=headers | {"Content-Type": "application/json"},
        )
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _exports_of(redis_client, "alice") == 1
    [stored] = await redis_client.keys("gw:idem:alice:*")
    assert 86_000 < await redis_client.ttl(stored) <= 86_400


async def test_the_same_key_with_another_body_is_422(stack: Stack, redis_client: Redis) -> None:
    headers = {"Idempotency-Key": "order-43"}
    async with stack.client() as api:
        first = await api.post("/v1/exports", json=BODY, headers=headers)
        other = await api.post("/v1/exports", json=BODY | {"site_id": 7}, headers=headers)
    assert first.status_code == 202
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert [e["member"] for e in other.json()["errors"]] == ["Idempotency-Key"]
    assert await _exports_of(redis_client, "alice") == 1


async def test_the_same_key_while_the_first_request_is_in_flight_is_409(
    stack: Stack, redis_client: Redis
) -> None:
    # This test process plays a second API process that has reserved the key and is
    # still handling its request.
    reserved, release = asyncio.Event(), asyncio.Event()
    body_hash = request_hash(ExportRequest.model_validate(BODY).model_dump(
        mode="json", exclude_unset=True
    ))  # fmt: skip

    async def slow_first_request() -> StoredAnswer:
        reserved.set()
        await release.wait()
        return StoredAnswer(status=202, headers={}, body='{"id":"exp_first"}')

    other_process = asyncio.create_task(
        IdempotencyKeys(redis_client).run("alice", "order-44", body_hash, slow_first_request)
    )
    await reserved.wait()
    async with stack.client() as api:
        busy = await api.post("/v1/exports", json=BODY, headers={"Idempotency-Key": "order-44"})
        release.set()
        await other_process
        later = await api.post("/v1/exports", json=BODY, headers={"Idempotency-Key": "order-44"})
    assert busy.status_code == 409
    assert busy.headers["content-type"] == "application/problem+json"
    assert int(busy.headers["retry-after"]) >= 1
    assert later.status_code == 202 and later.json() == {"id": "exp_first"}
    assert await _exports_of(redis_client, "alice") == 0


async def test_a_key_over_255_characters_is_400(stack: Stack, redis_client: Redis) -> None:
    async with stack.client() as api:
        too_long = await api.post("/v1/exports", json=BODY, headers={"Idempotency-Key": "k" * 256})
        longest = await api.post("/v1/exports", json=BODY, headers={"Idempotency-Key": "k" * 255})
    assert too_long.status_code == 400
    assert too_long.headers["content-type"] == "application/problem+json"
    assert [e["member"] for e in too_long.json()["errors"]] == ["Idempotency-Key"]
    assert longest.status_code == 202
    assert await _exports_of(redis_client, "alice") == 1


async def test_a_refused_first_request_releases_its_key(stack: Stack, redis_client: Redis) -> None:
    headers = {"Idempotency-Key": "order-45"}
    async with stack.client() as api:
        refused = await api.post("/v1/exports", json={"filter": "event_type=="}, headers=headers)
        fixed = await api.post("/v1/exports", json=BODY, headers=headers)
        replay = await api.post("/v1/exports", json=BODY, headers=headers)
    assert refused.status_code == 422
    assert fixed.status_code == 202
    assert replay.json()["id"] == fixed.json()["id"]
    assert await _exports_of(redis_client, "alice") == 1


async def test_keys_belong_to_one_client(stack: Stack) -> None:
    headers = {"Idempotency-Key": "shared-name"}
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        mine = await alice.post("/v1/exports", json=BODY, headers=headers)
        theirs = await bob.post("/v1/exports", json=BODY, headers=headers)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


async def test_two_api_processes_racing_on_one_key_create_one_export(
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    with running_stack(redis_url, upstream_url, tmp_path, workers=0) as first:
        second = Stack(redis_url, upstream_url, tmp_path)
        try:
            second.start_api()
            async with first.client() as one, second.client() as two:
                for round_ in range(5):
                    headers = {"Idempotency-Key": f"race-{round_}"}
                    answers = await asyncio.gather(
                        *(
                            api.post("/v1/exports", json=BODY, headers=headers)
                            for api in (one, two) * 4
                        )
                    )
                    codes = sorted(a.status_code for a in answers)
                    assert set(codes) <= {202, 409}, [a.text for a in answers]
                    ids = {a.json()["id"] for a in answers if a.status_code == 202}
                    assert len(ids) == 1, ids
                    # once the race is over, everyone gets the one export
                    settled = await two.post("/v1/exports", json=BODY, headers=headers)
                    assert settled.json()["id"] in ids
        finally:
            second.stop_all()
    assert await _exports_of(redis_client, "alice") == 5


async def test_an_answer_stored_by_the_previous_version_still_replays(
    stack: Stack, redis_client: Redis
) -> None:
    # Before 2026-11-27 the stored body was a JSON object, not the response's text.
    body_hash = request_hash(ExportRequest.model_validate(BODY).model_dump(
        mode="json", exclude_unset=True
    ))  # fmt: skip
    redis_key = keys.idempotency("alice", hashlib.sha256(b"order-old").hexdigest())
    stored = {
        "state": "done",
        "request": body_hash,
        "status": 202,
        "headers": {"Location": "/v1/exports/exp_old"},
        "body": {"id": "exp_old", "metadata": {"note": "café"}},
    }
    await redis_client.set(redis_key, json.dumps(stored), ex=600)
    async with stack.client() as api:
        again = await api.post("/v1/exports", json=BODY, headers={"Idempotency-Key": "order-old"})
    assert again.status_code == 202
    assert again.json() == {"id": "exp_old", "metadata": {"note": "café"}}
    assert again.headers["location"] == "/v1/exports/exp_old"
    assert again.headers["idempotent-replayed"] == "true"
    assert await _exports_of(redis_client, "alice") == 0
