"""Prometheus metrics of this process (``prometheus-client``'s default registry).

Webhook delivery counts its attempts here. The operations work (issue 7) defines the rest of the
gateway's metrics in this module, with these two under the same names, and exposes the registry
(``/metrics`` on the API, a metrics port on each worker).
"""

from __future__ import annotations

from prometheus_client import Counter

# -- webhooks (recorded by the webhook delivery code) -----------------------------------------
WEBHOOK_ATTEMPTS = Counter(
    "gateway_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, failed, gave_up)",
    ["outcome"],
)
WEBHOOK_DEAD_LETTERS = Counter(
    "gateway_webhook_dead_letters", "Webhook events given up on after the last retry"
)
