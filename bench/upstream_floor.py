"""What polling upstream costs one process in HTTP alone: the floor under benchmark 3.

    .venv/bin/python bench/upstream_floor.py [--requests 6000] [--concurrency 200]

Starts the sandbox (its own process), creates ``--tasks`` upstream tasks that never finish,
then sends ``--requests`` task reads (``GET /tasks/export/:id``, what a poll step sends) from
this process, ``--concurrency`` at a time, with nothing else: no Redis, no job queue, no
parsing beyond ``json()``. Once with the gateway's own upstream client
(``app.wiring.runtime.upstream_http``: 25 pools of 4 connections) and once with one pool of 100
connections, 20 kept alive (the client before 2026-11-27). It prints, per client, the
requests per second, this process's CPU per request, and the sandbox's CPU per request.

Runs on uvloop, as the worker does. One worker process can never poll faster than
1 / (its CPU per request): with a 10 s poll cap,
10,000 tasks in flight need 1,000 polls a second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvloop

from app.config import Settings
from app.wiring.runtime import upstream_http
from bench._common import SANDBOX_TOKEN, Processes, cpu_seconds, print_machine, start_sandbox

HEADERS = {"Authorization": f"Bearer {SANDBOX_TOKEN}", "Accept": "application/json"}


async def create_tasks(base: str, count: int) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        ids: list[str] = []
        for n in range(count):
            response = await client.post(
                f"{base}/tasks/export/activity", params={"filter": f"id=={n}"}, headers=HEADERS
            )
            response.raise_for_status()
            body = response.json()
            ids.append(str(body["data"]["id"] if "id" not in body else body["id"]))
        return ids


async def reads(
    client: httpx.AsyncClient, base: str, ids: list[str], requests: int, concurrency: int
) -> tuple[float, float]:
    """(requests per second, CPU seconds of this process per request)."""
    slots = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(n: int) -> None:
        nonlocal failures
        async with slots:
            response = await client.get(f"{base}/tasks/export/{ids[n % len(ids)]}", headers=HEADERS)
            response.json()
            failures += not response.is_success

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in range(requests)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if failures:
        raise SystemExit(f"{failures} requests failed")
    return requests / wall, cpu / requests


async def measure(args: argparse.Namespace, base: str, sandbox_pid: int) -> None:
    ids = await create_tasks(base, args.tasks)

    def one_big_pool() -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        return httpx.AsyncClient(timeout=30, limits=limits)

    clients: dict[str, Callable[[], httpx.AsyncClient]] = {
        "gateway client (25 pools x 4)": lambda: upstream_http(Settings()),
        "one pool of 100, 20 kept alive": one_big_pool,
    }
    for round_ in range(args.rounds):
        for label, make in clients.items():
            async with make() as client:
                await reads(client, base, ids, min(500, args.requests), args.concurrency)  # warm
                sandbox_cpu = cpu_seconds(sandbox_pid)
                rate, cpu = await reads(client, base, ids, args.requests, args.concurrency)
                sandbox_cpu = (cpu_seconds(sandbox_pid) - sandbox_cpu) / args.requests
            print(
                f"round {round_ + 1} {label:32s} {rate:7.0f} req/s   this process "
                f"{cpu * 1e6:5.0f} us CPU/request (at most {1 / cpu:5.0f}/s)   sandbox "
                f"{sandbox_cpu * 1e6:4.0f} us/request",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory(prefix="gw-floor-") as logs:
        procs = Processes(Path(logs), {})
        try:
            sandbox = start_sandbox(procs, {"task_seconds": 86400})
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the worker's loop
            asyncio.run(measure(args, sandbox.base_url, sandbox.process.pid))
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
