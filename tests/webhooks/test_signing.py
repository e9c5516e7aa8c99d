"""Webhook secrets: one per client, else the default; a malformed one stops the API and the
worker at startup with an error that never shows the secret."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from app.webhooks.signing import WebhookSecretError, WebhookSigner
from tests.support import Stack

GOOD = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes
OTHER = "whsec_" + "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA"  # 32 bytes, unpadded


def test_each_client_signs_with_its_own_secret_else_the_default() -> None:
    signer = WebhookSigner.from_settings(SecretStr(GOOD), [SecretStr(f"bob:{OTHER}")])
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    body = '{"type":"export.completed"}'
    for client, secret in (("alice", GOOD), ("bob", OTHER)):
        headers = signer.sign(client, "msg_1", at, body)
        assert headers.timestamp == 1795773600
        assert headers.signature == Webhook(secret).sign("msg_1", at, body)
    assert signer.has_secret("carol")
    assert not WebhookSigner.from_settings(None, [f"bob:{OTHER}"]).has_secret("carol")
    assert not WebhookSigner.from_settings(SecretStr(""), []).has_secret("carol")


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "must start with 'whsec_'"),
        ("whsec_not*base64*at-all_but-long-enough-0123456789", "standard base64"),
        ("whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY-_", "standard base64"),
        ("whsec_c2hvcnQ=", "decodes to 5 bytes; at least 24"),
        ("whsec_", "decodes to 0 bytes"),
    ],
)
def test_a_malformed_secret_is_refused_without_showing_it(secret: str, reason: str) -> None:
    with pytest.raises(WebhookSecretError) as default:
        WebhookSigner.from_settings(SecretStr(secret), [])
    with pytest.raises(WebhookSecretError) as per_client:
        WebhookSigner.from_settings(None, [f"alice:{GOOD}", f"bob:{secret}"])
    assert reason in str(default.value) and "GATEWAY_WEBHOOK_SECRET " in str(default.value)
    assert reason in str(per_client.value) and "entry 2 (client 'bob')" in str(per_client.value)
    shown = secret.removeprefix("whsec_")
    for error in (default.value, per_client.value):
        assert not shown or shown not in str(error)


@pytest.mark.parametrize("entry", [f"bob{OTHER}", f":{OTHER}", "bob:", f"bob:{GOOD},bob:{OTHER}"])
def test_a_malformed_secrets_entry_is_refused(entry: str) -> None:
    with pytest.raises(WebhookSecretError, match="GATEWAY_WEBHOOK_SECRETS entry"):
        WebhookSigner.from_settings(None, entry.split(","))


BAD = "whsec_this-is-not-base64-but-a-secret-all-the-same"


@pytest.mark.parametrize(
    "env",
    [{"GATEWAY_WEBHOOK_SECRET": BAD}, {"GATEWAY_WEBHOOK_SECRETS": f"alice:{BAD}"}],
    ids=["default", "per-client"],
)
def test_api_and_worker_refuse_to_start_with_a_malformed_secret(
    redis_url: str, upstream_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    stack = Stack(redis_url, upstream_url, tmp_path, env=env)
    with pytest.raises(RuntimeError, match="API exited"):
        stack.start_api()
    worker = stack.start_worker()
    try:
        assert worker.wait(timeout=60) != 0
    except subprocess.TimeoutExpired:
        stack.stop_all()
        raise
    logs = stack.log_text()
    assert logs.count("WebhookSecretError") >= 2  # the API's and the worker's
    assert "standard base64" in logs
    assert BAD.removeprefix("whsec_") not in logs
