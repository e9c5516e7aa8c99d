"""The sandbox upstream for benchmarks, as its own process, plus one observation it lacks.

    python bench/_sandbox_server.py --port 8090 --config-json '{"task_seconds": 10}'

It serves ``app.sandbox.server.create_app`` unchanged, wrapped in an ASGI layer that notes, per
task, the wall time of the first ``GET /v1.1/tasks/export/{id}`` answer that showed the task
complete (its body carries ``links``). ``GET /_bench/tasks`` lists every task with its own
completion time, so a benchmark can measure how long the gateway took to notice a completion
from upstream's side of the wire.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.config import SandboxConfig
from app.sandbox.server import create_app
from app.sandbox.state import SandboxState

_TASK_GET = re.compile(r"^/v1\.1/tasks/export/([^/]+)/?$")


class SeenComplete:
    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state
        self.first_seen: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/_bench/tasks":
            await self._tasks(send)
            return
        match = _TASK_GET.match(path) if scope["method"] == "GET" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        task_id = match.group(1)
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (
                message["type"] == "http.response.body"
                and status == 200
                and task_id not in self.first_seen
                and b'"links"' in message.get("body", b"")
            ):
                self.first_seen[task_id] = time.time()
            await send(message)

        await self.app(scope, receive, watch)

    async def _tasks(self, send: Send) -> None:
        rows: list[dict[str, Any]] = []
        for task in self.state.tasks.values():
            finished = task.finished_wall
            rows.append(
                {
                    "id": task.id,
                    "duration": None if math.isinf(task.duration) else task.duration,
                    "created": task.created_wall.timestamp(),
                    "finished": finished.timestamp() if finished else None,
                    "fails": task.fails,
                    "polls": task.polls,
                    "first_seen_complete": self.first_seen.get(task.id),
                }
            )
        body = json.dumps(rows).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config-json", default="{}")
    args = parser.parse_args()
    config = SandboxConfig.model_validate(json.loads(args.config_json))
    inner = create_app(config)
    app = SeenComplete(inner, inner.state.sandbox)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        ws="none",
        backlog=8192,
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
