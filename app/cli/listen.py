"""``export-gateway listen``: a webhook receiver for trying the gateway out.

It answers every POST on ``http://HOST:PORT/`` (any path): a webhook whose Standard Webhooks
signature verifies (with the same library receivers are pointed at) is answered 204 and printed
on stdout as one JSON line (its ``webhook_id`` and the event: ``type``, ``timestamp``, ``data``);
anything else is answered 401 and reported on stderr, so the gateway retries it. With
``count`` it exits 0 after that many valid webhooks, and with ``timeout`` it exits 5 when they
have not come in time. One request at a time: it is a tool, not a production receiver.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

from app.cli.client import OK, TIMED_OUT, USAGE, CliError

MAX_BODY_BYTES = 1 << 20


def listen(*, host: str, port: int, secret: str, count: int, timeout: float) -> int:
    try:
        verifier = Webhook(secret)
    except Exception:  # the library raises plain errors for a malformed secret
        raise CliError(USAGE, "the webhook secret is not whsec_ followed by base64") from None
    received = 0

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal received
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(min(length, MAX_BODY_BYTES))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                event = verifier.verify(body, headers)
            except WebhookVerificationError as exc:
                self._answer(401)
                print(f"rejected a webhook on {self.path}: {exc}", file=sys.stderr, flush=True)
                return
            self._answer(204)
            line = {"webhook_id": headers.get("webhook-id"), **event}
            print(json.dumps(line, separators=(",", ":")), flush=True)
            received += 1

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return  # one line per webhook is printed above; no access log

    try:
        server = HTTPServer((host, port), Receiver)
    except OSError as exc:
        raise CliError(USAGE, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server.timeout = 0.5
    deadline = time.monotonic() + timeout if timeout else None
    print(f"listening for webhooks on http://{host}:{port}/", file=sys.stderr, flush=True)
    with server:
        while not count or received < count:
            if deadline is not None and time.monotonic() > deadline:
                print(
                    f"export-gateway listen: {received} of {count} webhooks in {timeout:g} s",
                    file=sys.stderr,
                )
                return TIMED_OUT
            server.handle_request()
    return OK
