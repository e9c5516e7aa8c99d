"""Logs: one JSON object per line, carrying request, client, export and upstream task ids,
and never a secret."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx

from app.web.middleware import new_request_id
from tests.support import (
    KEYS,
    SANDBOX_TOKEN,
    WEBHOOK_SECRET,
    Stack,
    running_stack,
    wait_for,
    wait_until,
)
from tests.webhooks.receiver import Answer, Receiver

QUERY = {"filter": "event_type==agreed", "fields": ["event_type"]}


def _lines(logs: Path) -> list[dict[str, Any]]:
    parsed = []
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text().splitlines():
            if line.strip():
                parsed.append(json.loads(line))  # every line is one JSON object
    return parsed


async def test_no_secret_appears_in_any_captured_log_line(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    sandbox.post(
        "/_sandbox/config", json={"fail_rate_429": 0.4, "seed": 7, "retry_after_seconds": 0.1}
    ).raise_for_status()
    receiver = Receiver().start()
    receiver.script("/hooks/flaky", Answer(500), Answer(200))
    receiver.script("/hooks/gone", Answer(410))
    hooks = f"http://127.0.0.1:{receiver.port}/hooks"
    with running_stack(redis_url, upstream_url, tmp_path, GATEWAY_LOG_LEVEL="DEBUG") as stack:
        async with stack.client() as api:
            ok = (await api.post("/v1/exports", json=QUERY)).json()
            await wait_for(api, ok["id"])
            for n, hook in enumerate(("/ok", "/flaky", "/gone")):
                body = {"filter": f"batch=={n}", "callback_url": hooks + hook}
                hooked = (await api.post("/v1/exports", json=body)).json()
                assert (await wait_for(api, hooked["id"]))["status"] == "completed"
            await wait_until(lambda: len(receiver.requests("/hooks/flaky")) == 2)
            await wait_until(
                lambda: receiver.requests("/hooks/ok") and receiver.requests("/hooks/gone")
            )
            sandbox.post("/_sandbox/config", json={"task_fail_rate": 1.0}).raise_for_status()
            failed = (await api.post("/v1/exports", json={"filter": "event_type==sent"})).json()
            assert (await wait_for(api, failed["id"]))["status"] == "failed"
            forbidden = (
                await api.post("/v1/exports", json={"filter": "batch==403", "site_id": 403})
            ).json()
            assert (await wait_for(api, forbidden["id"]))["status"] == "failed"
            wrong_key = await api.get(
                f"/v1/exports/{ok['id']}", headers={"Authorization": f"Bearer {KEYS['bob']}x"}
            )
            assert wrong_key.status_code == 401
            invalid = await api.post("/v1/exports", json={"filter": "event_type=="})
            assert invalid.status_code == 422
        async with stack.client("bob") as bob:
            assert (await bob.get(f"/v1/exports/{ok['id']}")).status_code == 404
        text = stack.log_text()
    receiver.stop()
    assert len(text) > 2000  # the stack did log
    assert "webhook-signature" in receiver.requests("/hooks/ok")[0].headers  # signing happened
    webhook_key = WEBHOOK_SECRET.removeprefix("whsec_")
    secrets = [SANDBOX_TOKEN, *KEYS.values(), WEBHOOK_SECRET, webhook_key]
    secrets.append(base64.b64decode(webhook_key).decode())
    for secret in secrets:
        assert secret not in text, "a secret reached a log line"
    assert "[redacted]" not in text  # nor did one need the formatter's last-resort redaction
    _lines(tmp_path)  # and the text is JSON lines only


async def test_log_lines_are_json_with_request_client_export_and_upstream_ids(
    stack: Stack, sandbox: httpx.Client
) -> None:
    async with stack.client() as api:
        created = await api.post("/v1/exports", json=QUERY, headers={"X-Request-ID": "trace-42"})
        done = await wait_for(api, created.json()["id"])
    assert created.headers["x-request-id"] == "trace-42"
    lines = _lines(stack.logs)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    accepted = [line for line in lines if line["message"] == "export accepted"]
    assert accepted and accepted[0]["request_id"] == "trace-42"
    assert accepted[0]["client_id"] == "alice" and accepted[0]["export_id"] == done["id"]
    reads = [line for line in lines if line.get("path") == f"/v1/exports/{done['id']}"]
    assert reads and all(line["export_id"] == done["id"] for line in reads)
    assert all(line["client_id"] == "alice" and line["request_id"] for line in reads)
    assert any(line.get("upstream_task_id") == done["upstream_task_id"] for line in lines)


async def test_a_request_id_is_made_when_none_or_an_unusable_one_is_given(stack: Stack) -> None:
    async with stack.client() as api:
        plain = await api.get("/healthz")
        odd = await api.get("/healthz", headers={"X-Request-ID": "has spaces\tand tabs"})
    assert plain.headers["x-request-id"].startswith("req_")
    assert odd.headers["x-request-id"].startswith("req_")
    assert plain.headers["x-request-id"] != odd.headers["x-request-id"]


def test_the_formatter_redacts_a_configured_secret_that_slips_into_a_line() -> None:
    import logging

    from app.platform.logs import JsonFormatter

    formatter = JsonFormatter([SANDBOX_TOKEN])
    record = logging.LogRecord(
        "app.test", logging.WARNING, __file__, 1, "sent %s", (f"Bearer {SANDBOX_TOKEN}",), None
    )
    record.header = SANDBOX_TOKEN
    line = json.loads(formatter.format(record))
    assert line["message"] == "sent Bearer [redacted]" and line["header"] == "[redacted]"
    assert line["level"] == "warning" and line["logger"] == "app.test"


def test_generated_request_ids_are_unique_within_a_process_and_across_a_fork() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == len("req_") + 24 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first id, then leave without pytest's clean-up
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child.startswith("req_") and child[:16] not in {i[:16] for i in ids}
