"""DELETE /v1/exports/{id}: cancel a queued or running export, for real (API + worker
processes, Redis, the sandbox upstream)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from app.exports.schemas import ExportRecord
from app.platform import keys
from tests.support import Stack, running_stack, wait_for

NEVER = {"filter": "event_type==agreed and batch==__never__"}


def _upstream_task(sandbox: httpx.Client, filter: str) -> dict[str, Any]:
    tasks = [t for t in sandbox.get("/_sandbox/stats").json()["tasks"] if t["filter"] == filter]
    assert len(tasks) == 1, tasks
    task: dict[str, Any] = tasks[0]
    return task


async def test_canceling_a_running_export_stops_its_polling_and_frees_its_upstream_slot(
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    with running_stack(
        redis_url, upstream_url, tmp_path, GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="1"
    ) as stack:
        async with stack.client() as api:
            running = (await api.post("/v1/exports", json=NEVER)).json()
            running = await wait_for(api, running["id"], statuses=("running",))
            # The only upstream slot is taken: the next two wait in the queue.
            waiting = (await api.post("/v1/exports", json={"filter": "batch==2"})).json()
            queued = (await api.post("/v1/exports", json={"filter": "batch==3"})).json()
            assert waiting["status"] == queued["status"] == "queued"

            canceled_queued = await api.delete(f"/v1/exports/{queued['id']}")
            canceled = await api.delete(f"/v1/exports/{running['id']}")
            assert canceled_queued.status_code == canceled.status_code == 200
            assert canceled_queued.json()["status"] == canceled.json()["status"] == "canceled"
            assert canceled.json()["canceled_at"] and canceled.json()["links"] == []

            # The freed slot goes to the export that was waiting for it.
            done = await wait_for(api, waiting["id"])
            assert done["status"] == "completed"
            again = (await api.get(f"/v1/exports/{running['id']}")).json()
            assert again["status"] == "canceled"
            assert "retry-after" not in (await api.get(f"/v1/exports/{queued['id']}")).headers

        record = ExportRecord.model_validate_json(
            await redis_client.get(keys.export(running["id"]))
        )
        task_id = record.task_id
        assert await redis_client.zscore(keys.UPSTREAM_ACTIVE, task_id) is None
        assert await redis_client.zscore(keys.OPEN_TASKS, task_id) is None
        # Polling has stopped: at most one poll that was already under way when it was
        # canceled, then nothing more (polls come every <= 1 s in this stack).
        polls_then = _upstream_task(sandbox, NEVER["filter"])["polls"]
        await asyncio.sleep(2.5)
        assert _upstream_task(sandbox, NEVER["filter"])["polls"] == polls_then
        # The queued one never reached upstream.
        filters = [t["filter"] for t in sandbox.get("/_sandbox/stats").json()["tasks"]]
        assert "batch==3" not in filters


async def test_canceling_one_of_two_coalesced_exports_leaves_the_shared_task_serving_the_other(
    stack: Stack, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 3}).raise_for_status()
    body = {"filter": "event_type==agreed", "fields": ["event_type"]}
    async with stack.client() as api:
        first = (await api.post("/v1/exports", json=body)).json()
        second = (await api.post("/v1/exports", json=body)).json()
        assert second["coalesced"] is True
        canceled = await api.delete(f"/v1/exports/{first['id']}")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        done = await wait_for(api, second["id"])
        first_after = (await api.get(f"/v1/exports/{first['id']}")).json()
    assert done["status"] == "completed" and len(done["links"]) == 3
    assert first_after["status"] == "canceled" and first_after["links"] == []
    assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == 1


async def test_canceling_a_finished_export_is_409_and_changes_nothing(stack: Stack) -> None:
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json={"filter": "event_type==agreed"})).json()
        done = await wait_for(api, created["id"])
        refused = await api.delete(f"/v1/exports/{created['id']}")
        after = (await api.get(f"/v1/exports/{created['id']}")).json()
        # a canceled export is finished too
        other = (await api.post("/v1/exports", json=NEVER)).json()
        assert (await api.delete(f"/v1/exports/{other['id']}")).status_code == 200
        twice = await api.delete(f"/v1/exports/{other['id']}")
    assert done["status"] == "completed"
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status"] == 409 and problem["export_status"] == "completed"
    assert problem["type"] and problem["title"] and problem["detail"]
    assert after == done
    assert twice.status_code == 409 and twice.json()["export_status"] == "canceled"


async def test_canceling_another_clients_export_is_404_and_leaves_it_alone(stack: Stack) -> None:
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        created = (await alice.post("/v1/exports", json=NEVER)).json()
        theirs = await bob.delete(f"/v1/exports/{created['id']}")
        missing = await bob.delete("/v1/exports/exp_AAAAAAAAAAAAAAAAAAAAAA")
        mine = (await alice.get(f"/v1/exports/{created['id']}")).json()
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["title"] == missing.json()["title"]
    assert mine["status"] in ("queued", "running") and mine["canceled_at"] is None
