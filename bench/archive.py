"""The archive's copy of a large export: its speed against a plain download of the same files,
the worker's memory while it copies, and ``/csv`` served from the copy against ``/csv`` merged
from upstream's links.

    .venv/bin/python bench/archive.py                  # the full run (~200 MB)
    .venv/bin/python bench/archive.py --rows 3000      # a quick smoke

Starts a private Redis, the sandbox upstream (its own process), the API and one worker, the
archive being a ``file://`` directory in a temp folder. After a small warm-up export (so the
baseline is a worker that has archived once), the sandbox makes one large export (by default
1,000,000 rows over four files, ~200 MB merged). Then, one thing at a time:

1. the worker copies it into the archive (the copy's duration is the worker's own figure, from
   its ``archived`` log line), while this script samples the worker's resident memory (VmRSS)
   every 5 ms: the peak growth over the warmed-up baseline (target: under 50 MB);
2. this script downloads the same files from the file host with httpx, one after another,
   reading and discarding them: the plain download the copy is measured against (target: the
   copy at least 0.8x its throughput);
3. ``GET /v1/exports/{id}/csv`` from the API (served from the archived copy), and from a second
   API process with archiving off (merged from upstream's links), each checked against the
   copy's sha256.

Exit status 0 when every download matched the copy's sha256 and size, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import AUTH, Run, print_machine, private_run, rss_kib

FIELDS = ["event_type", "connection_data.remote_address", "connection_data.user_agent"]


class Sampler(threading.Thread):
    """Samples a process's RSS until stopped; keeps the peak (KiB)."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = rss_kib(pid) or 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, rss_kib(self.pid) or 0)
            time.sleep(self.every)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def archived_export(api: httpx.Client, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    export_id = api.post("/v1/exports", json=body).raise_for_status().json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: dict[str, Any] = api.get(f"/v1/exports/{export_id}").json()
        if found["status"] in ("failed", "canceled", "expired"):
            raise RuntimeError(f"export ended {found['status']}")
        state = (found.get("archive") or {}).get("state")
        if state == "failed":
            raise RuntimeError("the archive copy failed")
        if state == "archived":
            return found
        time.sleep(0.05)
    raise RuntimeError("the export was not archived in time")


def copy_seconds(run: Run) -> float:
    """The worker's own duration of its last copy (its ``archived`` log line)."""
    seconds = None
    for line in (run.workdir / "logs" / "worker.log").read_text(errors="replace").splitlines():
        if line.startswith("{") and '"archived"' in line:
            record = json.loads(line)
            if record.get("message") == "archived":
                seconds = float(record["seconds"])
    if seconds is None:
        raise RuntimeError("no 'archived' line in the worker's log")
    return seconds


def plain_download(links: list[str]) -> tuple[int, float]:
    """Every file from the file host, one after another, read and discarded."""
    received = 0
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        for link in links:
            with client.stream("GET", link) as response:
                response.raise_for_status()
                for chunk in response.iter_raw():
                    received += len(chunk)
    return received, time.perf_counter() - started


def csv_download(api_url: str, export_id: str) -> tuple[int, float, str, str]:
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    with (
        httpx.Client(base_url=api_url, headers=AUTH, timeout=120) as api,
        api.stream("GET", f"/v1/exports/{export_id}/csv") as response,
    ):
        response.raise_for_status()
        source = response.headers.get("x-export-source", "upstream links")
        for chunk in response.iter_bytes():
            received += len(chunk)
            digest.update(chunk)
    return received, time.perf_counter() - started, digest.hexdigest(), source


def mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    print_machine()

    sandbox = {"task_seconds": 0.3, "rows": 2000, "rows_per_file": 1000, "csv_chunk_rows": 2048}
    with private_run(
        sandbox,
        GATEWAY_POLL_INITIAL_SECONDS="0.2",
        GATEWAY_POLL_MAX_SECONDS="0.5",
        GATEWAY_QUEUE_POLL_SECONDS="0.05",
        GATEWAY_LOG_LEVEL="INFO",
        GATEWAY_WORKER_JOB_TIMEOUT_SECONDS=str(args.timeout),
    ) as run:
        archive = run.workdir / "archive"
        run.procs.env["GATEWAY_ARCHIVE_URL"] = archive.as_uri()
        api_url = run.procs.api()
        worker = run.procs.worker()
        with httpx.Client(base_url=api_url, headers=AUTH, timeout=30) as api:
            archived_export(api, {"filter": "batch==warmup", "fields": FIELDS}, args.timeout)
            run.sandbox.configure(rows=args.rows, rows_per_file=args.rows_per_file)
            time.sleep(0.5)
            baseline = rss_kib(worker.pid) or 0
            sampler = Sampler(worker.pid)
            sampler.start()
            export = archived_export(
                api, {"filter": "batch==large", "fields": FIELDS}, args.timeout
            )
            peak = sampler.stop()
        copy = export["archive"]
        seconds = copy_seconds(run)
        plain_bytes, plain_seconds = plain_download(export["links"])

        from_archive = csv_download(api_url, export["id"])
        env_off = {**run.procs.env, "GATEWAY_ARCHIVE_URL": ""}
        links_api = run.procs.api(env=env_off)
        from_links = csv_download(links_api, export["id"])

    ok = True
    print(f"export: {copy['rows']} rows, {copy['bytes'] / 1e6:.1f} MB merged, "
          f"{len(export['links'])} files ({plain_bytes / 1e6:.1f} MB downloaded)")  # fmt: skip
    print(f"archive_copy: {seconds:.2f} s, {mb_per_s(copy['bytes'], seconds):.1f} MB/s")
    print(f"plain_download: {plain_seconds:.2f} s, {mb_per_s(plain_bytes, plain_seconds):.1f} MB/s")
    ratio = mb_per_s(copy["bytes"], seconds) / mb_per_s(plain_bytes, plain_seconds)
    print(f"copy_vs_plain_throughput: {ratio:.2f}x (target >= 0.8x)")
    growth = (peak - baseline) / 1024
    print(f"worker_rss_baseline_mib: {baseline / 1024:.1f}")
    print(f"worker_rss_growth_mib: {growth:.1f} (target < 50)")
    for name, (size, took, digest, source) in (
        ("csv_from_archive", from_archive),
        ("csv_from_links", from_links),
    ):
        same = size == copy["bytes"] and digest == copy["sha256"]
        ok = ok and same
        print(f"{name}: {took:.2f} s, {mb_per_s(size, took):.1f} MB/s, source={source}, "
              f"matches_copy={same}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
