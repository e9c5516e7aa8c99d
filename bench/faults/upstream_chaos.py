"""Fault 4: upstream chaos: every export still ends in a true state with the right error code.

    .venv/bin/python bench/faults/upstream_chaos.py [--exports 100] [--seed 7]

The sandbox answers a share of upstream API requests with 429 (Retry-After), 503
(Retry-After), 200 with a body that is not JSON, or slowly (3 s, beyond the gateway's upstream
timeout of 1 s); a share of its tasks end ``failed``; and the gateway reaches it through a proxy
that resets a share of connections. Beside ``--exports`` ordinary exports (distinct queries),
a few exports are made to fail in a known way: a filter with ``__never__`` (the task never
finishes; GATEWAY_UPSTREAM_TASK_MAX_AGE_SECONDS=6), ``__fail__`` (the task ends failed),
``__reject__`` (upstream answers 400) and site 403 (upstream answers 403).

Expected, per export: ordinary ones complete unless their upstream task failed
(``upstream_failed``); ``__never__`` -> ``upstream_timeout``; ``__fail__`` -> ``upstream_failed``;
``__reject__`` -> ``upstream_rejected``; site 403 -> ``upstream_unauthorized``. Nothing may stay
unfinished. A slow answer to a create request is a known hazard: the gateway times out, but
upstream goes on to create the task, which the gateway cannot learn about (upstream has no
idempotency key and no task listing), so its retry makes a second one. Those orphans are
counted apart from duplicates the gateway could have avoided.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._chaos_proxy import ChaosProxy
from bench._common import (
    final_states,
    outcome_report,
    print_machine,
    print_report,
    private_run,
    submit_many,
)

SPECIAL = {
    "never": ("created_time>=2020-01-01 and __never__==1 and signer_id==chaos-never-{n}", None),
    "fail": ("created_time>=2020-01-01 and __fail__==1 and signer_id==chaos-fail-{n}", None),
    "reject": ("created_time>=2020-01-01 and __reject__==1 and signer_id==chaos-rej-{n}", None),
    "forbidden": ("created_time>=2020-01-01 and signer_id==chaos-403-{n}", 403),
}
EXPECTED_CODE = {
    "never": "upstream_timeout",
    "fail": "upstream_failed",
    "reject": "upstream_rejected",
    "forbidden": "upstream_unauthorized",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=100, help="ordinary exports")
    parser.add_argument("--special", type=int, default=5, help="exports of each known failure")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reset-rate", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=240)
    args = parser.parse_args()
    chaos = {
        "seed": args.seed,
        "fail_rate_429": 0.15,
        "fail_rate_503": 0.10,
        "malformed_rate": 0.05,
        "slow_rate": 0.03,
        "slow_seconds": 3.0,
        "task_fail_rate": 0.15,
        "retry_after_seconds": 1.0,
    }
    print_machine()
    print(
        f"upstream chaos: {args.exports} ordinary exports + {args.special} of each of "
        f"{', '.join(SPECIAL)}; sandbox faults {chaos}; connection reset rate {args.reset_rate}",
        flush=True,
    )
    with private_run({"task_seconds": 1, "task_seconds_max": 3, **chaos}) as run:
        host, port = "127.0.0.1", int(run.sandbox.url.rsplit(":", 1)[1])
        with ChaosProxy((host, port), reset_rate=args.reset_rate, seed=args.seed) as proxy:
            env = run.env(
                GATEWAY_UPSTREAM_BASE_URL=f"{proxy.url}/v1.1",
                GATEWAY_UPSTREAM_TIMEOUT_SECONDS="1",
                GATEWAY_UPSTREAM_TASK_MAX_AGE_SECONDS="6",
                GATEWAY_POLL_INITIAL_SECONDS="0.3",
                GATEWAY_POLL_MAX_SECONDS="1",
                GATEWAY_QUEUE_POLL_SECONDS="0.05",
                GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="50",
                GATEWAY_UPSTREAM_MAX_RPS="100",
            )
            api = run.procs.api(env=env)
            run.procs.worker(env=env)
            kinds: list[str] = ["ordinary"] * args.exports
            bodies: list[dict[str, Any]] = [
                {"filter": f"created_time>=2020-01-01 and signer_id==chaos-{n}"}
                for n in range(args.exports)
            ]
            for kind, (template, site) in SPECIAL.items():
                for n in range(args.special):
                    body: dict[str, Any] = {"filter": template.format(n=n)}
                    if site is not None:
                        body["site_id"] = site
                    kinds.append(kind)
                    bodies.append(body)
            started = time.monotonic()
            ids = asyncio.run(submit_many([api], bodies))
            final = asyncio.run(final_states(api, ids, timeout=args.timeout))
            elapsed = time.monotonic() - started
            stats = run.sandbox.stats()
            tasks = {t["id"]: t for t in run.sandbox.tasks()}
            resets = proxy.resets
    wrong: list[str] = []
    for export_id, kind in zip(ids, kinds, strict=True):
        body = final[export_id]
        status = body.get("status")
        code = (body.get("error") or {}).get("code")
        if kind == "ordinary":
            task = tasks.get(body.get("upstream_task_id") or "")
            expected = (
                ("failed", "upstream_failed") if task and task["fails"] else ("completed", None)
            )
        else:
            expected = ("failed", EXPECTED_CODE[kind])
        if (status, code) != expected:
            wrong.append(
                f"{kind} {export_id}: {status}/{code}, expected {expected[0]}/{expected[1]}"
            )
    report = outcome_report(final, stats, distinct_queries=len(bodies))
    report["faults_injected"] = stats["faults_injected"]
    report["connection_resets"] = resets
    report["wrong_outcomes"] = len(wrong)
    report["seconds"] = round(elapsed, 1)
    print_report(report)
    for line in wrong[:20]:
        print(f"  WRONG {line}")
    ok = not wrong and report["lost"] == 0 and report["duplicates_serving_exports"] == 0
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} (duplicates: {report['duplicate_upstream_tasks']}, "
        f"of which orphans of timed-out creates: {report['of_which_orphans']})"
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
