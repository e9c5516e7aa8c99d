"""Webhook signing secrets and signatures, by the Standard Webhooks reference library.

Each client's webhooks are signed with its own secret from ``GATEWAY_WEBHOOK_SECRETS``
(``client_id:whsec_...`` pairs), else with ``GATEWAY_WEBHOOK_SECRET``. A secret must be
``whsec_`` followed by standard base64 (padding optional) of at least 24 bytes, as the Standard
Webhooks specification recommends; anything else stops the process at startup
(``WebhookSecretError``), with a message that names the setting and the client but never shows
the secret. URL-safe base64 is refused on purpose: receivers' libraries decode standard base64,
and some silently drop the ``-``/``_`` characters, which would make every signature fail.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix, not a secret)
MIN_SECRET_BYTES = 24


class WebhookSecretError(ValueError):
    """A configured webhook secret is unusable; the message never contains the secret."""


def _decode(secret: str, where: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError(f"{where} must start with {SECRET_PREFIX!r}")
    body = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError(
            f"{where} is not {SECRET_PREFIX} followed by standard base64"
        ) from None
    if len(raw) < MIN_SECRET_BYTES:
        raise WebhookSecretError(
            f"{where} decodes to {len(raw)} bytes; at least {MIN_SECRET_BYTES} are required"
        )
    return raw


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    webhook_id: str
    timestamp: int
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "webhook-id": self.webhook_id,
            "webhook-timestamp": str(self.timestamp),
            "webhook-signature": self.signature,
        }


class WebhookSigner:
    """Which secret signs each client's webhooks, and the signing itself."""

    def __init__(self, default: Webhook | None, per_client: dict[str, Webhook]) -> None:
        self._default = default
        self._per_client = per_client

    @classmethod
    def from_settings(
        cls, default: SecretStr | None, pairs: Iterable[SecretStr | str]
    ) -> WebhookSigner:
        """Build from ``GATEWAY_WEBHOOK_SECRET`` and ``GATEWAY_WEBHOOK_SECRETS``; raises
        ``WebhookSecretError`` for any malformed entry (an empty default counts as unset)."""
        default_text = default.get_secret_value().strip() if default is not None else ""
        default_hook = None
        if default_text:
            default_hook = Webhook(_decode(default_text, "GATEWAY_WEBHOOK_SECRET"))
        per_client: dict[str, Webhook] = {}
        for number, pair in enumerate(pairs, start=1):
            text = pair.get_secret_value() if isinstance(pair, SecretStr) else pair
            client_id, sep, secret = text.strip().partition(":")
            client_id, secret = client_id.strip(), secret.strip()
            if not sep or not client_id or not secret:
                raise WebhookSecretError(
                    f"GATEWAY_WEBHOOK_SECRETS entry {number} must look like client_id:whsec_..."
                )
            where = f"GATEWAY_WEBHOOK_SECRETS entry {number} (client {client_id!r})"
            if client_id in per_client:
                raise WebhookSecretError(f"{where} names the client a second time")
            per_client[client_id] = Webhook(_decode(secret, where))
        return cls(default_hook, per_client)

    def has_secret(self, client_id: str) -> bool:
        return client_id in self._per_client or self._default is not None

    def sign(self, client_id: str, webhook_id: str, at: datetime, body: str) -> SignedHeaders:
        """The Standard Webhooks headers for ``body`` (the exact text that is sent) sent at
        ``at`` (an aware UTC time). ``KeyError`` when the client has no secret."""
        hook = self._per_client.get(client_id, self._default)
        if hook is None:
            raise KeyError(client_id)
        return SignedHeaders(webhook_id, int(at.timestamp()), hook.sign(webhook_id, at, body))
