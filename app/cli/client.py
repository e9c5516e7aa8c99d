"""The client half of ``export-gateway``: submit, status, list, cancel, check.

The URL and API key come from ``--url``/``--api-key`` or ``GATEWAY_URL``/``GATEWAY_API_KEY``
(else ``http://127.0.0.1:8000`` and the dev runner's key in ``.gateway/dev-api-key``).
Results are JSON on stdout; messages and the live status line go to stderr.

Exit codes, for scripts:
    0  done (check: ready)
    1  the gateway answered with an error (a problem; check: not ready)
    2  usage error (bad arguments, no API key)
    3  the gateway is unreachable
    4  the export ended failed or canceled (submit --wait)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

OK, PROBLEM, USAGE, UNREACHABLE, EXPORT_FAILED = 0, 1, 2, 3, 4
DEFAULT_URL = "http://127.0.0.1:8000"
DEV_KEY_FILE = Path(".gateway") / "dev-api-key"
FINISHED = frozenset({"completed", "failed", "canceled", "expired"})
MAX_WAIT_BETWEEN_READS = 5.0


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _add_connection(parser: argparse.ArgumentParser, needs_key: bool = True) -> None:
    parser.add_argument("--url", help="gateway URL (default: $GATEWAY_URL or %(default)s)")
    if needs_key:
        parser.add_argument(
            "--api-key", "--key", dest="api_key", help="API key (default: $GATEWAY_API_KEY)"
        )


def register(commands: Any) -> None:
    """Add the client commands to ``export-gateway``'s sub-command parser."""
    submit = commands.add_parser("submit", help="submit an export")
    submit.add_argument("--filter", help="upstream filter expression")
    submit.add_argument("--fields", help="comma-separated columns")
    submit.add_argument("--site-id", type=int, help="Clickwrap site id")
    submit.add_argument("--callback-url", help="where webhooks go")
    submit.add_argument("--metadata", help="a JSON object echoed in the export and webhooks")
    submit.add_argument("--max-age-seconds", type=int, help="reuse a completed identical export")
    submit.add_argument(
        "--wait", action="store_true", help="wait until it finishes (live status on stderr)"
    )
    submit.add_argument("--timeout", type=float, default=0, help="give up waiting after N s")
    _add_connection(submit)
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="show one export")
    status.add_argument("export_id")
    _add_connection(status)
    status.set_defaults(handler=_status)

    listing = commands.add_parser("list", help="list your exports, newest first")
    listing.add_argument("--status", help="only exports with this status")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--cursor")
    _add_connection(listing)
    listing.set_defaults(handler=_list)

    cancel = commands.add_parser("cancel", help="cancel an unfinished export")
    cancel.add_argument("export_id")
    _add_connection(cancel)
    cancel.set_defaults(handler=_cancel)

    check = commands.add_parser("check", help="exit 0 when the gateway is ready, else non-zero")
    _add_connection(check, needs_key=False)
    check.set_defaults(handler=_check)


# -- plumbing --------------------------------------------------------------------------------


def _client(args: argparse.Namespace, needs_key: bool = True) -> httpx.Client:
    url = args.url or os.environ.get("GATEWAY_URL") or DEFAULT_URL
    headers = {"Accept": "application/json", "User-Agent": "export-gateway-cli"}
    if needs_key:
        key = getattr(args, "api_key", None) or os.environ.get("GATEWAY_API_KEY")
        if not key and DEV_KEY_FILE.exists():
            key = DEV_KEY_FILE.read_text().strip()
        if not key:
            raise CliError(USAGE, "no API key: pass --api-key or set GATEWAY_API_KEY")
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30, trust_env=False)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise CliError(UNREACHABLE, f"cannot reach {client.base_url}: {exc}") from None


def _problem(response: httpx.Response) -> CliError:
    try:
        body = response.json()
        text = body.get("detail") or body.get("title") or response.text
        for item in body.get("errors") or []:
            text += f"\n  {item.get('member', '?')}: {item.get('detail', '')}"
    except (ValueError, AttributeError):
        text = response.text[:500]
    return CliError(PROBLEM, f"HTTP {response.status_code}: {text}")


def _expect(response: httpx.Response, *ok: int) -> Any:
    if response.status_code not in ok:
        raise _problem(response)
    return response.json()


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- commands --------------------------------------------------------------------------------


def _submit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.filter is not None:
        body["filter"] = args.filter
    if args.fields is not None:
        body["fields"] = [f.strip() for f in args.fields.split(",") if f.strip()]
    if args.site_id is not None:
        body["site_id"] = args.site_id
    if args.callback_url is not None:
        body["callback_url"] = args.callback_url
    if args.max_age_seconds is not None:
        body["max_age_seconds"] = args.max_age_seconds
    if args.metadata is not None:
        try:
            body["metadata"] = json.loads(args.metadata)
        except ValueError:
            raise CliError(USAGE, "--metadata must be a JSON object") from None
    with _client(args) as client:
        export = _expect(_call(client, "POST", "/v1/exports", json=body), 202)
        if not args.wait:
            _print(export)
            return OK
        export = _wait(client, export, args.timeout)
    _print(export)
    return OK if export["status"] in ("completed", "expired") else EXPORT_FAILED


def _wait(client: httpx.Client, export: dict[str, Any], timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    live = sys.stderr.isatty()
    last_status = ""
    while True:
        elapsed = time.monotonic() - started
        line = f"{export['id']}  {export['status']}  polls={export.get('polls', 0)}  {elapsed:.0f}s"
        if live:  # one line, rewritten in place
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        elif export["status"] != last_status:  # not a terminal: one line per status change
            print(line, file=sys.stderr, flush=True)
        last_status = export["status"]
        if export["status"] in FINISHED:
            if live:
                sys.stderr.write("\n")
            return export
        if timeout and elapsed > timeout:
            raise CliError(PROBLEM, f"still {export['status']} after {timeout:g} s")
        response = _call(client, "GET", f"/v1/exports/{export['id']}")
        retry_after = response.headers.get("retry-after")
        export = _expect(response, 200)
        pause = float(retry_after) if retry_after and retry_after.isdigit() else 1.0
        if export["status"] not in FINISHED:
            time.sleep(min(pause, MAX_WAIT_BETWEEN_READS))


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(_expect(_call(client, "GET", f"/v1/exports/{args.export_id}"), 200))
    return OK


def _list(args: argparse.Namespace) -> int:
    params = {
        name: str(value)
        for name, value in (("status", args.status), ("limit", args.limit), ("cursor", args.cursor))
        if value is not None
    }
    with _client(args) as client:
        _print(_expect(_call(client, "GET", "/v1/exports", params=params), 200))
    return OK


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(_expect(_call(client, "DELETE", f"/v1/exports/{args.export_id}"), 200))
    return OK


def _check(args: argparse.Namespace) -> int:
    with _client(args, needs_key=False) as client:
        response = _call(client, "GET", "/readyz")
    if response.status_code == 200:
        print("ready", file=sys.stderr)
        return OK
    raise _problem(response)


def run_command(args: argparse.Namespace) -> int:
    """Run a client command, turning failures into a message and an exit code."""
    try:
        code: int = args.handler(args)
        return code
    except CliError as exc:
        print(f"export-gateway: {exc.message}", file=sys.stderr)
        return exc.code
