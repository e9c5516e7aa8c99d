"""Benchmark 3, scale of one worker: N exports in flight at once against the sandbox.

    .venv/bin/python bench/worker_scale.py [--count 10000] [--task-seconds 10]
        [--task-seconds-max 120] [--poll-max 10]

N exports with distinct filters (so N upstream tasks; durations spread evenly over
task-seconds..task-seconds-max by the sandbox) are submitted as fast as 50 concurrent clients
can to one API process; then ONE worker process is started, so that all N are in flight at
once when it begins (``--worker-during-submission`` starts it first instead); the upstream limits
(GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS, GATEWAY_UPSTREAM_MAX_RPS) are set high so they do not
throttle. It prints:

* peak RSS of the worker (VmRSS sampled every 0.2 s);
* Redis memory per export: (used_memory once every export is submitted and running, minus
  used_memory before the first) / N, and the same with the peak used_memory;
* completion-detection lag p50/p95/p99/max: for each task, the wall time of the first upstream
  answer that showed it complete (recorded by the sandbox as it sends that answer, see
  bench/_sandbox_server.py) minus the task's own completion time (the sandbox's clock, the
  same machine). The gateway stores ``completed_at`` as upstream's time, so that field cannot
  show the lag; the answer's send time is when the worker learns of the completion (its
  Redis write follows within milliseconds);
* upstream requests per export against what the poll schedule implies for each task's duration
  (1 create + the polls of the schedule initial*multiplier^k capped at poll-max up to the
  first poll at or after completion);
* total wall time, from the first submission until the last task finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import redis

from app.platform import keys
from bench._common import AUTH, cpu_seconds, percentile, print_machine, private_run, rss_kib


def implied_requests(duration: float, initial: float, multiplier: float, cap: float) -> int:
    """1 create + the polls the schedule makes until the first one at or after ``duration``."""
    polls, elapsed, wait = 0, 0.0, initial
    while True:
        elapsed += wait
        polls += 1
        if elapsed >= duration:
            return 1 + polls
        wait = min(initial * multiplier**polls, cap)


def used_memory(r: redis.Redis) -> int:
    info: dict[str, Any] = r.info("memory")  # type: ignore[assignment]
    return int(info["used_memory"])


def mget(r: redis.Redis, names: list[str]) -> list[str | None]:
    values: list[str | None] = []
    for start in range(0, len(names), 1000):
        values += r.mget(names[start : start + 1000])  # type: ignore[arg-type]
    return values


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kib = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            rss = rss_kib(self.pid)
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
            self.stop_event.wait(self.every)


async def submit_all(api: str, count: int, concurrency: int) -> list[str]:
    ids: list[str] = [""] * count
    next_n = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=api, headers=AUTH, timeout=60, limits=limits) as client:

        async def submitter() -> None:
            for n in next_n:
                body = {"filter": f"created_time>=2020-01-01 and signer_id==scale-{n}"}
                problem = ""
                for attempt in range(10):
                    try:
                        response = await client.post("/v1/exports", json=body)
                    except httpx.HTTPError as exc:  # e.g. a connection reset under load
                        problem = repr(exc)
                    else:
                        if response.status_code == 202:
                            ids[n] = response.json()["id"]
                            break
                        problem = str(response.status_code)
                    await asyncio.sleep(0.5 * (attempt + 1))
                else:
                    raise RuntimeError(f"submission {n} failed: {problem}")

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--task-seconds", type=float, default=10)
    parser.add_argument("--task-seconds-max", type=float, default=120)
    parser.add_argument("--poll-initial", type=float, default=2)
    parser.add_argument("--poll-multiplier", type=float, default=1.5)
    parser.add_argument("--poll-max", type=float, default=10)
    parser.add_argument("--submitters", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this")
    parser.add_argument("--worker-env", action="append", default=[], help="NAME=value")
    parser.add_argument(
        "--worker-during-submission",
        action="store_true",
        help="start the worker before submitting (default: after, so all N are in flight at "
        "once when it starts)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--profile-worker",
        metavar="PATH",
        help="record the worker with py-spy (must be installed) into PATH (collapsed stacks)",
    )
    args = parser.parse_args()
    print_machine()
    print(
        f"worker scale: {args.count} exports, task durations {args.task_seconds:g}-"
        f"{args.task_seconds_max:g} s, poll {args.poll_initial:g} s x{args.poll_multiplier:g} "
        f"capped at {args.poll_max:g} s, one worker",
        flush=True,
    )
    overrides = dict(item.split("=", 1) for item in args.worker_env)
    with private_run(
        {"task_seconds": args.task_seconds, "task_seconds_max": args.task_seconds_max},
        GATEWAY_POLL_INITIAL_SECONDS=str(args.poll_initial),
        GATEWAY_POLL_MULTIPLIER=str(args.poll_multiplier),
        GATEWAY_POLL_MAX_SECONDS=str(args.poll_max),
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="100000",
        GATEWAY_UPSTREAM_MAX_RPS="5000",
        **overrides,
    ) as run:
        api = run.procs.api()
        r: redis.Redis = redis.Redis.from_url(run.redis.url, decode_responses=True)
        time.sleep(1)
        memory_before = used_memory(r)
        peak_memory = [memory_before]

        def sample_memory() -> int:
            used = used_memory(r)
            peak_memory[0] = max(peak_memory[0], used)
            return used

        def start_worker() -> tuple[subprocess.Popen[bytes], RssSampler, Any]:
            worker = run.procs.worker()
            sampler = RssSampler(worker.pid)
            sampler.start()
            spy = None
            if args.profile_worker:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                        "--rate", "100", "-o", args.profile_worker, "--pid", str(worker.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            return worker, sampler, spy

        started = time.time()
        if args.worker_during_submission:
            worker, sampler, spy = start_worker()
        ids = asyncio.run(submit_all(api, args.count, args.submitters))
        submitted_in = time.time() - started
        memory_submitted = sample_memory()
        print(
            f"submitted {len(ids)} in {submitted_in:.1f} s ({len(ids) / submitted_in:.0f}/s); "
            f"Redis used_memory +{(memory_submitted - memory_before) / 1024:.0f} KiB",
            flush=True,
        )
        if not args.worker_during_submission:
            worker, sampler, spy = start_worker()
        deadline = started + args.timeout
        open_tasks = r.zcard(keys.OPEN_TASKS)
        memory_running: int | None = None
        last_print = 0.0
        while open_tasks and time.time() < deadline:
            time.sleep(0.5)
            used = sample_memory()
            waiting = r.zcard(keys.UPSTREAM_WAITING)
            open_tasks = r.zcard(keys.OPEN_TASKS)
            if memory_running is None and waiting == 0:
                # every task has left the queue for upstream: all exports in flight at once
                memory_running = used
            if time.time() - last_print > 10:
                last_print = time.time()
                print(
                    f"  t+{time.time() - started:5.0f} s: {open_tasks} tasks open, "
                    f"worker RSS {(rss_kib(worker.pid) or 0) / 1024:.0f} MiB",
                    flush=True,
                )
        wall = time.time() - started
        sampler.stop_event.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        worker_cpu = cpu_seconds(worker.pid)
        finished = args.count - open_tasks
        raw_exports = mget(r, [keys.export(i) for i in ids])
        task_ids = [json.loads(raw)["task_id"] for raw in raw_exports if raw]
        statuses: dict[str, int] = {}
        for raw in mget(r, [keys.task(t) for t in task_ids]):
            status = json.loads(raw)["status"] if raw else "missing"
            statuses[status] = statuses.get(status, 0) + 1
        r.close()
        stats = run.sandbox.stats()
        tasks = run.sandbox.tasks()
    lags = [
        t["first_seen_complete"] - t["finished"]
        for t in tasks
        if t["first_seen_complete"] is not None and t["finished"] is not None
    ]
    implied = sum(
        implied_requests(t["duration"], args.poll_initial, args.poll_multiplier, args.poll_max)
        for t in tasks
        if t["duration"] is not None
    )
    over = [
        t
        for t in tasks
        if t["duration"] is not None
        and 1 + t["polls"]
        > implied_requests(t["duration"], args.poll_initial, args.poll_multiplier, args.poll_max)
    ]
    api_requests = int(stats["api_requests_total"])
    memory_running = memory_running or memory_submitted
    figures: dict[str, Any] = {
        "count": args.count,
        "finished": finished,
        "statuses": statuses,
        "upstream_tasks_created": stats["tasks_created"],
        "wall_seconds": round(wall, 1),
        "submit_seconds": round(submitted_in, 1),
        "worker_peak_rss_mib": round(sampler.peak_kib / 1024, 1),
        "worker_cpu_seconds": round(worker_cpu, 1),
        "redis_bytes_per_export_in_flight": round((memory_running - memory_before) / args.count),
        "redis_bytes_per_export_peak": round((peak_memory[0] - memory_before) / args.count),
        "lag_p50_s": round(percentile(lags, 50), 3),
        "lag_p95_s": round(percentile(lags, 95), 3),
        "lag_p99_s": round(percentile(lags, 99), 3),
        "lag_max_s": round(max(lags), 3) if lags else None,
        "upstream_requests": api_requests,
        "upstream_requests_per_export": round(api_requests / args.count, 2),
        "implied_requests_per_export": round(implied / args.count, 2),
        "tasks_polled_more_than_schedule": len(over),
        "max_requests_in_any_1s": stats["max_requests_in_any_1s_window"],
    }
    print("results:")
    for name, value in figures.items():
        print(f"  {name}: {value}")
    lag_target = args.poll_max + 1
    print(
        "targets: "
        f"RSS<200MiB {'met' if figures['worker_peak_rss_mib'] < 200 else 'MISSED'}, "
        f"Redis<4KiB/export "
        f"{'met' if figures['redis_bytes_per_export_peak'] < 4096 else 'MISSED'}, "
        f"lag p99<{lag_target:g}s {'met' if figures['lag_p99_s'] < lag_target else 'MISSED'}, "
        f"requests<=schedule "
        f"{'met' if api_requests <= implied and not over else 'MISSED'}, "
        f"all finished {'yes' if finished == args.count else 'NO'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if finished != args.count:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
