"""A webhook receiver for benchmarks and fault scenarios, as its own process.

    python bench/_webhook_receiver.py --port 9000 --secret whsec_... [--fail-first 2]

Every POST is verified with the Standard Webhooks library (a bad signature answers 400 and is
counted). The first ``--fail-first`` attempts of each webhook-id answer 503 (no Retry-After);
later ones answer 204. ``GET /_received`` lists every attempt: webhook-id, type, export id,
upstream task id, wall time received, the answer given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from standardwebhooks import Webhook
from starlette.types import Receive, Scope, Send


class Receiver:
    def __init__(self, secret: str, fail_first: int) -> None:
        self.webhook = Webhook(secret)
        self.fail_first = fail_first
        self.attempts: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/_received":
            await self._answer(send, 200, json.dumps(self.attempts).encode())
            return
        if scope["method"] == "GET" and scope["path"] == "/_health":
            await self._answer(send, 200, b"{}")
            return
        received = time.time()
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the sender died mid-request
                self.attempts.append({"id": "", "at": received, "status": 0, "valid": True,
                                      "cut": True})  # fmt: skip
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        event_id = headers.get("webhook-id", "")
        try:
            payload = self.webhook.verify(body, headers)
        except Exception:  # any verification failure: refuse, count it
            self.attempts.append({"id": event_id, "at": received, "status": 400, "valid": False})
            await self._answer(send, 400, b"{}")
            return
        count = self.seen.get(event_id, 0) + 1
        self.seen[event_id] = count
        status = 503 if count <= self.fail_first else 204
        data = payload.get("data") or {}
        self.attempts.append(
            {
                "id": event_id,
                "type": payload.get("type"),
                "export_id": data.get("id"),
                "upstream_task_id": data.get("upstream_task_id"),
                "at": received,
                "attempt": count,
                "status": status,
                "valid": True,
            }
        )
        await self._answer(send, status, b"" if status == 204 else b"{}")

    @staticmethod
    async def _answer(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json")] if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    uvicorn.run(
        Receiver(args.secret, args.fail_first),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
