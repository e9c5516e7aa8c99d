"""Shared parts of the benchmarks and fault scenarios: the machine, a private Redis, the sandbox
upstream and the gateway's own processes, and small statistics helpers.

Every script starts its own private Redis (``app.platform.localredis.LocalRedis``), its own sandbox
upstream (a subprocess, ``bench/_sandbox_server.py``, so that its CPU does not share the
script's GIL) and the API and workers as real processes, exactly as an operator would run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.platform.localredis import LocalRedis, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SANDBOX_TOKEN = "bench-sandbox-token"
API_KEY = "bench-key-0123456789abcdef"
CLIENT_ID = "bench"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WEBHOOK_SECRET = "whsec_" + "YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="


# -- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = "n/a"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "loadavg_at_start": load,
    }


def print_machine() -> None:
    info = machine()
    print(
        f"machine: nproc={info['nproc']} cpu={info['cpu']!r} python={info['python']} "
        f"system={info['system']!r} loadavg={info['loadavg_at_start']}",
        flush=True,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (VmRSS), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- processes -----------------------------------------------------------------------------


def gateway_env(redis_url: str, upstream_url: str, **overrides: str) -> dict[str, str]:
    """The environment of an API or worker process: fast, unlimited unless overridden."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SANDBOX_"))}
    return {
        **base,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_UPSTREAM_BASE_URL": upstream_url,
        "GATEWAY_UPSTREAM_TOKEN": SANDBOX_TOKEN,
        "GATEWAY_API_KEYS": f"{CLIENT_ID}:{API_KEY}",
        "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "GATEWAY_FILE_ALLOWED_NETWORKS": "127.0.0.1/32",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **{k.upper() if k.startswith("GATEWAY_") else k: v for k, v in overrides.items()},
    }


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@dataclass
class Processes:
    """Child processes of one run, each logging to a file under ``logs``."""

    logs: Path
    env: dict[str, str]
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """uvicorn processes by the URL they answer on."""

    def spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=dict(env or self.env),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.children.append(process)
        return process

    def uvicorn(
        self,
        target: str,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        health: str = "/healthz",
    ) -> str:
        """Start one uvicorn process serving ``target``; return its URL once it answers."""
        port = port or free_port()
        process = self.spawn(
            f"{target.split(':')[0].rsplit('.', 1)[-1]}-{port}",
            [
                "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--log-level", "warning", "--backlog", "4096",
            ],
            env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}{health}", process)
        self.servers[url] = process
        return url

    def api(self, port: int | None = None, env: Mapping[str, str] | None = None) -> str:
        """Start one API process (``uvicorn app.main:app``); return its URL once it answers."""
        return self.uvicorn("app.main:app", port=port, env=env)

    def worker(
        self, name: str = "worker", env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(name, ["-m", "arq", "worker.main.WorkerSettings"], env)

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        stop_process(process, sig)

    def stop_all(self) -> None:
        for process in reversed(self.children):
            self.stop(process)
        self.children.clear()


@dataclass
class Sandbox:
    """The sandbox upstream as a subprocess (see bench/_sandbox_server.py)."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1.1"

    def configure(self, **patch: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/config", json=patch, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_sandbox/stats", timeout=60)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def tasks(self) -> list[dict[str, Any]]:
        """Per task: id, duration, created/finished wall times, polls, first_seen_complete."""
        response = httpx.get(f"{self.url}/_bench/tasks", timeout=60)
        response.raise_for_status()
        tasks: list[dict[str, Any]] = response.json()
        return tasks


def start_sandbox(procs: Processes, config: Mapping[str, Any]) -> Sandbox:
    port = free_port()
    cfg = {"token": SANDBOX_TOKEN, **config}
    process = procs.spawn(
        "sandbox",
        [str(BENCH / "_sandbox_server.py"), "--port", str(port), "--config-json", json.dumps(cfg)],
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_sandbox/health", process)
    return Sandbox(url, process)


@dataclass
class Run:
    """One run's private world: a temp folder, a Redis, a sandbox and the process list."""

    workdir: Path
    redis: LocalRedis
    procs: Processes
    sandbox: Sandbox

    def env(self, **overrides: str) -> dict[str, str]:
        return gateway_env(self.redis.url, self.sandbox.base_url, **overrides)


@contextmanager
def private_run(
    sandbox_config: Mapping[str, Any] | None = None,
    *,
    persistent_redis: bool = False,
    keep: bool = False,
    **gateway: str,
) -> Iterator[Run]:
    """A private Redis and sandbox; gateway processes are started by the caller with
    ``run.procs.api()`` / ``run.procs.worker()`` (environment: ``gateway`` overrides).
    The temp folder (process logs) is removed afterwards unless ``keep`` or the environment
    variable BENCH_KEEP_LOGS is set."""
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    (workdir / "logs").mkdir()
    with ExitStack() as stack:
        redis = LocalRedis(workdir / "redis", persistent=persistent_redis).start()
        stack.callback(redis.stop)
        procs = Processes(workdir / "logs", {})
        stack.callback(procs.stop_all)
        sandbox = start_sandbox(procs, sandbox_config or {})
        procs.env = gateway_env(redis.url, sandbox.base_url, **gateway)
        try:
            yield Run(workdir, redis, procs, sandbox)
        finally:
            stack.close()
            if keep or os.environ.get("BENCH_KEEP_LOGS"):
                print(f"logs kept in {workdir / 'logs'}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def tail_logs(run: Run, lines: int = 20) -> str:
    out: list[str] = []
    for path in sorted((run.workdir / "logs").glob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


# -- load generation -------------------------------------------------------------------------


def loadgen(
    url: str,
    paths: Sequence[str],
    *,
    seconds: float,
    concurrency: int = 50,
    method: str = "GET",
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    counter_start: int = 0,
    warmup: float = 1.0,
) -> dict[str, Any]:
    """Run bench/_loadgen.py in its own process against ``url``; its JSON summary."""
    args = [
        sys.executable, str(BENCH / "_loadgen.py"), "--url", url,
        "--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup", str(warmup),
        "--method", method, "--counter-start", str(counter_start),
    ]  # fmt: skip
    for path in paths:
        args += ["--path", path]
    for name, value in (headers or {}).items():
        args += ["--header", f"{name}: {value}"]
    if body is not None:
        args += ["--body", body]
    done = subprocess.run(args, capture_output=True, check=True, timeout=seconds + warmup + 120)
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def measured(pid: int, round_: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one load round and add the server's CPU time per request (µs) to its summary.

    CPU per request is what a shared machine cannot blur: throughput and latency depend on how
    much CPU the neighbours leave, but the CPU a server burns for one request hardly does.
    """
    before = cpu_seconds(pid)
    summary = round_()
    spent = cpu_seconds(pid) - before
    summary["cpu_us_per_request"] = round(spent / max(1, summary["requests_with_warmup"]) * 1e6)
    return summary


def compare_rounds(
    label_a: str,
    run_a: Callable[[], dict[str, Any]],
    label_b: str,
    run_b: Callable[[], dict[str, Any]],
    rounds: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Alternate ``run_a()`` and ``run_b()`` (a, b, then b, a, ...); print each round."""
    results_a: list[dict[str, Any]] = []
    results_b: list[dict[str, Any]] = []
    for n in range(rounds):
        order = [(label_a, run_a, results_a), (label_b, run_b, results_b)]
        if n % 2:
            order.reverse()
        for label, runner, results in order:
            summary = runner()
            results.append(summary)
            print(
                f"  round {n + 1} {label:>8}: {summary['rps']:8.1f} req/s  "
                f"p50 {summary['p50_ms']:6.2f} ms  p99 {summary['p99_ms']:6.2f} ms  "
                f"server CPU {summary.get('cpu_us_per_request', 0):5d} us/req  "
                f"statuses {summary['statuses']} errors {summary['errors']}",
                flush=True,
            )
    return results_a, results_b


def summarise(label: str, results: Sequence[dict[str, Any]]) -> dict[str, float]:
    total = sum(r["requests"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    p50 = sorted(r["p50_ms"] for r in results)[len(results) // 2]
    p99 = sorted(r["p99_ms"] for r in results)[len(results) // 2]
    cpu = sorted(r.get("cpu_us_per_request", 0) for r in results)[len(results) // 2]
    rps = total / seconds if seconds else 0.0
    print(
        f"{label:>8}: {rps:8.1f} req/s (all rounds)  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
        f"server CPU {cpu} us/req (medians)"
    )
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "cpu_us": cpu}


def report_ratio(gateway: dict[str, float], bare: dict[str, float], target: float) -> float:
    """Print the throughput ratio, and the same ratio as the servers' CPU per request sees it."""
    ratio = gateway["rps"] / bare["rps"] if bare["rps"] else 0.0
    cpu_ratio = bare["cpu_us"] / gateway["cpu_us"] if gateway["cpu_us"] else 0.0
    print(f"   ratio: {ratio:.2f} of the bare route's throughput (target >= {target:.2f})")
    print(
        f"          {cpu_ratio:.2f} by server CPU per request (bare us / gateway us: the "
        "throughput ratio on an otherwise idle machine when the server is the bottleneck)"
    )
    return ratio


# -- exports as a caller sees them -----------------------------------------------------------

FINAL = ("completed", "failed", "canceled", "expired")


async def submit_many(
    apis: Sequence[str],
    bodies: Sequence[Mapping[str, Any]],
    *,
    concurrency: int = 20,
    retry_seconds: float = 60,
) -> list[str]:
    """POST every body (round-robin over ``apis``); retries 5xx and connection errors (an API
    may be briefly unable to reach Redis during a fault) until ``retry_seconds`` pass."""

    ids: list[str] = [""] * len(bodies)
    order = iter(range(len(bodies)))
    clients = [httpx.AsyncClient(base_url=a, headers=AUTH, timeout=30) for a in apis]
    try:

        async def submitter() -> None:
            for n in order:
                deadline = time.monotonic() + retry_seconds
                while True:
                    try:
                        response = await clients[n % len(clients)].post(
                            "/v1/exports", json=dict(bodies[n])
                        )
                        if response.status_code == 202:
                            ids[n] = response.json()["id"]
                            break
                        problem = f"{response.status_code} {response.text[:200]}"
                    except httpx.HTTPError as exc:
                        problem = repr(exc)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"submission {n} kept failing: {problem}")
                    await asyncio.sleep(0.5)

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return ids


async def final_states(
    api: str, ids: Sequence[str], *, timeout: float, concurrency: int = 20
) -> dict[str, dict[str, Any]]:
    """Poll every export until it is finished or ``timeout`` passes; the last body of each
    (an export never found has ``{"status": "missing"}``)."""

    last: dict[str, dict[str, Any]] = {i: {"status": "unknown"} for i in ids}
    deadline = time.monotonic() + timeout
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=api, headers=AUTH, timeout=30, limits=limits) as client:

        async def read(export_id: str) -> None:
            try:
                response = await client.get(f"/v1/exports/{export_id}")
            except httpx.HTTPError:
                return
            if response.status_code == 404:
                last[export_id] = {"status": "missing"}
            elif response.status_code == 200:
                last[export_id] = response.json()

        while True:
            pending = [i for i, body in last.items() if body.get("status") not in FINAL]
            if not pending or time.monotonic() > deadline:
                return last
            await asyncio.gather(*(read(i) for i in pending))
            if any(last[i].get("status") not in FINAL for i in pending):
                await asyncio.sleep(0.5)


def outcome_report(
    final: Mapping[str, Mapping[str, Any]],
    sandbox_stats: Mapping[str, Any],
    distinct_queries: int,
) -> dict[str, Any]:
    """Count what the callers saw: by status and error code, lost, duplicate upstream tasks."""
    by_status: dict[str, int] = {}
    by_code: dict[str, int] = {}
    for body in final.values():
        status = str(body.get("status"))
        by_status[status] = by_status.get(status, 0) + 1
        error = body.get("error")
        if status == "failed" and isinstance(error, dict):
            code = str(error.get("code"))
            by_code[code] = by_code.get(code, 0) + 1
    lost = sum(1 for body in final.values() if body.get("status") not in FINAL)
    referenced = {body.get("upstream_task_id") for body in final.values()}
    queries: dict[tuple[Any, ...], list[bool]] = {}
    for task in sandbox_stats["tasks"]:
        key = (task["filter"], task["fields"], task["site"])
        queries.setdefault(key, []).append(task["id"] in referenced)
    duplicates = sum(len(flags) - 1 for flags in queries.values())
    # A duplicate no export points at is an orphan: upstream made a task whose id the gateway
    # never learnt (a create that timed out, or a worker killed before saving the answer).
    # Exports of one query pointing at different tasks would be a coalescing failure.
    split = sum(max(0, sum(flags) - 1) for flags in queries.values())
    report = {
        "exports": len(final),
        "completed": by_status.get("completed", 0),
        "by_status": by_status,
        "failed_by_code": by_code,
        "lost": lost,
        "distinct_queries": distinct_queries,
        "upstream_tasks_created": sandbox_stats["tasks_created"],
        "duplicate_upstream_tasks": duplicates,
        "of_which_orphans": duplicates - split,
        "duplicates_serving_exports": split,
        "max_active_upstream_tasks": sandbox_stats["max_active_tasks"],
        "max_upstream_requests_in_any_1s": sandbox_stats["max_requests_in_any_1s_window"],
    }
    return report


def print_report(report: Mapping[str, Any]) -> None:
    print("results:")
    for name, value in report.items():
        print(f"  {name}: {value}")


# -- webhooks --------------------------------------------------------------------------------


@dataclass
class Receiver:
    """The webhook receiver subprocess (bench/_webhook_receiver.py)."""

    port: int
    procs: Processes
    fail_first: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self.process = self.procs.spawn(
            f"receiver-{self.port}",
            [
                str(BENCH / "_webhook_receiver.py"), "--port", str(self.port),
                "--secret", WEBHOOK_SECRET, "--fail-first", str(self.fail_first),
            ],
        )  # fmt: skip
        wait_http(f"{self.url}/_health", self.process)
        return self

    def received(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/_received", timeout=60)
        response.raise_for_status()
        attempts: list[dict[str, Any]] = response.json()
        return attempts


def webhooks_summary(
    attempts: Sequence[Mapping[str, Any]], finished_exports: int
) -> dict[str, Any]:
    """Distinct events delivered (a 2xx answered), attempts, invalid signatures."""
    delivered = {a["id"] for a in attempts if a.get("valid") and a["status"] < 300}
    return {
        "webhook_events_expected": finished_exports,
        "webhook_events_delivered": len(delivered),
        "webhook_attempts": len(attempts),
        "webhook_bad_signatures": sum(1 for a in attempts if not a.get("valid")),
    }


def wait_for_webhooks(receiver: Receiver, events: int, *, deadline: float) -> list[dict[str, Any]]:
    """The receiver's attempts once ``events`` distinct events were delivered (or at
    ``deadline``, a time.monotonic() value)."""
    while True:
        attempts = receiver.received()
        delivered = {a["id"] for a in attempts if a.get("valid") and a["status"] < 300}
        if len(delivered) >= events or time.monotonic() > deadline:
            return attempts
        time.sleep(0.5)
