"""Memory of the API while it streams a large export through ``GET /v1/exports/{id}/csv``.

Starts everything it needs on 127.0.0.1 (a private Redis, the sandbox upstream, the API and one
worker, each its own process), has the sandbox make one large export (by default 1,000,000
rows, ~200 MB, over four files), warms the API up with a small download, then downloads the
large one through ``/csv`` while sampling the API process's resident memory (VmRSS in
/proc/<pid>/status) every few milliseconds. Prints the peak RSS growth over the warmed-up
baseline (target: under 50 MB), the throughput and the total bytes.

    .venv/bin/python bench/csv_memory.py                  # the full run
    .venv/bin/python bench/csv_memory.py --rows 3000      # a quick smoke

Exit status 0 when the download completed and matched the expected size of a merged CSV,
1 otherwise (and 2 when ``--max-growth-mb`` is given and exceeded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform.localredis import LocalRedis, free_port

TOKEN = "bench-token"
API_KEY = "bench-key-0123456789"
FIELDS = [
    "event_type",
    "connection_data.remote_address",
    "connection_data.user_agent",
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    """Samples a process's RSS until stopped; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kb = rss_kb(pid)
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            self.samples += 1
            time.sleep(self.every)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kb


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def export(api: httpx.Client, body: dict[str, object], timeout: float) -> dict[str, object]:
    created = api.post("/v1/exports", json=body)
    created.raise_for_status()
    export_id = created.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done: dict[str, object] = api.get(f"/v1/exports/{export_id}").json()
        if done["status"] == "completed":
            return done
        if done["status"] in ("failed", "canceled", "expired"):
            raise RuntimeError(f"export ended {done['status']}: {done}")
        time.sleep(0.2)
    raise RuntimeError("export did not complete")


def expected_size(links: list[str]) -> int:
    """Size of the merged CSV from the files' own sizes: every file but the first loses its
    header line (the sandbox writes files with a final line break and no BOM by default)."""
    total = 0
    for number, link in enumerate(links):
        with httpx.stream("GET", link, timeout=120) as response:
            response.raise_for_status()
            header = b""
            size = 0
            for chunk in response.iter_bytes():
                if not header:
                    header = chunk.partition(b"\n")[0] + b"\n"
                size += len(chunk)
        total += size - (len(header) if number else 0)
    return total


def download(api: httpx.Client, export_id: str) -> tuple[int, float, str]:
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    with api.stream("GET", f"/v1/exports/{export_id}/csv", timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            received += len(chunk)
            digest.update(chunk)
    return received, time.perf_counter() - started, digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--max-growth-mb", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the logs and Redis data")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="csv-bench-"))
    redis = LocalRedis(workdir / "redis").start()
    processes: list[subprocess.Popen[bytes]] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SANDBOX_"))}

    def spawn(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (workdir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        processes.append(process)
        return process

    try:
        sandbox_port, api_port = free_port(), free_port()
        sandbox = spawn(
            "sandbox",
            ["-m", "app.sandbox", "--port", str(sandbox_port), "--token", TOKEN],
            {
                **base_env,
                "SANDBOX_TASK_SECONDS": "0.3",
                "SANDBOX_ROWS": str(args.rows),
                "SANDBOX_ROWS_PER_FILE": str(args.rows_per_file),
                "SANDBOX_CSV_CHUNK_ROWS": "2048",
            },
        )
        wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/health", sandbox)
        gateway_env = {
            **base_env,
            "GATEWAY_REDIS_URL": redis.url,
            "GATEWAY_UPSTREAM_BASE_URL": f"http://127.0.0.1:{sandbox_port}/v1.1",
            "GATEWAY_UPSTREAM_TOKEN": TOKEN,
            "GATEWAY_API_KEYS": f"bench:{API_KEY}",
            "GATEWAY_FILE_ALLOWED_NETWORKS": "127.0.0.1/32",  # the sandbox's links
            "GATEWAY_POLL_INITIAL_SECONDS": "0.2",
            "GATEWAY_POLL_MAX_SECONDS": "0.5",
            "GATEWAY_QUEUE_POLL_SECONDS": "0.05",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        api_process = spawn(
            "api",
            ["-m", "uvicorn", "app.main:app", "--port", str(api_port), "--no-access-log"],
            gateway_env,
        )
        spawn("worker", ["-m", "arq", "worker.main.WorkerSettings"], gateway_env)
        wait_http(f"http://127.0.0.1:{api_port}/healthz", api_process)

        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers=headers) as api:
            # warm up: the same code paths on a small export, so the baseline is steady
            httpx.post(
                f"http://127.0.0.1:{sandbox_port}/_sandbox/config",
                json={"rows": 5000, "rows_per_file": 2000},
            ).raise_for_status()
            small = export(api, {"fields": FIELDS, "filter": "batch==1"}, timeout=60)
            download(api, str(small["id"]))
            httpx.post(
                f"http://127.0.0.1:{sandbox_port}/_sandbox/config",
                json={"rows": args.rows, "rows_per_file": args.rows_per_file},
            ).raise_for_status()
            large = export(api, {"fields": FIELDS, "filter": "batch==2"}, timeout=120)
            links = [str(link) for link in large["links"]]  # type: ignore[attr-defined]
            direct_started = time.perf_counter()
            expected = expected_size(links)
            direct_seconds = time.perf_counter() - direct_started

            baseline_kb = rss_kb(api_process.pid)
            cpu_before = cpu_seconds(api_process.pid)
            sampler = Sampler(api_process.pid)
            sampler.start()
            received, seconds, _ = download(api, str(large["id"]))
            peak_kb = sampler.stop()
            api_cpu = cpu_seconds(api_process.pid) - cpu_before
        growth_mb = (peak_kb - baseline_kb) / 1024
        figures = {
            "rows": args.rows,
            "files": len(links),
            "bytes": received,
            "expected_bytes": expected,
            "seconds": round(seconds, 2),
            "throughput_mb_s": round(received / seconds / 1e6, 1),
            "direct_from_upstream_mb_s": round(expected / direct_seconds / 1e6, 1),
            "api_rss_baseline_mb": round(baseline_kb / 1024, 1),
            "api_rss_peak_mb": round(peak_kb / 1024, 1),
            "api_rss_growth_mb": round(growth_mb, 1),
            "rss_samples": sampler.samples,
            "api_cpu_seconds": round(api_cpu, 2),
        }
        if args.json:
            print(json.dumps(figures))
        else:
            print(
                f"merged CSV: {received:,} bytes ({received / 1e6:.1f} MB) from "
                f"{len(links)} files, {args.rows:,} rows, in {seconds:.1f} s "
                f"= {received / seconds / 1e6:.1f} MB/s (the files straight from the sandbox: "
                f"{expected / direct_seconds / 1e6:.1f} MB/s)\n"
                f"API RSS: baseline {baseline_kb / 1024:.1f} MB, peak {peak_kb / 1024:.1f} MB, "
                f"growth {growth_mb:.1f} MB (target < 50 MB; {sampler.samples} samples)\n"
                f"API CPU: {api_cpu:.1f} s for the download "
                f"({api_cpu / max(received / 1e8, 1e-9):.2f} s per 100 MB: the sandbox, not the "
                "gateway, sets the pace)"
            )
        if received != expected:
            print(f"size mismatch: expected {expected} bytes", file=sys.stderr)
            return 1
        if args.max_growth_mb is not None and growth_mb > args.max_growth_mb:
            return 2
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
