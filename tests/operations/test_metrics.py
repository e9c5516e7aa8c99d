"""Prometheus metrics move when exports run: /metrics on the API, a metrics port per worker."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.platform.localredis import free_port
from tests.support import Stack, metric, running_stack, wait_for

QUERY = {"filter": "event_type==agreed", "fields": ["event_type"]}


async def test_metrics_move_when_exports_run(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    port = free_port()
    with running_stack(
        redis_url, upstream_url, tmp_path, GATEWAY_WORKER_METRICS_PORT=str(port)
    ) as stack:
        worker_metrics = f"http://127.0.0.1:{port}/metrics"
        async with stack.client() as api:
            before = (await api.get("/metrics")).text
            first = (await api.post("/v1/exports", json=QUERY)).json()
            second = (await api.post("/v1/exports", json=QUERY)).json()  # shares the task
            during = await api.get("/metrics")
            await wait_for(api, first["id"])
            await wait_for(api, second["id"])
            after = (await api.get("/metrics")).text
        worker = httpx.get(worker_metrics).text

    assert during.status_code == 200
    assert during.headers["content-type"].startswith("text/plain")
    # API: acceptances, coalescing and the queue gauges read from Redis
    assert metric(before, "gateway_exports_total", status="queued") == 0
    assert metric(after, "gateway_exports_total", status="queued") == 2
    assert metric(after, "gateway_coalesced_requests_total") == 1
    assert metric(during.text, "gateway_open_tasks") == 1
    assert metric(after, "gateway_open_tasks") == 0
    assert metric(after, "gateway_workers_alive") == 1
    # worker: upstream requests by route and status, latency, task and export outcomes
    created = metric(
        worker,
        "gateway_upstream_requests_total",
        route="/tasks/export/activity",
        method="POST",
        status="200",
    )
    assert created == 1
    polls = metric(
        worker,
        "gateway_upstream_requests_total",
        route="/tasks/export/:id",
        method="GET",
        status="200",
    )
    assert polls >= 1
    latency = metric(
        worker, "gateway_upstream_request_seconds_count", route="/tasks/export/:id", method="GET"
    )
    assert latency == polls
    assert metric(worker, "gateway_upstream_tasks_total", status="created") == 1
    assert metric(worker, "gateway_upstream_tasks_total", status="completed") == 1
    assert metric(worker, "gateway_exports_total", status="completed") == 2
    assert metric(worker, "gateway_polls_per_export_count") == 1
    assert metric(worker, "gateway_polls_per_export_sum") == polls
    for name in (
        "gateway_webhook_attempts_total",
        "gateway_webhook_dead_letters_total",
        "gateway_redis_errors_total",
        "gateway_oldest_waiting_seconds",
        "gateway_job_queue_depth",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in worker, name


async def test_upstream_errors_are_counted_by_status_code(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    sandbox.post("/_sandbox/config", json={"forbidden_sites": [403]}).raise_for_status()
    port = free_port()
    with running_stack(
        redis_url, upstream_url, tmp_path, GATEWAY_WORKER_METRICS_PORT=str(port)
    ) as stack:
        async with stack.client() as api:
            created = (
                await api.post("/v1/exports", json={"filter": "batch==403", "site_id": 403})
            ).json()
            done = await wait_for(api, created["id"])
        worker = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert done["status"] == "failed"
    labels = {"route": "/tasks/export/activity", "method": "POST", "status": "403"}
    assert metric(worker, "gateway_upstream_requests_total", **labels) == 1
    assert metric(worker, "gateway_exports_total", status="failed") == 1


async def test_api_requests_are_counted_by_route_template_method_and_status_class(
    stack: Stack,
) -> None:
    async with stack.client() as api:
        made = (await api.post("/v1/exports", json={"filter": "event_type==signed"})).json()
        assert (await api.get(f"/v1/exports/{made['id']}")).status_code == 200
        assert (await api.get("/v1/exports/exp_doesnotexist0000000000")).status_code == 404
        assert (await api.get("/no/such/route")).status_code == 404
        text = (await api.get("/metrics")).text
    one = "/v1/exports/{export_id}"
    assert metric(text, "gateway_http_requests_total", route=one, method="GET", status="2xx") == 1
    assert metric(text, "gateway_http_requests_total", route=one, method="GET", status="4xx") == 1
    posted = metric(
        text, "gateway_http_requests_total", route="/v1/exports", method="POST", status="2xx"
    )
    assert posted == 1
    unmatched = metric(
        text, "gateway_http_requests_total", route="<unmatched>", method="GET", status="4xx"
    )
    assert unmatched == 1
    assert made["id"] not in text  # templates, never ids
    timed = metric(text, "gateway_http_request_seconds_count", route=one, method="GET")
    assert timed == 2
    assert 'le="0.1"' in text


async def test_no_metric_carries_a_created_series(stack: Stack) -> None:
    async with stack.client() as api:
        await api.post("/v1/exports", json={"filter": "event_type==viewed"})
        text = (await api.get("/metrics")).text
    assert "gateway_exports_total" in text
    assert "_created" not in text
