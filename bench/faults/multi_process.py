"""Fault 5: two API processes and three workers on one Redis: the same guarantees.

    .venv/bin/python bench/faults/multi_process.py [--queries 60] [--copies 4]

``--queries`` distinct queries are each submitted ``--copies`` times, all at once, spread over
two API processes; three workers share the work; the sandbox answers 10% of requests with 429
and fails 10% of its tasks. Meanwhile one worker is killed with SIGKILL and restarted, once.
Expected: every export finishes (completed, or upstream_failed exactly when its task failed
upstream) and its webhook (completed or failed) is delivered, upstream tasks created ==
distinct queries, every copy of a query shares its
upstream task, and the shared limits hold across processes: at most
GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS tasks active upstream and at most GATEWAY_UPSTREAM_MAX_RPS
requests in any one-second window, as the sandbox measured them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
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

MAX_ACTIVE = 8
MAX_RPS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    print_machine()
    print(
        f"multi-process: {args.queries} queries x {args.copies} copies over 2 APIs and 3 workers; "
        f"max active {MAX_ACTIVE}, max rps {MAX_RPS}",
        flush=True,
    )
    with private_run(
        {"task_seconds": 1, "task_seconds_max": 4, "fail_rate_429": 0.1, "task_fail_rate": 0.1},
        GATEWAY_POLL_INITIAL_SECONDS="0.3",
        GATEWAY_POLL_MAX_SECONDS="1",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS=str(MAX_ACTIVE),
        GATEWAY_UPSTREAM_MAX_RPS=str(MAX_RPS),
        GATEWAY_WEBHOOK_RETRY_SCHEDULE="0.5,1,2,4,8,16,32",
    ) as run:
        receiver = Receiver(free_port(), run.procs).start()
        apis = [run.procs.api(), run.procs.api()]
        workers = [run.procs.worker(f"worker-{n}") for n in range(3)]
        bodies = [
            {
                "filter": f"created_time>=2020-01-01 and signer_id==multi-{q}",
                "callback_url": f"{receiver.url}/hooks",
            }
            for _ in range(args.copies)
            for q in range(args.queries)
        ]

        def kill_one() -> None:
            time.sleep(4)
            run.procs.stop(workers[0], signal.SIGKILL)
            run.procs.worker("worker-0-restarted")

        killer = threading.Thread(target=kill_one)
        started = time.monotonic()
        killer.start()
        ids = asyncio.run(submit_many(apis, bodies, concurrency=40))
        killer.join()
        final = asyncio.run(final_states(apis[1], ids, timeout=args.timeout))
        attempts = wait_for_webhooks(receiver, len(ids), deadline=started + args.timeout)
        elapsed = time.monotonic() - started
        stats = run.sandbox.stats()
        tasks = {t["id"]: t for t in run.sandbox.tasks()}
    wrong = 0
    by_query: dict[str, set[str | None]] = {}
    for export_id, body in zip(ids, bodies, strict=True):
        seen = final[export_id]
        task = tasks.get(seen.get("upstream_task_id") or "")
        expected = "failed" if task and task["fails"] else "completed"
        code = (seen.get("error") or {}).get("code")
        if seen.get("status") != expected or (expected == "failed" and code != "upstream_failed"):
            wrong += 1
        by_query.setdefault(body["filter"], set()).add(seen.get("upstream_task_id"))
    split = sum(1 for upstream_ids in by_query.values() if len(upstream_ids) != 1)
    report = outcome_report(final, stats, distinct_queries=args.queries)
    report |= webhooks_summary(attempts, len(ids))
    report["wrong_outcomes"] = wrong
    report["queries_split_over_several_tasks"] = split
    report["seconds"] = round(elapsed, 1)
    print_report(report)
    ok = (
        wrong == 0
        and report["lost"] == 0
        and report["upstream_tasks_created"] == args.queries
        and split == 0
        and report["webhook_events_delivered"] == len(ids)
        and report["max_active_upstream_tasks"] <= MAX_ACTIVE
        and report["max_upstream_requests_in_any_1s"] <= MAX_RPS
    )
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
