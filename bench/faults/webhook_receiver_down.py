"""Fault 3: the webhook receiver is down for the first attempts, then up.

    .venv/bin/python bench/faults/webhook_receiver_down.py [--exports 50] [--down-seconds 8]

``--exports`` exports with a ``callback_url`` complete within a few seconds while the receiver
is not listening at all (connections refused) for ``--down-seconds``; once it listens, it still
answers 503 to the first two attempts of every event, then 204
(GATEWAY_WEBHOOK_RETRY_SCHEDULE=1,2,4,8,16,32). Expected: every event is delivered (exactly
one 2xx per webhook-id, all signatures valid), and ``GET /v1/exports/{id}/deliveries`` records
every attempt: the refused ones and the 503s as ``failed``, the last as ``delivered``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from app.platform.localredis import free_port
from bench._common import (
    AUTH,
    Receiver,
    final_states,
    outcome_report,
    print_machine,
    print_report,
    private_run,
    submit_many,
    webhooks_summary,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=50)
    parser.add_argument("--down-seconds", type=float, default=8)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    print_machine()
    print(
        f"webhook receiver down: {args.exports} exports; receiver refuses connections for "
        f"{args.down_seconds:g} s, then answers 503 to each event's first 2 attempts",
        flush=True,
    )
    with private_run(
        {"task_seconds": 1, "task_seconds_max": 3},
        GATEWAY_POLL_INITIAL_SECONDS="0.3",
        GATEWAY_POLL_MAX_SECONDS="1",
        GATEWAY_QUEUE_POLL_SECONDS="0.1",
        GATEWAY_WEBHOOK_RETRY_SCHEDULE="1,2,4,8,16,32",
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="100",
        GATEWAY_UPSTREAM_MAX_RPS="200",
    ) as run:
        receiver = Receiver(free_port(), run.procs, fail_first=2)
        api = run.procs.api()
        run.procs.worker()
        bodies = [
            {
                "filter": f"created_time>=2020-01-01 and signer_id==down-{n}",
                "callback_url": f"{receiver.url}/hooks",
            }
            for n in range(args.exports)
        ]
        started = time.monotonic()
        threading.Timer(args.down_seconds, receiver.start).start()
        ids = asyncio.run(submit_many([api], bodies))
        final = asyncio.run(final_states(api, ids, timeout=args.timeout))
        deadline = time.monotonic() + args.timeout
        delivered: set[str] = set()
        while time.monotonic() < deadline:
            if receiver.process is not None:
                attempts = receiver.received()
                delivered = {a["id"] for a in attempts if a.get("valid") and a["status"] < 300}
                if len(delivered) >= len(ids):
                    break
            time.sleep(1)
        time.sleep(1)  # let the last attempts be recorded
        logs: dict[str, list[dict[str, object]]] = {}
        with httpx.Client(base_url=api, headers=AUTH, timeout=30) as client:
            for export_id in ids:
                logs[export_id] = client.get(f"/v1/exports/{export_id}/deliveries").json()["data"]
        elapsed = time.monotonic() - started
        stats = run.sandbox.stats()
        attempts = receiver.received()
    completed = sum(1 for b in final.values() if b["status"] == "completed")
    summary = webhooks_summary(attempts, completed)
    recorded = sum(len(entries) for entries in logs.values())
    refused = sum(1 for e in logs.values() for a in e if a["status_code"] is None)
    answered_503 = sum(1 for e in logs.values() for a in e if a["status_code"] == 503)
    complete_logs = sum(
        1
        for entries in logs.values()
        if entries
        and entries[-1]["outcome"] == "delivered"
        and all(a["outcome"] == "failed" for a in entries[:-1])
        and len(entries) >= 3
    )
    duplicates_2xx = len([a for a in attempts if a.get("valid") and a["status"] < 300]) - len(
        {a["id"] for a in attempts if a.get("valid") and a["status"] < 300}
    )
    report = outcome_report(final, stats, distinct_queries=args.exports)
    report |= summary
    report["attempts_recorded_by_gateway"] = recorded
    report["attempts_refused_connection"] = refused
    report["attempts_answered_503"] = answered_503
    report["exports_whose_log_ends_delivered_after_failures"] = complete_logs
    report["events_delivered_twice"] = duplicates_2xx
    report["seconds"] = round(elapsed, 1)
    print_report(report)
    ok = (
        completed == args.exports
        and summary["webhook_events_delivered"] == args.exports
        and summary["webhook_bad_signatures"] == 0
        and complete_logs == args.exports
        and recorded >= summary["webhook_attempts"]
    )
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
