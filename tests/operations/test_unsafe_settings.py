"""Settings that would let one client act as another stop the API at start-up, with a message
that names the setting and the clients, never the key."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.platform.localredis import LocalRedis, free_port, stop_process
from tests.support import ROOT, Stack

SHARED = "shared-key-abcdefghijklmnop"
SHORT = "short-key"


def start_api(redis_server: LocalRedis, tmp_path: Path, api_keys: str) -> tuple[int | None, str]:
    """Start the API as the process command says; its exit code (None if still running after
    20 s) and its output."""
    stack = Stack(f"redis://127.0.0.1:{redis_server.port}/1", "http://127.0.0.1:9/v1.1", tmp_path)
    env = {**stack.environment(), "GATEWAY_API_KEYS": api_keys}
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    code = process.poll()
    stop_process(process)
    time.sleep(0.1)
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("api_keys", "named"),
    [
        (f"billing:{SHARED},reports:{SHARED}", ["'billing'", "'reports'", "same key"]),
        (f"billing:{SHARED},reports:sha256:{'0' * 64},audit:{SHARED}", ["'billing'", "'audit'"]),
        (f"billing:{SHARED},tiny:{SHORT}", ["'tiny'", "shorter than 16"]),
    ],
    ids=["two-clients-one-key", "shared-among-three", "short-key"],
)
def test_the_api_refuses_to_start_with_a_shared_or_short_key_and_never_shows_it(
    redis_server: LocalRedis, tmp_path: Path, api_keys: str, named: list[str]
) -> None:
    code, output = start_api(redis_server, tmp_path, api_keys)
    assert code is not None and code != 0, output[-2000:]
    assert "GATEWAY_API_KEYS" in output
    for text in named:
        assert text in output
    assert SHARED not in output and SHORT not in output


def test_the_dev_runner_may_use_a_short_key() -> None:
    settings = Settings(_env_file=None, api_keys=[f"dev:{SHORT}"], dev_runner=True)
    assert list(settings.api_key_digests().values()) == ["dev"]
