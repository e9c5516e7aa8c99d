"""Run a sandbox on a real socket in a background thread, for tests and benchmarks.

    from app.sandbox.testing import run_sandbox

    with run_sandbox(SandboxConfig(task_seconds=0.3)) as sandbox:
        httpx.get(f"{sandbox.base_url}/activity", headers=sandbox.auth_headers)

The server listens on a free port of 127.0.0.1 (the socket is bound before the thread starts,
so there is no port race) and stops when the block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from app.sandbox.config import SandboxConfig
from app.sandbox.server import create_app
from app.sandbox.state import SandboxState


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    """Where a running sandbox answers, and its in-process state (read it, don't mutate it)."""

    app: FastAPI
    host: str
    port: int

    @property
    def url(self) -> str:
        """Root URL, e.g. `http://127.0.0.1:53211` (control routes live under `/_sandbox`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The upstream base URL to give the gateway: `<url>/v1.1`."""
        return f"{self.url}/v1.1"

    @property
    def state(self) -> SandboxState:
        state: SandboxState = self.app.state.sandbox
        return state

    @property
    def token(self) -> str:
        return self.state.startup_config.token

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def run_sandbox(
    config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSandbox]:
    """Serve a fresh sandbox in a daemon thread for the duration of the block."""
    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port: int = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            access_log=False,
            log_level="warning",
            lifespan="off",
            ws="none",
            backlog=8192,
            timeout_keep_alive=30,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sandbox-upstream", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)
        yield RunningSandbox(app=app, host=host, port=bound_port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
