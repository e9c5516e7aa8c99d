"""Benchmark 1, status reads: ``GET /v1/exports/{id}`` vs a bare route doing one Redis GET.

    .venv/bin/python bench/status_reads.py [--rounds 3] [--seconds 10] [--concurrency 50]

One uvicorn process serves the gateway, another the bare app (bench/bare_app.py), both on the
same private Redis. 100 exports are submitted and left ``running`` (the worker created their
upstream tasks, which last an hour, then was stopped so it takes no CPU); the bare app reads the
same exports' JSON from plain keys. The same load generator (bench/_loadgen.py, its own
process, concurrency 50) runs alternately against each; targets: at least 0.7 of the bare
route's throughput, p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import redis

from bench._common import (
    AUTH,
    compare_rounds,
    loadgen,
    measured,
    print_machine,
    private_run,
    report_ratio,
    summarise,
)

EXPORTS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    print_machine()
    print(
        f"status reads: {args.rounds} rounds x {args.seconds:g} s per side, "
        f"concurrency {args.concurrency}"
    )
    with private_run(
        {"task_seconds": 3600},
        GATEWAY_POLL_INITIAL_SECONDS="600",
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="1000",
        GATEWAY_UPSTREAM_MAX_RPS="1000",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
    ) as run:
        api = run.procs.api()
        worker = run.procs.worker()
        ids: list[str] = []
        with httpx.Client(base_url=api, headers=AUTH, timeout=30) as client:
            for n in range(EXPORTS):
                body = {"filter": f"created_time>=2020-01-01 and signer_id==reader-{n}"}
                response = client.post("/v1/exports", json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])
            deadline = time.monotonic() + 120
            pending = set(ids)
            while pending and time.monotonic() < deadline:
                for export_id in list(pending):
                    if client.get(f"/v1/exports/{export_id}").json()["status"] == "running":
                        pending.discard(export_id)
                time.sleep(0.2)
            if pending:
                raise SystemExit(f"{len(pending)} exports never started running")
            run.procs.stop(worker)
            sample = client.get(f"/v1/exports/{ids[0]}")
            bodies = {i: client.get(f"/v1/exports/{i}").content for i in ids}
        print(
            f"export JSON: {len(sample.content)} bytes, "
            f"Retry-After {sample.headers.get('retry-after')}"
        )
        r = redis.Redis.from_url(run.redis.url)
        for export_id, raw in bodies.items():
            r.set(f"bare:{export_id}", raw)
        r.close()
        bare = run.procs.uvicorn("bench.bare_app:app")
        pid, bare_pid = run.procs.servers[api].pid, run.procs.servers[bare].pid
        gateway_paths = [f"/v1/exports/{i}" for i in ids]
        bare_paths = [f"/bare/{i}" for i in ids]

        def gateway_round() -> dict[str, Any]:
            return measured(
                pid,
                lambda: loadgen(
                    api, gateway_paths, seconds=args.seconds, concurrency=args.concurrency,
                    headers=AUTH,
                ),
            )  # fmt: skip

        def bare_round() -> dict[str, Any]:
            return measured(
                bare_pid,
                lambda: loadgen(
                    bare, bare_paths, seconds=args.seconds, concurrency=args.concurrency
                ),
            )

        gateway_results, bare_results = compare_rounds(
            "gateway", gateway_round, "bare", bare_round, args.rounds
        )
    print("results:")
    gateway_sum = summarise("gateway", gateway_results)
    bare_sum = summarise("bare", bare_results)
    ratio = report_ratio(gateway_sum, bare_sum, 0.7)
    print(f"     p99: {gateway_sum['p99_ms']:.2f} ms (target < 20 ms)")
    print(
        f"targets: ratio {'met' if ratio >= 0.7 else 'MISSED'}, "
        f"p99 {'met' if gateway_sum['p99_ms'] < 20 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
