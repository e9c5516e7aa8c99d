"""The client half of ``export-gateway``: submit, status, list, cancel, check.

The URL and API key come from ``--url``/``--api-key`` or ``GATEWAY_URL``/``GATEWAY_API_KEY``
(else ``http://127.0.0.1:8000`` and the dev runner's key in ``.gateway/dev-api-key``).
Results are JSON on stdout; messages and the live status line go to stderr. Exit codes, for
scripts: ``EXIT_CODES`` below (every command's ``--help`` shows them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

OK, PROBLEM, USAGE, UNREACHABLE, EXPORT_FAILED, TIMED_OUT = 0, 1, 2, 3, 4, 5
INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_CODES = """exit codes:
  0    done (check: ready)
  1    the gateway answered with an error; its problem detail is printed (check: not ready)
  2    usage: bad arguments, no API key
  3    the gateway is unreachable (download: the transfer broke off or the file cannot be
       written)
  4    the export ended failed, canceled or expired (--wait)
  5    gave up waiting: --wait found the export unfinished after --timeout seconds (listen:
       fewer than --count webhooks came within --timeout)
  130  interrupted (Ctrl-C)"""
DEFAULT_URL = "http://127.0.0.1:8000"
DEV_KEY_FILE = Path(".gateway") / "dev-api-key"
FINISHED = frozenset({"completed", "failed", "canceled", "expired"})
MAX_WAIT_BETWEEN_READS = 5.0


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def add_connection(parser: argparse.ArgumentParser, needs_key: bool = True) -> None:
    parser.add_argument(
        "--url", help=f"the gateway's URL (default: $GATEWAY_URL, else {DEFAULT_URL})"
    )
    if needs_key:
        parser.add_argument(
            "--api-key",
            "--key",
            dest="api_key",
            help=f"an API key (default: $GATEWAY_API_KEY, else the dev runner's {DEV_KEY_FILE})",
        )


def command(commands: Any, name: str, summary: str, description: str = "") -> Any:
    """A sub-command whose ``--help`` ends with the exit codes."""
    return commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description or summary[0].upper() + summary[1:] + ".", 78),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait until it finishes (live status on stderr)"
    )
    parser.add_argument(
        "--timeout", type=float, default=0, help="give up waiting after N s (exit 5); 0: never"
    )


def register(commands: Any) -> None:
    """Add the client commands to ``export-gateway``'s sub-command parser."""
    submit = command(commands, "submit", "submit an export")
    submit.add_argument("--filter", help="upstream filter expression")
    submit.add_argument("--fields", help="comma-separated columns")
    submit.add_argument("--site-id", type=int, help="Clickwrap site id")
    submit.add_argument("--callback-url", help="where webhooks go")
    submit.add_argument("--metadata", help="a JSON object echoed in the export and webhooks")
    submit.add_argument("--max-age-seconds", type=int, help="reuse a completed identical export")
    _add_wait(submit)
    add_connection(submit)
    submit.set_defaults(handler=_submit)

    status = command(commands, "status", "show one export (and optionally wait for its end)")
    status.add_argument("export_id", metavar="ID", help="the export id (exp_...)")
    _add_wait(status)
    add_connection(status)
    status.set_defaults(handler=_status)

    listing = command(commands, "list", "list your exports, newest first")
    listing.add_argument("--status", help="only exports with this status")
    listing.add_argument("--limit", type=int, help="at most this many (1-100; default 20)")
    listing.add_argument("--cursor", help="the next_cursor of the previous page")
    add_connection(listing)
    listing.set_defaults(handler=_list)

    cancel = command(commands, "cancel", "cancel an unfinished export")
    cancel.add_argument("export_id", metavar="ID", help="the export id (exp_...)")
    add_connection(cancel)
    cancel.set_defaults(handler=_cancel)

    check = command(commands, "check", "exit 0 when the gateway is ready, else non-zero")
    add_connection(check, needs_key=False)
    check.set_defaults(handler=_check)


# -- plumbing --------------------------------------------------------------------------------


def base_url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get("GATEWAY_URL") or DEFAULT_URL
    return url.rstrip("/")


def api_key(args: argparse.Namespace) -> str:
    """``--api-key``, else ``$GATEWAY_API_KEY``, else the dev runner's key file."""
    key = getattr(args, "api_key", None) or os.environ.get("GATEWAY_API_KEY")
    if not key and DEV_KEY_FILE.exists():
        key = DEV_KEY_FILE.read_text().strip()
    if not key:
        raise CliError(USAGE, "no API key: pass --api-key or set GATEWAY_API_KEY")
    return key


def _client(args: argparse.Namespace, needs_key: bool = True) -> httpx.Client:
    headers = {"Accept": "application/json", "User-Agent": "export-gateway-cli"}
    if needs_key:
        headers["Authorization"] = f"Bearer {api_key(args)}"
    return httpx.Client(base_url=base_url(args), headers=headers, timeout=30, trust_env=False)


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
    return _outcome(export)


def _outcome(export: dict[str, Any]) -> int:
    """A waited-for export: 0 when completed; an expired one has no files left to fetch."""
    return OK if export["status"] == "completed" else EXPORT_FAILED


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
            if live:
                sys.stderr.write("\n")
            raise CliError(TIMED_OUT, f"still {export['status']} after {timeout:g} s")
        response = _call(client, "GET", f"/v1/exports/{export['id']}")
        retry_after = response.headers.get("retry-after")
        export = _expect(response, 200)
        pause = float(retry_after) if retry_after and retry_after.isdigit() else 1.0
        if export["status"] not in FINISHED:
            time.sleep(min(pause, MAX_WAIT_BETWEEN_READS))


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        export = _expect(_call(client, "GET", f"/v1/exports/{args.export_id}"), 200)
        if not args.wait:
            _print(export)
            return OK
        export = _wait(client, export, args.timeout)
    _print(export)
    return _outcome(export)


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
    except KeyboardInterrupt:
        print("\nexport-gateway: interrupted", file=sys.stderr)
        return INTERRUPTED
