"""The README's walkthrough ("Using it") runs top to bottom as written, against the dev runner
(``export-gateway run``) started the way the README starts it, in a folder of its own.

Its shell blocks are taken from the README itself and run in order in one ``bash`` with
``set -euo pipefail``, so every command must exit 0 (``curl -f`` turns an HTTP error into a
failure). The only substitutions are the ports: the API's (8000 in the README, also the command
line's default URL, so ``GATEWAY_URL`` points the command line at the test's port) and the
webhook receiver's (8765), which are free ports here so that the test never meets another
process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.platform.localredis import CHOICE_VARIABLE, free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = Path(sys.executable).parent / "export-gateway"


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks of the README's "Using it" section, in order."""
    text = README.read_text()
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def test_the_walkthrough_is_there_and_shows_how_to_set_the_key() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) >= 4
    text = "\n".join(blocks)
    assert "KEY=$(cat .gateway/dev-api-key)" in text
    assert "curl -s " not in text and "curl -si " not in text  # every curl with -f
    assert "callback_url" in text and "export-gateway listen" in text


def test_the_readme_walkthrough_runs_top_to_bottom_against_the_dev_runner(tmp_path: Path) -> None:
    api_port, hook_port = free_port(), free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") or k == CHOICE_VARIABLE
    }
    log = (tmp_path / "runner.log").open("wb")
    runner = subprocess.Popen(
        [str(SCRIPT), "run", "--port", str(api_port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{api_port}", runner, tmp_path)
        script = ["set -euo pipefail"]
        for number, block in enumerate(walkthrough_blocks(), 1):
            block = block.replace("127.0.0.1:8000", f"127.0.0.1:{api_port}")
            block = block.replace("8765", str(hook_port))
            script += [block, f"echo '--- block {number} ran'"]
        ran = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=tmp_path,
            env={**env, "GATEWAY_URL": f"http://127.0.0.1:{api_port}"},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        runner.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
        try:
            runner.wait(timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()
            log.close()
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-6000:] + (tmp_path / "runner.log").read_text()[-3000:]
    assert output.count("--- block ") == len(walkthrough_blocks())
    webhooks = [json.loads(line) for line in (tmp_path / "webhooks.jsonl").read_text().splitlines()]
    # the dev runner archives: completed, archived, then archived again (the latest, redelivered)
    by_type = {w["type"]: w for w in webhooks[:2]}
    assert sorted(by_type) == ["export.archived", "export.completed"]
    assert webhooks[2]["type"] == "export.archived"
    assert webhooks[2]["webhook_id"] == by_type["export.archived"]["webhook_id"]  # same id
    export = json.loads((tmp_path / "export.json").read_text())
    completed = by_type["export.completed"]
    assert completed["data"]["id"] == export["id"]
    assert completed["data"]["metadata"] == {"ticket": "OPS-12"}
    assert by_type["export.archived"]["data"]["archive"]["state"] == "archived"
    header = (tmp_path / "activity.csv").read_text().splitlines()[0]
    assert header.startswith("id,signer_id,created_time")
    assert runner.returncode == 0


def _wait_ready(url: str, runner: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert runner.poll() is None, (folder / "runner.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the dev runner was not ready in 120 s")
