"""What one client may hold of the HTTP server, with the API started exactly as the process
command says (plain ``uvicorn app.main:app``, no flags): oversized headers, headers that never
finish, and idle connections piling up past what the process may open.

The API of the idle-connections test runs with an open-files limit of 1,000 (soft and hard,
near the common default of 1,024), so a thousand idle connections exhaust it if nothing sheds
them."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.platform.localredis import LocalRedis, free_port, stop_process
from tests.support import ROOT, Stack

HEADER_LIMIT = 16 * 1024


def _api(stack: Stack, logs: Path, open_files: int | None = None) -> subprocess.Popen[bytes]:
    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with (logs / "api.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(stack.api_port)],
            cwd=ROOT,
            env=stack.environment(),
            stdout=log,
            stderr=log,
            preexec_fn=limit,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.api_url}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"API did not start; see {logs}")


@pytest.fixture(scope="module")
def api(
    redis_server: LocalRedis, sandbox_server: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("server-limits")
    stack = Stack(f"redis://127.0.0.1:{redis_server.port}/0", "http://127.0.0.1:9/v1.1", logs)
    process = _api(stack, logs)
    yield stack
    stop_process(process)


def _exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` and read until the server closes or answers a whole head."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n"


def test_request_headers_over_16_kib_are_refused_and_those_within_are_answered(
    api: Stack,
) -> None:
    within = _exchange(api.api_port, _get("/healthz", b"X-Pad: " + b"a" * 12_000 + b"\r\n"))
    assert within.startswith(b"HTTP/1.1 200"), within[:200]
    over = _exchange(api.api_port, _get("/healthz", b"X-Pad: " + b"a" * 20_000 + b"\r\n"))
    assert over.startswith(b"HTTP/1.1 431"), over[:200]
    assert b"application/problem+json" in over
    # 4 MiB of headers: refused long before the end (the server stops reading and closes).
    many = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"b" * 1000) for n in range(4000))
    huge = _exchange(api.api_port, _get("/healthz", many))
    assert not huge.startswith(b"HTTP/1.1 200"), huge[:200]


def test_a_client_that_does_not_finish_its_headers_within_10_s_is_disconnected(
    api: Stack,
) -> None:
    with socket.create_connection(("127.0.0.1", api.api_port), timeout=2) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        closed_after = None
        while time.monotonic() - started < 25:  # a header line every second, never the end
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                data = sock.recv(1024)
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
            if data == b"":
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "still connected after 25 s"
        print(f"\nslow headers: disconnected after {closed_after:.1f} s")
        assert 9 <= closed_after <= 16, closed_after


def test_healthz_answers_while_1000_idle_connections_are_open(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    stack = Stack(f"redis://127.0.0.1:{redis_server.port}/0", "http://127.0.0.1:9/v1.1", tmp_path)
    stack.api_port = free_port()
    process = _api(stack, tmp_path, open_files=1000)
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", stack.api_port))
            idle.append(sock)
        time.sleep(1)  # let the server accept them all
        answered = []
        for _ in range(3):
            started = time.monotonic()
            response = httpx.get(f"{stack.api_url}/healthz", timeout=5)
            answered.append((response.status_code, time.monotonic() - started))
        print(f"\n/healthz with 1,000 idle connections: {answered}")
        assert [status for status, _ in answered] == [200, 200, 200], answered
        assert max(seconds for _, seconds in answered) < 3, answered
    finally:
        for sock in idle:
            sock.close()
        stop_process(process)
