"""Profile the API process under load with py-spy: where a status read or an accept spends.

    .venv/bin/pip install py-spy      # not a project dependency: only this script needs it
    .venv/bin/python bench/profile_api.py --route get [--seconds 8] [--top 40]

Starts a private stack (as bench/status_reads.py does), records the one uvicorn process with
``py-spy record --format raw`` while bench/_loadgen.py drives ``GET /v1/exports/{id}`` (or
``POST /v1/exports`` with ``--route post``) at concurrency 50, then prints the busiest
functions of the event loop thread: self time and cumulative time, as shares of its samples.
(py-spy samples a thread that is runnable but waiting for a CPU too, so on a loaded machine
the shares are relative, not absolute.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import AUTH, loadgen, print_machine, private_run

POST_BODY = '{"filter": "created_time>=2020-01-01 and signer_id==profile-{n}"}'


def summarise(raw: Path, top: int) -> None:
    own: Counter[str] = Counter()
    total_in: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "Runner.run" not in stack:  # the event loop thread only
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total_in[frame] += n
    print(f"event loop samples: {total}")
    print("self time:")
    for frame, n in own.most_common(top):
        print(f"  {n / total * 100:5.1f}%  {frame}")
    print("cumulative (frames of this project, the web framework and Redis):")
    shown = 0
    for frame, n in total_in.most_common():
        if any(part in frame for part in ("app/", "worker/", "fastapi/", "redis/", "pydantic")):
            print(f"  {n / total * 100:5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=["get", "post"], default="get")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    spy_binary = Path(sys.executable).parent / "py-spy"
    if not spy_binary.exists():
        raise SystemExit(
            "py-spy is not installed in this environment: .venv/bin/pip install py-spy"
        )
    print_machine()
    with private_run(
        {"task_seconds": 3600},
        GATEWAY_POLL_INITIAL_SECONDS="600",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
    ) as run:
        api = run.procs.api()
        ids: list[str] = []
        if args.route == "get":
            with httpx.Client(base_url=api, headers=AUTH, timeout=30) as client:
                for n in range(100):
                    body = {"filter": f"signer_id==profile-read-{n}"}
                    ids.append(client.post("/v1/exports", json=body).json()["id"])
        raw = Path(tempfile.mkdtemp()) / "profile.txt"
        spy = subprocess.Popen(
            [
                str(spy_binary), "record", "--format", "raw", "--rate", "200", "-o", str(raw),
                "--pid", str(run.procs.servers[api].pid), "--duration", str(int(args.seconds)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        if args.route == "get":
            result = loadgen(
                api, [f"/v1/exports/{i}" for i in ids], seconds=args.seconds, headers=AUTH,
                warmup=0.5,
            )  # fmt: skip
        else:
            result = loadgen(
                api, ["/v1/exports"], seconds=args.seconds, method="POST", body=POST_BODY,
                headers=AUTH, warmup=0.5,
            )  # fmt: skip
        spy.wait(timeout=args.seconds + 60)
    print(f"load: {result['rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    summarise(raw, args.top)


if __name__ == "__main__":
    main()
