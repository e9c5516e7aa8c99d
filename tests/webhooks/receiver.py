"""A real webhook receiver for tests: an HTTP server that records every request and answers
each path with a script of responses (the last one repeats)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response

from tests.support import ServerThread


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(path: str, request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self._requests.append(
                    Received("/" + path, dict(request.headers), body, time.monotonic())
                )
                script = self._scripts.get("/" + path) or [Answer()]
                answer = script.pop(0) if len(script) > 1 else script[0]
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return Response(answer.body, answer.status, answer.headers)

        self.server = ServerThread(app, port=port, host=host)
        # Do not wait at shutdown for an answer a test deliberately left hanging.
        self.server.server.config.timeout_graceful_shutdown = 1

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> Receiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts[path] = list(answers)

    def requests(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self._requests if r.path == path]
