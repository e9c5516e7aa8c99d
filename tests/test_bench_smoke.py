"""The benchmark and fault scripts still run (a short smoke of each kind, so they cannot rot).

Each runs as a user would run it (``python bench/...``), with its own Redis, sandbox, API and
worker, at a tiny size. Only outcomes are asserted, never speed.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def run_script(*args: str, timeout: float = 150) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_worker_scale_bench_finishes_every_export_and_prints_its_figures() -> None:
    output = run_script(
        "bench/worker_scale.py", "--count", "50", "--task-seconds", "0.5",
        "--task-seconds-max", "2", "--poll-initial", "0.2", "--poll-max", "1",
        "--timeout", "90",
    )  # fmt: skip
    assert "machine: nproc=" in output
    for figure in ("worker_peak_rss_mib", "redis_bytes_per_export_peak", "lag_p99_s"):
        assert figure in output
    assert "statuses: {'completed': 50}" in output
    assert "upstream_tasks_created: 50" in output


def test_redis_restart_scenario_loses_no_export_and_keeps_the_worker() -> None:
    output = run_script(
        "bench/faults/redis_restart.py", "--exports", "20", "--stop-after", "1",
        "--down-seconds", "2", "--timeout", "90",
    )  # fmt: skip
    assert "lost: 0" in output
    assert "worker_same_process_alive: True" in output
    assert "verdict: PASS" in output


def test_upstream_floor_bench_prints_both_clients() -> None:
    output = run_script(
        "bench/upstream_floor.py", "--requests", "200", "--concurrency", "20",
        "--tasks", "10", "--rounds", "1",
    )  # fmt: skip
    assert "machine: nproc=" in output
    for client in ("gateway client (25 pools x 4)", "one pool of 100, 20 kept alive"):
        line = next(line for line in output.splitlines() if client in line)
        assert "req/s" in line and "us CPU/request" in line


def test_archive_bench_prints_its_figures_and_every_download_matches_the_copy() -> None:
    output = run_script("bench/archive.py", "--rows", "3000", "--rows-per-file", "1000")
    assert "machine: nproc=" in output
    for figure in ("archive_copy:", "plain_download:", "copy_vs_plain_throughput:"):
        assert figure in output
    assert "worker_rss_growth_mib:" in output
    assert "csv_from_archive:" in output and "source=archive, matches_copy=True" in output
    assert "source=upstream links, matches_copy=True" in output


def test_feed_cut_bench_keeps_half_the_rows_and_prints_its_figures() -> None:
    output = run_script("bench/feed_cut.py", "--rows", "3000")
    assert "rows read 3,000, kept 1,500" in output
    assert "MB/s" in output and "peak Python allocations" in output
