"""Fault 2: stop a persistent Redis (appendonly yes) mid-run and start it again.

    .venv/bin/python bench/faults/redis_restart.py [--exports 100] [--down-seconds 5]

``--exports`` exports (distinct queries, tasks of 2-8 s) run with one API and one worker on a
persistent Redis (``LocalRedis(persistent=True)``: appendonly yes, fsync every second). A few
seconds in, Redis is stopped (SIGTERM: it flushes its append-only file), kept down for
``--down-seconds`` and started again on the same port and data folder. Expected: the API and
the worker reconnect by themselves (neither is restarted by this script; it reports whether
they are still the same processes), and every export completes. Submissions during the
outage are retried by the caller (the API answers 503 meanwhile).
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

from bench._common import (
    AUTH,
    final_states,
    outcome_report,
    print_machine,
    print_report,
    private_run,
    submit_many,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=100)
    parser.add_argument("--down-seconds", type=float, default=5)
    parser.add_argument("--stop-after", type=float, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    print_machine()
    print(
        f"redis restart: {args.exports} exports; Redis stopped {args.stop_after:g} s after the "
        f"first submission, down for {args.down_seconds:g} s",
        flush=True,
    )
    with private_run(
        {"task_seconds": 2, "task_seconds_max": 8},
        persistent_redis=True,
        GATEWAY_POLL_INITIAL_SECONDS="0.5",
        GATEWAY_POLL_MAX_SECONDS="2",
        GATEWAY_QUEUE_POLL_SECONDS="0.1",
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="20",
        GATEWAY_UPSTREAM_MAX_RPS="100",
    ) as run:
        api = run.procs.api()
        api_process = run.procs.servers[api]
        worker = run.procs.worker()
        bodies = [
            {"filter": f"created_time>=2020-01-01 and signer_id==restart-{n}"}
            for n in range(args.exports)
        ]
        outage: dict[str, float] = {}

        def bounce() -> None:
            time.sleep(args.stop_after)
            outage["stopped"] = time.monotonic()
            run.redis.stop()
            time.sleep(args.down_seconds)
            run.redis.start()
            outage["started"] = time.monotonic()

        bouncer = threading.Thread(target=bounce)
        started = time.monotonic()
        bouncer.start()
        ids = asyncio.run(submit_many([api], bodies, concurrency=4, retry_seconds=120))
        bouncer.join()
        during = httpx.get(f"{api}/readyz", timeout=5).status_code
        final = asyncio.run(final_states(api, ids, timeout=args.timeout))
        elapsed = time.monotonic() - started
        stats = run.sandbox.stats()
        api_alive = api_process.poll() is None
        worker_alive = worker.poll() is None
        response = httpx.get(f"{api}/v1/exports/{ids[0]}", headers=AUTH, timeout=5)
    report = outcome_report(final, stats, distinct_queries=args.exports)
    report["redis_down_seconds"] = round(outage["started"] - outage["stopped"], 1)
    report["api_same_process_alive"] = api_alive
    report["worker_same_process_alive"] = worker_alive
    report["readyz_after_restart"] = during
    report["api_answers_after"] = response.status_code
    report["seconds"] = round(elapsed, 1)
    print_report(report)
    ok = (
        report["completed"] == args.exports
        and report["lost"] == 0
        and api_alive
        and worker_alive
        and report["duplicate_upstream_tasks"] == 0
    )
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
