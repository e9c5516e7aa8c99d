"""An export goes from HTTP request to upstream task to CSV links, end to end, for real:
the API and an arq worker as processes, a private Redis, the sandbox upstream over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from redis.asyncio import Redis

from tests.support import Stack, wait_for

EXPORT = {
    "filter": "created_time>=2020-10-10 and event_type==agreed",
    "fields": ["connection_data.remote_address", "created_time", "event_type", "id"],
    "site_id": 5193,
    # Loopback with nothing listening (allowed by the test stack): no traffic leaves the machine.
    "callback_url": "http://127.0.0.1:1024/hooks/exports",
    "metadata": {"ticket": "OPS-12"},
}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_submit_answers_202_with_location_and_a_queued_export(stack: Stack) -> None:
    async with stack.client() as api:
        response = await api.post("/v1/exports", json=EXPORT)
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/v1/exports/{body['id']}"
    assert body["id"].startswith("exp_") and len(body["id"]) >= 4 + 16
    assert body["status"] in ("queued", "running")
    assert body["metadata"] == {"ticket": "OPS-12"}
    assert body["callback_url"] == EXPORT["callback_url"]
    assert body["coalesced"] is False
    assert body["links"] == [] and body["error"] is None and body["completed_at"] is None


async def test_export_completes_with_links_and_expiry_thirty_days_after_completion(
    stack: Stack, sandbox: httpx.Client
) -> None:
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json=EXPORT)).json()
        done = await wait_for(api, created["id"])
    assert done["status"] == "completed", done
    assert done["upstream_status"] == "complete"
    assert len(done["links"]) == 3  # 250 sandbox rows, 100 per file
    assert all(link.startswith("http://127.0.0.1:") for link in done["links"])
    assert done["upstream_task_id"]
    assert done["polls"] >= 1
    completed, expires = _time(done["completed_at"]), _time(done["expires_at"])
    assert expires - completed == timedelta(days=30)
    assert _time(done["submitted_at"]) <= completed
    # upstream's own completion time is used when the task carries one
    upstream = sandbox.get(
        f"/v1.1/tasks/export/{done['upstream_task_id']}",
        headers={"Authorization": "Bearer sandbox-test-token"},
    ).json()
    own = _time(upstream["data"]["completed_at"])
    assert abs((completed - own).total_seconds()) < 0.002
    # the links really are the CSVs
    first = httpx.get(done["links"][0])
    assert first.status_code == 200
    assert first.text.splitlines()[0] == (
        "id,signer_id,created_time,connection_data.remote_address,event_type"
    )


async def test_retry_after_is_sent_while_unfinished_and_not_after(stack: Stack) -> None:
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json=EXPORT)).json()
        early = await api.get(f"/v1/exports/{created['id']}")
        done = await wait_for(api, created["id"])
        late = await api.get(f"/v1/exports/{created['id']}")
    assert early.json()["status"] in ("queued", "running")
    assert int(early.headers["retry-after"]) >= 1
    assert done["status"] == "completed"
    assert "retry-after" not in late.headers


async def test_upstream_receives_the_fields_rule_and_the_documented_parameters(
    stack: Stack, sandbox: httpx.Client
) -> None:
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json=EXPORT)).json()
        await wait_for(api, created["id"])
    assert created["fields"] == [
        "id", "signer_id", "created_time", "connection_data.remote_address", "event_type"
    ]  # fmt: skip
    stats = sandbox.get("/_sandbox/stats").json()
    assert stats["tasks_created"] == 1
    received = stats["tasks"][0]
    assert (
        received["fields"] == "id,signer_id,created_time,connection_data.remote_address,event_type"
    )
    assert received["filter"] == EXPORT["filter"]
    assert received["query"]["no_count"] == "true"
    assert received["query"]["lean"] == "true"


async def test_omitted_fields_ask_upstream_for_its_default_columns(
    stack: Stack, sandbox: httpx.Client
) -> None:
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json={"filter": "event_type==agreed"})).json()
        done = await wait_for(api, created["id"])
    assert created["fields"] is None and done["status"] == "completed"
    assert sandbox.get("/_sandbox/stats").json()["tasks"][0]["fields"] is None


async def test_an_upstream_task_that_fails_fails_the_export(
    stack: Stack, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_fail_rate": 1.0}).raise_for_status()
    async with stack.client() as api:
        created = (await api.post("/v1/exports", json=EXPORT)).json()
        done = await wait_for(api, created["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "upstream_failed"
    assert done["links"] == [] and done["expires_at"] is None
    assert "sandbox-test-token" not in str(done)


async def test_each_defensive_parsing_variant_completes_end_to_end(
    stack: Stack, sandbox: httpx.Client
) -> None:
    variants = [
        {"envelope": False, "links_shape": "url", "complete_status": "SUCCESS"},
        {"envelope": True, "links_shape": "href", "complete_status": "Completed"},
        {"envelope": False, "links_shape": "download_url", "complete_status": "done",
         "completion_time_field": None},
        {"envelope": True, "links_shape": "link", "complete_status": "finished"},
    ]  # fmt: skip
    async with stack.client() as api:
        for number, variant in enumerate(variants):
            sandbox.post("/_sandbox/config", json=variant).raise_for_status()
            body = {"filter": f"event_type==agreed and batch=={number}"}
            created = (await api.post("/v1/exports", json=body)).json()
            done = await wait_for(api, created["id"])
            assert done["status"] == "completed", (variant, done)
            assert done["upstream_status"] == variant["complete_status"]
            assert len(done["links"]) == 3
            assert all(link.startswith("http") for link in done["links"])


async def test_nothing_is_queued_for_a_request_that_is_refused(
    stack: Stack, redis_client: Redis
) -> None:
    async with stack.client() as api:
        bad_filter = await api.post("/v1/exports", json={"filter": "event_type=="})
        unknown_member = await api.post("/v1/exports", json={"filtre": "x==1"})
    assert bad_filter.status_code == 422
    assert bad_filter.headers["content-type"] == "application/problem+json"
    assert bad_filter.json()["errors"][0]["member"] == "filter"
    assert unknown_member.status_code == 422
    assert unknown_member.json()["errors"][0]["member"] == "filtre"
    assert await redis_client.keys("gw:export:*") == []
    assert await redis_client.keys("arq:job:*") == []
