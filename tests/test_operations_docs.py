"""docs/OPERATIONS.md's example alerts are valid rule files that name only metrics the gateway
exports, one alert per failure mode."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import app.platform.metrics  # noqa: F401 - registers every metric

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "OPERATIONS.md").read_text()


def _rules() -> list[dict[str, object]]:
    block = re.search(r"^```yaml\n(.*?)^```$", DOC, flags=re.MULTILINE | re.DOTALL)
    assert block
    loaded = yaml.safe_load(block.group(1))
    rules: list[dict[str, object]] = loaded["groups"][0]["rules"]
    return rules


def _exported_samples() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("gateway_"):
            names.add(family.name)
            for sample in family.samples:
                names.add(sample.name)
            names |= {family.name + s for s in ("_total", "_bucket", "_count", "_sum")}
    return names


def test_every_alert_names_only_exported_metrics() -> None:
    exported = _exported_samples()
    for rule in _rules():
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        used = set(re.findall(r"\bgateway_[a-z_]+", str(rule["expr"])))
        assert used and used <= exported, (rule["alert"], used - exported)


def test_there_is_an_alert_for_each_failure_mode() -> None:
    exprs = " ".join(str(rule["expr"]) for rule in _rules())
    for metric in (
        "gateway_workers_alive",  # no worker heartbeat
        "gateway_oldest_waiting_seconds",  # queue age
        "gateway_webhook_dead_letters_total",  # webhook give-ups
        "gateway_upstream_requests_total",  # upstream errors
        "gateway_http_requests_total",  # API errors
    ):
        assert metric in exprs, metric
