"""``export-gateway feeds``: create, list, run, pause and resume feeds (the client half).

Connection, output and exit codes as the other client commands (``app/cli/client.py``).

    export-gateway feeds create --schedule "0 2 * * *" --filter event_type==agreed \\
        --fields id,signer_id,created_time --site-id 5193 --start-from 2026-01-01T00:00:00Z
    export-gateway feeds list
    export-gateway feeds run FEED_ID        start a run now (exit 1 with 409 while one runs)
    export-gateway feeds pause FEED_ID
    export-gateway feeds resume FEED_ID     the next run catches up on the whole gap
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.cli.client import OK, USAGE, CliError, _call, _client, _expect, _print, add_connection


def register(commands: Any) -> None:
    """Add ``feeds`` and its sub-commands to ``export-gateway``'s sub-command parser."""
    feeds = commands.add_parser("feeds", help="feeds: exports on a schedule, each record once")
    actions = feeds.add_subparsers(dest="feeds_command", required=True)

    create = actions.add_parser("create", help="create a feed")
    create.add_argument("--schedule", required=True, help="five-field cron expression, UTC")
    create.add_argument("--filter", help="upstream filter expression")
    create.add_argument("--fields", help="comma-separated columns")
    create.add_argument("--site-id", type=int, help="Clickwrap site id")
    create.add_argument("--start-from", help="ISO time of the first run's lower bound")
    create.add_argument("--callback-url", help="where the runs' webhooks go")
    create.add_argument("--metadata", help="a JSON object echoed in every run")
    create.add_argument("--paused", action="store_true", help="create it paused")
    add_connection(create)
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="list your feeds, newest first")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--cursor")
    add_connection(listing)
    listing.set_defaults(handler=_list)

    for name, handler, text in (
        ("run", _run, "start a run now"),
        ("pause", _pause, "pause a feed (no new runs)"),
        ("resume", _resume, "resume a paused feed"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("feed_id")
        add_connection(action)
        action.set_defaults(handler=handler)


def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"schedule": args.schedule, "paused": args.paused}
    for member, value in (
        ("filter", args.filter),
        ("site_id", args.site_id),
        ("start_from", args.start_from),
        ("callback_url", args.callback_url),
    ):
        if value is not None:
            body[member] = value
    if args.fields is not None:
        body["fields"] = [f.strip() for f in args.fields.split(",") if f.strip()]
    if args.metadata is not None:
        try:
            body["metadata"] = json.loads(args.metadata)
        except ValueError:
            raise CliError(USAGE, "--metadata must be a JSON object") from None
    with _client(args) as client:
        _print(_expect(_call(client, "POST", "/v1/feeds", json=body), 201))
    return OK


def _list(args: argparse.Namespace) -> int:
    params = {
        name: str(value)
        for name, value in (("limit", args.limit), ("cursor", args.cursor))
        if value is not None
    }
    with _client(args) as client:
        _print(_expect(_call(client, "GET", "/v1/feeds", params=params), 200))
    return OK


def _run(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(_expect(_call(client, "POST", f"/v1/feeds/{args.feed_id}/runs"), 202))
    return OK


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    with _client(args) as client:
        path = f"/v1/feeds/{args.feed_id}"
        _print(_expect(_call(client, "PATCH", path, json={"paused": paused}), 200))
    return OK


def _pause(args: argparse.Namespace) -> int:
    return _set_paused(args, True)


def _resume(args: argparse.Namespace) -> int:
    return _set_paused(args, False)
