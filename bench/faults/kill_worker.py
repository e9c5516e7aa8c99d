"""Fault 1: SIGKILL the worker at random moments while exports run, restart it each time.

    .venv/bin/python bench/faults/kill_worker.py [--exports 200] [--chaos-seconds 30] [--seed 1]

``--exports`` exports (distinct queries) run against the sandbox (tasks of 1-6 s, fast
polling) and one worker. During the first ``--chaos-seconds`` the worker is killed with
SIGKILL at random moments (1-4 s apart), then restarted at once. Afterwards one worker runs
until every export is finished or ``--timeout`` passes. Expected: every export completes, its
``export.completed`` webhook is delivered at least once, and upstream tasks created == distinct
queries. One duplicate is possible per kill that lands while a create request is in flight
(after upstream made the task, before the gateway saved its id): upstream has no idempotency
key and no task listing, so the rerun cannot know; such orphans are counted apart. A job
killed mid-run is retried by arq once its in-progress marker expires (the worker's
job_timeout + 10 s); a step lost altogether (a kill between dispatching a task into a slot
and scheduling its start) waits for the sweep. Those two bound the recovery time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.platform.localredis import free_port
from bench._common import (
    Receiver,
    final_states,
    outcome_report,
    print_machine,
    print_report,
    private_run,
    submit_many,
    wait_for_webhooks,
    webhooks_summary,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--chaos-seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=420)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print_machine()
    print(
        f"kill worker: {args.exports} exports, SIGKILL the worker every 1-4 s for "
        f"{args.chaos_seconds:g} s (seed {args.seed})",
        flush=True,
    )
    with private_run(
        {"task_seconds": 1, "task_seconds_max": 6},
        GATEWAY_POLL_INITIAL_SECONDS="0.3",
        GATEWAY_POLL_MAX_SECONDS="1",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="50",
        GATEWAY_UPSTREAM_MAX_RPS="200",
        GATEWAY_WEBHOOK_RETRY_SCHEDULE="0.5,1,2,4,8,16,32",
    ) as run:
        receiver = Receiver(free_port(), run.procs).start()
        api = run.procs.api()
        worker = run.procs.worker("worker-0")
        bodies = [
            {
                "filter": f"created_time>=2020-01-01 and signer_id==kill-{n}",
                "callback_url": f"{receiver.url}/hooks",
            }
            for n in range(args.exports)
        ]
        started = time.monotonic()
        ids = asyncio.run(submit_many([api], bodies))
        kills = 0
        chaos_until = time.monotonic() + args.chaos_seconds
        while time.monotonic() < chaos_until:
            time.sleep(rng.uniform(1, 4))
            run.procs.stop(worker, signal.SIGKILL)
            kills += 1
            worker = run.procs.worker(f"worker-{kills}")
        print(f"killed the worker {kills} times; waiting for every export", flush=True)
        final = asyncio.run(final_states(api, ids, timeout=args.timeout))
        completed = sum(1 for body in final.values() if body.get("status") == "completed")
        # a delivery killed mid-flight is rerun once arq's in-progress marker expires
        attempts = wait_for_webhooks(receiver, completed, deadline=time.monotonic() + 180)
        elapsed = time.monotonic() - started
        stats = run.sandbox.stats()
    report = outcome_report(final, stats, distinct_queries=args.exports)
    report |= webhooks_summary(attempts, report["completed"])
    report["kills"] = kills
    report["seconds"] = round(elapsed, 1)
    print_report(report)
    ok = (
        report["completed"] == args.exports
        and report["duplicates_serving_exports"] == 0
        and report["webhook_events_delivered"] == args.exports
    )
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} (duplicate upstream tasks: "
        f"{report['duplicate_upstream_tasks']}, each an orphan of a create whose answer a killed "
        "worker never saved)"
        if report["duplicate_upstream_tasks"]
        else f"verdict: {'PASS' if ok else 'FAIL'}"
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
