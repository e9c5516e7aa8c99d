"""Fault: SIGKILL the Redis master under load; Sentinel promotes the replica.

    .venv/bin/python bench/faults/sentinel_failover.py [--exports 200] [--kill-after 3]

A master and a replica (``appendonly yes``, ``appendfsync always``) and one Sentinel (down
after 1 s) are started privately; the API and two workers find the master through Sentinel.
``--exports`` exports with callbacks are submitted, the master is SIGKILLed ``--kill-after``
seconds later, and nothing is restarted. Measured:

* failover: from the kill until ``/readyz`` answers 200 naming the promoted replica;
* unavailable: the longest stretch in which a prober reading one export every 50 ms got no 200;
* every export completes and every ``export.completed`` webhook arrives (at least once);
* upstream tasks created == exports (no second task for any export).

Replication is asynchronous: a write the master acknowledged in its last moments may not have
reached the replica. The gateway's records are written before the steps that depend on them,
and the self-healing sweep re-creates a step whose job was lost (here every 2 s, after 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.platform.localredis import SentinelGroup, free_port
from bench._common import (
    AUTH,
    Processes,
    Receiver,
    final_states,
    gateway_env,
    outcome_report,
    print_machine,
    print_report,
    start_sandbox,
    submit_many,
    wait_for_webhooks,
    webhooks_summary,
)


class Prober(threading.Thread):
    """Reads one export every 50 ms; records the longest gap between two 200s."""

    def __init__(self, api: str, export_id: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{api}/v1/exports/{export_id}"
        self.stop = threading.Event()
        self.longest = 0.0
        self.failures = 0

    def run(self) -> None:
        last_ok = time.monotonic()
        with httpx.Client(headers=AUTH, timeout=5) as client:
            while not self.stop.is_set():
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                now = time.monotonic()
                if ok:
                    self.longest = max(self.longest, now - last_ok)
                    last_ok = now
                else:
                    self.failures += 1
                time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--kill-after", type=float, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    print_machine()
    workdir = Path(tempfile.mkdtemp(prefix="gw-failover-"))
    (workdir / "logs").mkdir()
    group = SentinelGroup(workdir / "redis").start()
    procs = Processes(workdir / "logs", {})
    try:
        sandbox = start_sandbox(procs, {"task_seconds": 2, "task_seconds_max": 8})
        procs.env = gateway_env(
            "redis://127.0.0.1/0",
            sandbox.base_url,
            GATEWAY_REDIS_SENTINELS=f"127.0.0.1:{group.sentinel.port}",
            GATEWAY_REDIS_SENTINEL_MASTER=group.name,
            GATEWAY_POLL_INITIAL_SECONDS="0.3",
            GATEWAY_POLL_MAX_SECONDS="1",
            GATEWAY_QUEUE_POLL_SECONDS="0.05",
            GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS="100",
            GATEWAY_UPSTREAM_MAX_RPS="500",
            GATEWAY_WEBHOOK_RETRY_SCHEDULE="0.5,1,2,4,8,16",
            GATEWAY_SWEEP_INTERVAL_SECONDS="2",
            GATEWAY_SWEEP_GRACE_SECONDS="5",
            GATEWAY_READY_WORKER_SECONDS="10",
        )
        receiver = Receiver(free_port(), procs).start()
        api = procs.api()
        workers = [procs.worker(f"worker-{n}") for n in range(2)]
        print(
            f"sentinel failover: {args.exports} exports with callbacks, master SIGKILLed "
            f"{args.kill_after:g} s after they are submitted",
            flush=True,
        )
        bodies = [
            {"filter": f"signer_id==failover-{n}", "callback_url": f"{receiver.url}/hooks"}
            for n in range(args.exports)
        ]
        ids = asyncio.run(submit_many([api], bodies))
        prober = Prober(api, ids[0])
        prober.start()
        time.sleep(args.kill_after)
        assert group.master.process is not None
        group.master.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        replica = f"127.0.0.1:{group.replica.port}"
        while True:
            try:
                ready = httpx.get(f"{api}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("redis_master") == replica:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - killed > 120:
                raise SystemExit("FAIL: /readyz never named the promoted replica")
            time.sleep(0.05)
        failover = time.monotonic() - killed
        final = asyncio.run(final_states(api, ids, timeout=args.timeout))
        completed = sum(1 for body in final.values() if body.get("status") == "completed")
        attempts = wait_for_webhooks(receiver, completed, deadline=time.monotonic() + 120)
        prober.stop.set()
        prober.join()
        stats = sandbox.stats()
        restarted = sum(1 for worker in workers if worker.poll() is not None)
    finally:
        procs.stop_all()
        group.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = outcome_report(final, stats, distinct_queries=args.exports)
    report |= webhooks_summary(attempts, report["completed"])
    report["failover_seconds"] = round(failover, 2)
    report["longest_unavailable_seconds"] = round(prober.longest, 2)
    report["workers_exited"] = restarted
    print_report(report)
    ok = (
        report["completed"] == args.exports
        and report["webhook_events_delivered"] == args.exports
        and report["duplicate_upstream_tasks"] == 0
        and restarted == 0
    )
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
