"""The ``export-gateway`` client commands, run as the console script against a real stack."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from app.platform.localredis import free_port
from tests.support import KEYS, Stack, running_stack

SCRIPT = str(Path(sys.executable).parent / "export-gateway")


def _run(
    stack: Stack | None, *args: str, key: str | None = KEYS["alice"], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if stack is not None:
        env["GATEWAY_URL"] = stack.api_url
    if key is not None:
        env["GATEWAY_API_KEY"] = key
    return subprocess.run(
        [SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60, check=False, cwd=cwd
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
    stack: Stack, sandbox: httpx.Client, tmp_path: Path
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
    no_key = _run(stack, "status", "exp_x", key=None, cwd=tmp_path)  # no .gateway/ there
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


COMMANDS = ("run", "sandbox", "listen", "download", "submit", "status", "list", "cancel", "check")


def test_help_is_plain_text_and_every_command_documents_its_exit_codes() -> None:
    top = _run(None, "--help")
    assert top.returncode == 0
    assert "``" not in top.stdout and "exit codes:" in top.stdout
    for name in COMMANDS:
        shown = _run(None, name, "--help")
        assert shown.returncode == 0, name
        assert "exit codes:" in shown.stdout and "``" not in shown.stdout, name
        assert "130" in shown.stdout, name
        if "--url" in shown.stdout:
            assert "None" not in shown.stdout and "http://127.0.0.1:8000" in shown.stdout, name


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    shown = _run(None, "--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"export-gateway {version('clickwrap-export-gateway')}"


async def test_a_wait_that_times_out_exits_5(stack: Stack, sandbox: httpx.Client) -> None:
    sandbox.post("/_sandbox/config", json={"never_finish": True}).raise_for_status()
    waited = _run(stack, "submit", "--filter", "event_type==viewed", "--wait", "--timeout", "1")
    assert waited.returncode == 5, waited.stderr
    assert "still" in waited.stderr and "after 1 s" in waited.stderr


async def test_an_expired_export_waited_for_exits_4(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    with running_stack(
        redis_url, upstream_url, tmp_path, GATEWAY_LINK_RETENTION_SECONDS="1"
    ) as short:
        done = _run(short, "submit", "--filter", "event_type==agreed", "--wait")
        assert done.returncode in (0, 4), done.stderr
        export = json.loads(done.stdout)
        for _ in range(100):
            status = json.loads(_run(short, "status", export["id"]).stdout)
            if status["status"] == "expired":
                break
            time.sleep(0.2)
        waited = _run(short, "status", export["id"], "--wait")
    assert json.loads(waited.stdout)["status"] == "expired"
    assert waited.returncode == 4


async def test_ctrl_c_exits_130_without_a_traceback(stack: Stack, sandbox: httpx.Client) -> None:
    sandbox.post("/_sandbox/config", json={"never_finish": True}).raise_for_status()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_URL": stack.api_url, "GATEWAY_API_KEY": KEYS["alice"]}
    waiting = subprocess.Popen(
        [SCRIPT, "submit", "--filter", "event_type==voided", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _exports(stack) and time.monotonic() < deadline:  # until it has submitted
            time.sleep(0.2)
        time.sleep(0.5)
        waiting.send_signal(signal.SIGINT)
        _, stderr = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr


def _exports(stack: Stack) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(_run(stack, "list").stdout)["data"]
    return listed


def test_listen_prints_verified_webhooks_and_refuses_forged_ones(tmp_path: Path) -> None:
    from standardwebhooks import Webhook

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    port = free_port()
    listener = subprocess.Popen(
        [SCRIPT, "listen", "--port", str(port), "--secret", secret, "--count", "1",
         "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        body = json.dumps({"type": "export.completed", "timestamp": "2026-11-27T10:00:00Z",
                           "data": {"id": "exp_1"}})  # fmt: skip
        now = datetime.now(UTC)
        signature = Webhook(secret).sign("msg_1", now, body)
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp()))}
        url = f"http://127.0.0.1:{port}/hooks"
        for _ in range(100):  # until it listens
            try:
                forged = httpx.post(url, content=body, headers={**headers,
                                    "webhook-signature": "v1,Zm9yZ2Vk"})  # fmt: skip
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert forged.status_code == 401
        good = httpx.post(url, content=body, headers={**headers, "webhook-signature": signature})
        assert good.status_code == 204
        out, err = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert listener.returncode == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert printed == [{"webhook_id": "msg_1", **json.loads(body)}]
    assert "rejected a webhook" in err


def test_listen_that_gets_too_few_webhooks_in_time_exits_5() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    quiet = _run(None, "listen", "--port", str(free_port()), "--secret", secret, "--count", "1",
                 "--timeout", "1")  # fmt: skip
    assert quiet.returncode == 5 and "0 of 1 webhooks" in quiet.stderr


def test_the_download_progress_bar_shows_the_share_when_the_size_is_known() -> None:
    from app.cli.download import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(screen, enabled=True, total=4_000_000)
    progress.add(1_000_000)
    progress.done("-> out.csv")
    last = screen.getvalue().split("\r")[-1]
    assert last.startswith("[" + "#" * 7 + "-" * 23 + "]  25%"), last
    assert "1.0 MB of 4.0 MB" in last and last.endswith("-> out.csv\n")
