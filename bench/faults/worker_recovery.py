"""Recovery time of a killed worker: SIGKILL the only worker while it holds jobs, N times.

    .venv/bin/python bench/faults/worker_recovery.py [--kills 10] [--exports 30]
        [--recovery-seconds 15]

Each round submits ``--exports`` exports (distinct queries; sandbox tasks of 8 s), waits until
every one is running upstream, makes upstream polls slow (3 s) so that the worker is killed
holding several poll steps, SIGKILLs it and starts a new worker at once. Measured per round:

* recovery: from the kill until every job the dead worker held has been started again by the
  new worker (or has finished): what ``GATEWAY_WORKER_RECOVERY_SECONDS`` bounds;
* all done: from the kill until every export of the round is completed.

Without the hand-back, the held jobs would wait for arq's in-progress marks to expire (the
worker's job_timeout + 10 s: 130 s by default). Expected: recovery about the setting plus one
heartbeat; no second upstream task for any export (sandbox tasks created == exports).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._common import AUTH, final_states, print_machine, private_run, submit_many


def held_jobs(client: redis.Redis) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {}
    for key in client.scan_iter("gw:worker:*:jobs"):
        held[key.decode()] = {job.decode() for job in client.hkeys(key)}  # type: ignore[union-attr]
    return held


def all_running(api: str, ids: list[str]) -> bool:
    """Every export's upstream task exists and its id is saved (a kill now cannot make a
    second upstream task)."""
    with httpx.Client(base_url=api, headers=AUTH, timeout=30) as client:
        return all(client.get(f"/v1/exports/{i}").json()["status"] == "running" for i in ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--exports", type=int, default=30)
    parser.add_argument("--recovery-seconds", type=float, default=15)
    args = parser.parse_args()
    print_machine()
    print(
        f"worker recovery: {args.kills} kills, {args.exports} exports each, "
        f"GATEWAY_WORKER_RECOVERY_SECONDS={args.recovery_seconds:g}",
        flush=True,
    )
    recoveries: list[float] = []
    all_done: list[float] = []
    total = 0
    with private_run(
        {"task_seconds": 8},
        GATEWAY_POLL_INITIAL_SECONDS="0.3",
        GATEWAY_POLL_MAX_SECONDS="1",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
        GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="100",
        GATEWAY_UPSTREAM_MAX_RPS="500",
        GATEWAY_WORKER_RECOVERY_SECONDS=f"{args.recovery_seconds:g}",
    ) as run:
        client = redis.Redis(port=run.redis.port)
        api = run.procs.api()
        worker = run.procs.worker("worker-0")
        for round_ in range(args.kills):
            bodies = [{"filter": f"signer_id==recover-{round_}-{n}"} for n in range(args.exports)]
            ids = asyncio.run(submit_many([api], bodies))
            total += len(ids)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all_running(api, ids):
                time.sleep(0.2)
            run.sandbox.configure(slow_rate=1.0, slow_seconds=3.0)
            deadline = time.monotonic() + 30
            while sum(map(len, held_jobs(client).values())) < 3:
                if time.monotonic() > deadline:
                    raise SystemExit("the worker never held 3 jobs at once")
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            worker.wait()
            at_kill = held_jobs(client)
            dead = set().union(*at_kill.values())
            run.sandbox.configure(slow_rate=0.0, slow_seconds=0.0)
            worker = run.procs.worker(f"worker-{round_ + 1}")
            while True:
                now_held = held_jobs(client)
                running_again = set().union(
                    *(jobs for key, jobs in now_held.items() if key not in at_kill)
                )
                pending = {
                    job
                    for job in dead
                    if job not in running_again and client.exists(f"arq:job:{job}")
                }
                if not pending:
                    break
                if time.monotonic() - killed > 300:
                    raise SystemExit(f"held jobs not run again after 300 s: {sorted(pending)}")
                time.sleep(0.05)
            recoveries.append(time.monotonic() - killed)
            final = asyncio.run(final_states(api, ids, timeout=120))
            all_done.append(time.monotonic() - killed)
            completed = sum(1 for body in final.values() if body.get("status") == "completed")
            print(
                f"round {round_ + 1}: {len(dead)} held jobs, recovered in "
                f"{recoveries[-1]:.1f} s, all {completed}/{len(ids)} completed "
                f"{all_done[-1]:.1f} s after the kill",
                flush=True,
            )
            if completed != len(ids):
                raise SystemExit("FAIL: an export did not complete")
        created = run.sandbox.stats()["tasks_created"]
    print(
        f"recovery (kill -> every held job running again): median "
        f"{statistics.median(recoveries):.1f} s, worst {max(recoveries):.1f} s "
        f"over {len(recoveries)} kills"
    )
    print(
        f"all exports of the round completed: median {statistics.median(all_done):.1f} s, "
        f"worst {max(all_done):.1f} s after the kill"
    )
    print(f"upstream tasks created: {created} for {total} exports")
    ok = created == total
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
