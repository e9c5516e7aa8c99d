"""Benchmark 5, webhook latency: from completion seen to webhook received.

    .venv/bin/python bench/webhook_latency.py [--count 1000]

``--count`` exports (distinct queries, each with a ``callback_url``) run against the sandbox
(task durations spread over 5-60 s, so completions arrive spread out, as in real use; polls
capped at 10 s) with one API and one worker at the default queue poll interval (0.5 s).
A delivery is one arq job like a poll step, queued by due time: when the worker has more
due polls than it can run (e.g. ``--poll-max 2`` with 1,000 tasks), deliveries wait behind
them, and that backlog, not delivery, is then what the latency measures.

For every export the latency is the receiver's wall time for the first attempt of its
``export.completed`` minus the moment the worker saw the completion: the wall time at which
the sandbox sent the first answer that showed the task complete (bench/_sandbox_server.py).
Target: p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.platform.localredis import free_port
from bench._common import (
    Receiver,
    final_states,
    percentile,
    print_machine,
    private_run,
    submit_many,
    webhooks_summary,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--task-seconds", type=float, default=5)
    parser.add_argument("--task-seconds-max", type=float, default=60)
    parser.add_argument("--poll-max", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--gateway-env", action="append", default=[], help="NAME=value")
    parser.add_argument("--steady-after", type=float, default=30)
    args = parser.parse_args()
    print_machine()
    print(
        f"webhook latency: {args.count} exports with callbacks, task durations "
        f"{args.task_seconds:g}-{args.task_seconds_max:g} s, poll cap {args.poll_max:g} s, "
        "one worker",
        flush=True,
    )
    with private_run(
        {"task_seconds": args.task_seconds, "task_seconds_max": args.task_seconds_max},
        GATEWAY_POLL_INITIAL_SECONDS="0.5",
        GATEWAY_POLL_MAX_SECONDS=str(args.poll_max),
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="100000",
        GATEWAY_UPSTREAM_MAX_RPS="5000",
        **dict(item.split("=", 1) for item in args.gateway_env),
    ) as run:
        receiver = Receiver(free_port(), run.procs).start()
        api = run.procs.api()
        run.procs.worker()
        bodies = [
            {
                "filter": f"created_time>=2020-01-01 and signer_id==hook-{n}",
                "callback_url": f"{receiver.url}/hooks",
                "metadata": {"n": n},
            }
            for n in range(args.count)
        ]
        started = time.monotonic()
        ids = asyncio.run(submit_many([api], bodies, concurrency=20))
        final = asyncio.run(final_states(api, ids, timeout=args.timeout))
        # the last completions' webhooks may still be on their way
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            attempts = receiver.received()
            delivered = {a["export_id"] for a in attempts if a.get("type") == "export.completed"}
            if len(delivered) >= sum(1 for b in final.values() if b["status"] == "completed"):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        tasks = {t["id"]: t for t in run.sandbox.tasks()}
    first_created = min(t["created"] for t in tasks.values())
    first_attempt: dict[str, float] = {}
    for attempt in attempts:
        if attempt.get("type") == "export.completed" and attempt.get("attempt") == 1:
            first_attempt[attempt["export_id"]] = attempt["at"]
    from_seen: list[float] = []
    from_done: list[float] = []
    steady: list[float] = []  # completions seen once the start-up burst is over
    for export_id, body in final.items():
        task = tasks.get(body.get("upstream_task_id") or "")
        received = first_attempt.get(export_id)
        if task is None or received is None or task["first_seen_complete"] is None:
            continue
        from_seen.append(received - task["first_seen_complete"])
        from_done.append(received - task["finished"])
        if task["first_seen_complete"] - first_created > args.steady_after:
            steady.append(received - task["first_seen_complete"])
    completed = sum(1 for b in final.values() if b["status"] == "completed")
    summary = webhooks_summary(attempts, completed)
    print("results:")
    print(f"  exports: {len(final)}, completed: {completed}, seconds: {elapsed:.1f}")
    for name, value in summary.items():
        print(f"  {name}: {value}")
    print(
        f"  completion seen -> webhook received: p50 {percentile(from_seen, 50):.3f} s  "
        f"p99 {percentile(from_seen, 99):.3f} s  max {max(from_seen, default=float('nan')):.3f} s"
        f"  (n={len(from_seen)})"
    )
    under = sum(1 for x in from_seen if x < 1) / max(1, len(from_seen)) * 100
    print(
        f"  same, p90 {percentile(from_seen, 90):.3f} s  p95 {percentile(from_seen, 95):.3f} s; "
        f"{under:.1f} % under 1 s"
    )
    print(
        f"  same, for completions seen more than {args.steady_after:g} s after the first upstream "
        f"task was created (after the start-up burst): p50 {percentile(steady, 50):.3f} s  "
        f"p99 {percentile(steady, 99):.3f} s  (n={len(steady)})"
    )
    print(
        f"  upstream completion -> webhook received (includes polling): "
        f"p50 {percentile(from_done, 50):.3f} s  p99 {percentile(from_done, 99):.3f} s"
    )
    p99 = percentile(from_seen, 99)
    print(f"targets: p99 < 1 s {'met' if p99 < 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
