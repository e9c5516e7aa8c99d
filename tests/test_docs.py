"""The project explains itself: docs/API.md covers every route, webhook type and setting, its
signature-verification example works, and nothing in the repository points outside it."""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.config import Settings
from app.main import create_app
from app.webhooks.schemas import WEBHOOK_EVENTS
from app.webhooks.signing import WebhookSigner

ROOT = Path(__file__).resolve().parent.parent
API = (ROOT / "docs" / "API.md").read_text()


def test_every_route_of_the_api_is_in_the_reference() -> None:
    spec = create_app().openapi()
    for path, operations in spec["paths"].items():
        shown = re.sub(r"\{[a-z_]*id\}", "{id}", path)
        for method in operations:
            assert f"`{method.upper()} {shown}" in API, (method, path)


def test_every_webhook_type_is_in_the_reference() -> None:
    for name, _ in WEBHOOK_EVENTS:
        assert f"| `{name}` |" in API, name


def test_every_setting_is_documented_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        variable = f"`GATEWAY_{name.upper()}`"
        assert variable in API or variable in readme, variable
    rows = dict(re.findall(r"^\| `(GATEWAY_[A-Z0-9_]+)` \| `([^`]*)`", API, flags=re.MULTILINE))
    for name, field in Settings.model_fields.items():
        variable = f"GATEWAY_{name.upper()}"
        if variable not in rows:
            continue  # documented in a README section of its own
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        elif isinstance(default, float):
            shown = f"{default:g}"
        else:
            shown = str(default)
        assert rows[variable] == shown, (variable, rows[variable], shown)


def _example(language: str) -> str:
    section = API.split("### Verifying a webhook", 1)[1]
    found = re.search(rf"^```{language}\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert found, language
    return found.group(1)


def _signed(secret: str, body: str) -> dict[str, str]:
    signer = WebhookSigner.from_settings(SecretStr(secret), [])
    return signer.sign("alice", "msg_1", datetime.now(UTC), body).as_dict()


SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
BODY = '{"type":"export.completed","timestamp":"2026-11-27T10:04:12.000Z","data":{"id":"exp_1"}}'


def test_the_python_verification_example_accepts_a_gateway_webhook_and_refuses_a_forgery() -> None:
    code = _example("python").replace('"whsec_..."', repr(SECRET))
    scope: dict[str, object] = {}
    exec(compile(code, "API.md", "exec"), scope)  # noqa: S102 - the documented example itself
    receive = scope["receive"]
    headers = {name.title(): value for name, value in _signed(SECRET, BODY).items()}
    assert receive(BODY.encode(), headers)["data"] == {"id": "exp_1"}  # type: ignore[operator]
    forged = {**headers, "Webhook-Signature": "v1," + base64.b64encode(b"x" * 32).decode()}
    with pytest.raises(PermissionError):
        receive(BODY.encode(), forged)  # type: ignore[operator]


def test_nothing_in_the_repository_points_outside_it() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(
        r"\.\./shared|/work/shared|CONTRACT\.md|UPSTREAM\.md|\bissues? #?\d+|\(#\d+\)",
        flags=re.IGNORECASE,
    )
    found = []
    for name in tracked:
        path = ROOT / name
        if name.endswith(".lock") or not path.is_file() or name == "tests/test_docs.py":
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m.group(0)}" for m in outside.finditer(text)]
    assert not found, found
