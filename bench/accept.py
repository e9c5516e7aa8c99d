"""Benchmark 2, accepting: ``POST /v1/exports`` vs a bare route doing one Redis SET.

    .venv/bin/python bench/accept.py [--rounds 3] [--seconds 10] [--concurrency 50]

One uvicorn process serves the gateway, another the bare app (bench/bare_app.py), both on the
same private Redis. Every request carries a distinct filter (``{n}`` is a counter), so each one
is a new export with a new task, the gateway's most expensive acceptance path: validation,
filter normal form, the coalescing transaction, dispatch and one queued job (no worker runs,
so the measure is the API alone; the upstream slot limit is the default 4, so nearly all tasks
wait for a slot, as they would under a burst). The bare route stores the same body with one
SET. Target: at least 0.5 of the bare route's throughput.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

BODY = (
    '{"filter": "created_time>=2020-01-01 and signer_id==accept-{n}", '
    '"fields": ["id", "signer_id", "created_time", "event_type"], "metadata": {"n": {n}}}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    print_machine()
    print(
        f"accepting: {args.rounds} rounds x {args.seconds:g} s per side, "
        f"concurrency {args.concurrency}, distinct bodies"
    )
    counter = [0]
    with private_run({"task_seconds": 3600}) as run:
        api = run.procs.api()
        bare = run.procs.uvicorn("bench.bare_app:app")
        pid, bare_pid = run.procs.servers[api].pid, run.procs.servers[bare].pid

        def gateway_round() -> dict[str, Any]:
            counter[0] += 10_000_000
            return measured(
                pid,
                lambda: loadgen(
                    api, ["/v1/exports"], seconds=args.seconds, concurrency=args.concurrency,
                    method="POST", body=BODY, headers=AUTH, counter_start=counter[0],
                ),
            )  # fmt: skip

        def bare_round() -> dict[str, Any]:
            return measured(
                bare_pid,
                lambda: loadgen(
                    bare, ["/bare"], seconds=args.seconds, concurrency=args.concurrency,
                    method="POST", body=BODY,
                ),
            )  # fmt: skip

        gateway_results, bare_results = compare_rounds(
            "gateway", gateway_round, "bare", bare_round, args.rounds
        )
    print("results:")
    gateway_sum = summarise("gateway", gateway_results)
    bare_sum = summarise("bare", bare_results)
    ratio = report_ratio(gateway_sum, bare_sum, 0.5)
    print(f"targets: ratio {'met' if ratio >= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
