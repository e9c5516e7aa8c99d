"""Benchmark 4, coalescing: concurrent identical requests share one upstream task.

    .venv/bin/python bench/coalescing.py [--requests 100] [--api-processes 2]

``--requests`` identical ``POST /v1/exports`` are sent at once (one connection each), spread
over ``--api-processes`` API processes on one Redis, with a worker running. It then waits
for every export to complete and prints how many upstream tasks the sandbox saw created
(target: 1), how many exports say ``coalesced: true`` (target: all but one) and whether all
of them got the same upstream task and links.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import AUTH, print_machine, private_run

BODY = {
    "filter": "created_time>=2020-10-10 and event_type==agreed",
    "fields": ["id", "signer_id", "created_time", "connection_data.remote_address"],
    "site_id": 5193,
}


async def fire(apis: list[str], count: int) -> list[dict[str, Any]]:
    clients = [httpx.AsyncClient(base_url=api, headers=AUTH, timeout=60) for api in apis]
    try:
        gate = asyncio.Event()

        async def one(n: int) -> dict[str, Any]:
            await gate.wait()
            response = await clients[n % len(clients)].post("/v1/exports", json=BODY)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        pending = [asyncio.create_task(one(n)) for n in range(count)]
        await asyncio.sleep(0.2)
        gate.set()
        return list(await asyncio.gather(*pending))
    finally:
        for client in clients:
            await client.aclose()


async def wait_all(api: str, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=api, headers=AUTH, timeout=30) as client:
        deadline = time.monotonic() + timeout
        while True:
            answers = await asyncio.gather(*(client.get(f"/v1/exports/{i}") for i in ids))
            bodies = [a.json() for a in answers]
            if all(b["status"] in ("completed", "failed") for b in bodies):
                return bodies
            if time.monotonic() > deadline:
                raise SystemExit("exports did not finish in time")
            await asyncio.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    print_machine()
    print(f"coalescing: {args.requests} identical requests over {args.api_processes} API processes")
    with private_run(
        {"task_seconds": 2},
        GATEWAY_POLL_INITIAL_SECONDS="0.5",
        GATEWAY_POLL_MAX_SECONDS="1",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
    ) as run:
        apis = [run.procs.api() for _ in range(args.api_processes)]
        run.procs.worker()
        started = time.monotonic()
        accepted = asyncio.run(fire(apis, args.requests))
        accept_seconds = time.monotonic() - started
        final = asyncio.run(wait_all(apis[0], [a["id"] for a in accepted], args.timeout))
        stats = run.sandbox.stats()
    created = stats["tasks_created"]
    coalesced = sum(1 for a in accepted if a["coalesced"])
    upstream_ids = {b["upstream_task_id"] for b in final}
    links = {tuple(b["links"]) for b in final}
    completed = sum(1 for b in final if b["status"] == "completed")
    met = created == 1 and coalesced == args.requests - 1 and completed == args.requests
    print("results:")
    print(
        f"  accepted: {len(accepted)} in {accept_seconds:.2f} s, "
        f"{len({a['id'] for a in accepted})} distinct export ids"
    )
    print(f"  coalesced: true on {coalesced} (target {args.requests - 1})")
    print(
        f"  completed: {completed}; distinct upstream task ids: {len(upstream_ids)}; "
        f"distinct link lists: {len(links)}"
    )
    print(f"  upstream tasks created: {created} (target 1)")
    print(f"targets: {'met' if met else 'MISSED'}")
    if created != 1:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
