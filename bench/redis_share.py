"""One Redis's share of an export: commands, bytes and memory per export, from INFO.

    .venv/bin/python bench/redis_share.py [--exports 300] [--workers 1]

A private Redis (its counters reset first), the sandbox upstream (tasks of 2-4 s, or
``--task-seconds`` to twice that: longer tasks take more poll steps), one API
process and ``--workers`` workers. ``--exports`` exports of distinct queries, each with a
callback, run from submission to the delivered ``export.completed`` webhook. Printed: Redis
commands per export (from ``INFO commandstats``: every call, scripts counted once each as
EVALSHA), network bytes in and out per export (``INFO stats``), the memory its records hold
(``used_memory`` growth), the upstream polls per export, and the commands that cost most.
Redis runs commands on one thread: its ceiling is roughly its commands per second on the
host, and this turns that into exports.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.platform.localredis import free_port
from bench._common import (
    Receiver,
    final_states,
    print_machine,
    private_run,
    submit_many,
    wait_for_webhooks,
)


def counters(client: redis.Redis) -> dict[str, Any]:
    commands: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    stats: dict[str, Any] = client.info("stats")  # type: ignore[assignment]
    memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
    return {
        "calls": {name.removeprefix("cmdstat_"): v["calls"] for name, v in commands.items()},
        "usec": {name.removeprefix("cmdstat_"): v["usec"] for name, v in commands.items()},
        "in": stats["total_net_input_bytes"],
        "out": stats["total_net_output_bytes"],
        "memory": memory["used_memory"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--task-seconds", type=float, default=2, help="shortest sandbox task")
    args = parser.parse_args()
    print_machine()
    with private_run(
        {"task_seconds": args.task_seconds, "task_seconds_max": args.task_seconds * 2},
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="1000",
        GATEWAY_UPSTREAM_MAX_RPS="1000",
        GATEWAY_WEBHOOK_RETRY_SCHEDULE="0.5,1,2",
    ) as run:
        client = redis.Redis(port=run.redis.port)
        receiver = Receiver(free_port(), run.procs).start()
        api = run.procs.api()
        for n in range(args.workers):
            run.procs.worker(f"worker-{n}")
        time.sleep(2)  # the workers' start-up traffic stays out of the count
        client.config_resetstat()
        before = counters(client)
        idle_started = time.monotonic()
        bodies = [
            {"filter": f"signer_id==share-{n}", "callback_url": f"{receiver.url}/hooks"}
            for n in range(args.exports)
        ]
        started = time.monotonic()
        ids = asyncio.run(submit_many([api], bodies))
        final = asyncio.run(final_states(api, ids, timeout=300))
        wait_for_webhooks(receiver, len(ids), deadline=time.monotonic() + 120)
        elapsed = time.monotonic() - started
        after = counters(client)
        polls = sum(task["polls"] for task in run.sandbox.stats()["tasks"])
    completed = sum(1 for body in final.values() if body.get("status") == "completed")
    calls = {name: count - before["calls"].get(name, 0) for name, count in after["calls"].items()}
    usec = {name: u - before["usec"].get(name, 0) for name, u in after["usec"].items()}
    total_calls = sum(calls.values())
    # The workers' idle traffic (heartbeats, queue polls, sweeps) over the run counts too: it
    # is part of what the exports cost while they run.
    n = args.exports
    print(f"{n} exports, {completed} completed, {elapsed:.1f} s, {args.workers} worker(s)")
    print(f"upstream polls per export: {polls / n:.1f}")
    print(f"Redis commands per export: {total_calls / n:.1f}")
    print(f"Redis CPU per export: {sum(usec.values()) / n / 1000:.2f} ms (commandstats usec)")
    print(f"network in per export: {(after['in'] - before['in']) / n / 1024:.1f} KiB")
    print(f"network out per export: {(after['out'] - before['out']) / n / 1024:.1f} KiB")
    print(f"memory held per export: {(after['memory'] - before['memory']) / n / 1024:.1f} KiB")
    print(f"(idle span before submitting: {started - idle_started:.2f} s)")
    print("top commands (calls per export, Redis CPU ms per export):")
    for name, count in sorted(calls.items(), key=lambda item: -item[1])[:12]:
        print(f"  {name:<16} {count / n:7.1f}  {usec[name] / n / 1000:6.3f}")


if __name__ == "__main__":
    main()
