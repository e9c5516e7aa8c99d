"""The ``export-gateway`` client commands, run as the console script against a real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from app.platform.localredis import free_port
from tests.support import KEYS, Stack

SCRIPT = str(Path(sys.executable).parent / "export-gateway")


def _run(
    stack: Stack | None, *args: str, key: str | None = KEYS["alice"]
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if stack is not None:
        env["GATEWAY_URL"] = stack.api_url
    if key is not None:
        env["GATEWAY_API_KEY"] = key
    return subprocess.run(
        [SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_submit_wait_prints_the_completed_export_and_status_reads_it(
    stack: Stack, sandbox: httpx.Client
) -> None:
    submitted = _run(
        stack, "submit", "--filter", "event_type==agreed", "--fields", "event_type, created_time",
        "--site-id", "5193", "--wait",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    done = json.loads(submitted.stdout)
    assert done["status"] == "completed" and len(done["links"]) == 3
    assert done["fields"] == ["id", "signer_id", "created_time", "event_type"]
    assert done["site_id"] == 5193
    assert "completed" in submitted.stderr.splitlines()[-1]  # the status line as it ended
    status = _run(stack, "status", done["id"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == done


async def test_exit_codes_tell_failed_exports_problems_and_usage_apart(
    stack: Stack, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_fail_rate": 1.0}).raise_for_status()
    failed = _run(stack, "submit", "--filter", "event_type==agreed", "--wait")
    assert failed.returncode == 4
    assert json.loads(failed.stdout)["error"]["code"] == "upstream_failed"
    unknown = _run(stack, "status", "exp_" + "A" * 22)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
    invalid = _run(stack, "submit", "--filter", "event_type==")
    assert invalid.returncode == 1 and "filter" in invalid.stderr
    wrong_key = _run(stack, "status", "exp_" + "A" * 22, key="not-a-key")
    assert wrong_key.returncode == 1 and "HTTP 401" in wrong_key.stderr
    no_key = _run(stack, "status", "exp_x", key=None)
    assert no_key.returncode == 2 and "API key" in no_key.stderr
    assert _run(stack, "submit", "--site-id", "five").returncode == 2
    nowhere = _run(None, "status", "exp_x", "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 3 and "cannot reach" in nowhere.stderr


async def test_check_exits_zero_when_ready_and_non_zero_when_not(stack: Stack) -> None:
    ready = _run(stack, "check", key=None)
    for _ in range(50):  # the worker's first heartbeat may still be on its way
        if ready.returncode == 0:
            break
        ready = _run(stack, "check", key=None)
    assert ready.returncode == 0, ready.stderr
    stack.stop(stack.processes[1])  # the worker
    not_ready = _run(stack, "check", key=None)
    assert not_ready.returncode == 1 and "no worker" in not_ready.stderr
    stack.stop_all()
    assert _run(stack, "check", key=None).returncode == 3


async def test_list_and_cancel_work_from_the_command_line(
    stack: Stack, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"never_finish": True}).raise_for_status()
    first = json.loads(_run(stack, "submit", "--filter", "event_type==agreed").stdout)
    second = json.loads(_run(stack, "submit", "--filter", "event_type==sent").stdout)
    listed = _run(stack, "list")
    assert listed.returncode == 0, listed.stderr
    assert [e["id"] for e in json.loads(listed.stdout)["data"]] == [second["id"], first["id"]]
    canceled = _run(stack, "cancel", first["id"])
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "canceled"
    only = json.loads(_run(stack, "list", "--status", "canceled", "--limit", "5").stdout)
    assert [e["id"] for e in only["data"]] == [first["id"]]
    again = _run(stack, "cancel", first["id"])
    assert again.returncode == 1 and "HTTP 409" in again.stderr
