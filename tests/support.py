"""Real parts for tests: a private Redis, the sandbox upstream over HTTP, the API and arq workers
as real processes, and a webhook receiver. Nothing of ours is mocked; only the network edge
(upstream) is the sandbox."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from app.platform.localredis import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_TOKEN = "sandbox-test-token"
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210"}
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODk="


def api_keys_setting() -> str:
    bob_digest = hashlib.sha256(KEYS["bob"].encode()).hexdigest()
    return f"alice:{KEYS['alice']},bob:sha256:{bob_digest}"


class ServerThread:
    """Any ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: FastAPI, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Stack:
    """The gateway's own processes (API + workers) against one Redis database."""

    redis_url: str
    upstream_url: str
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SANDBOX_"))}
        return {
            **base,
            "GATEWAY_REDIS_URL": self.redis_url,
            "GATEWAY_UPSTREAM_BASE_URL": self.upstream_url,
            "GATEWAY_UPSTREAM_TOKEN": SANDBOX_TOKEN,
            "GATEWAY_API_KEYS": api_keys_setting(),
            "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GATEWAY_POLL_INITIAL_SECONDS": "0.2",
            "GATEWAY_POLL_MULTIPLIER": "1.5",
            "GATEWAY_POLL_MAX_SECONDS": "1",
            "GATEWAY_QUEUE_POLL_SECONDS": "0.05",
            "GATEWAY_UPSTREAM_MAX_RPS": "200",
            "GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS": "50",
            "GATEWAY_WEBHOOK_RETRY_SCHEDULE": "0.3,0.6,1",
            "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "GATEWAY_READY_WORKER_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=self.environment(), stdout=log, stderr=log
            )
        self.processes.append(process)
        return process

    def start_api(self) -> subprocess.Popen[bytes]:
        process = self._spawn(
            f"api-{self.api_port}",
            ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.api_port)],
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"API exited; see {self.logs}")
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                    return process
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("API did not start")

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        return self._spawn(name, ["-m", "arq", "worker.main.WorkerSettings"])

    def wait_ready(self, timeout: float = 20) -> None:
        """Until ``/readyz`` answers 200: Redis up and a worker has reported."""
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.api_url}/readyz", timeout=2).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not get ready; see {self.logs}")
            time.sleep(0.1)

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        stop_process(process, sig)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)
        self.processes.clear()

    def client(self, who: str = "alice") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {KEYS[who]}"} if who in KEYS else {}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


@contextmanager
def running_stack(
    redis_url: str, upstream_url: str, logs: Path, workers: int = 1, **env: str
) -> Iterator[Stack]:
    stack = Stack(redis_url, upstream_url, logs, env={k.upper(): v for k, v in env.items()})
    try:
        stack.start_api()
        for n in range(workers):
            stack.start_worker(f"worker-{n}")
        yield stack
    finally:
        stack.stop_all()


async def wait_for(
    client: httpx.AsyncClient,
    export_id: str,
    statuses: tuple[str, ...] = ("completed", "failed", "canceled", "expired"),
    timeout: float = 20,
) -> dict[str, Any]:
    """Poll the gateway (as a caller would) until the export reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/exports/{export_id}")
        response.raise_for_status()
        body = response.json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"export {export_id} still {body.get('status')!r} after {timeout}s")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when the sample is absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def wait_until(predicate: Any, timeout: float = 20, interval: float = 0.1) -> None:
    """Await ``predicate()`` (sync or async) until it is truthy, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = predicate()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


# -- object storage --------------------------------------------------------------------------

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "test-secret-access-key-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


@dataclass
class S3Server:
    """moto's standalone S3-protocol server, as a process on a free port of 127.0.0.1."""

    logs: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The ``AWS_*`` variables a client of this server needs."""
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def start(self) -> S3Server:
        with (self.logs / "moto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited; see {self.logs}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def create_bucket(self, bucket: str) -> None:
        # moto does not check signatures: a plain PUT creates the bucket.
        httpx.put(f"{self.url}/{bucket}", timeout=10).raise_for_status()

    def stop(self) -> None:
        """Stop the server (its buckets and objects are gone with it: moto keeps them in
        memory); ``start`` again brings it back, empty, on the same port."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None
