"""Prometheus metrics of this process (``prometheus_client``'s default registry).

Webhook delivery counts its attempts here; the operations work exposes the registry (``/metrics``
on the API, a metrics port on each worker) and adds its own metrics alongside.
"""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_ATTEMPTS = Counter(
    "webhook_attempts",
    "Webhook delivery attempts, by outcome (delivered, failed, gave_up).",
    ["outcome"],
)
WEBHOOK_DEAD_LETTERS = Counter(
    "webhook_dead_letters",
    "Webhook events whose delivery failed for good (schedule exhausted, 410, refused address).",
)
