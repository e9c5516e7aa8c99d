"""Command line of the sandbox: `python -m app.sandbox --host 127.0.0.1 --port 8090`.

Settings come from `SANDBOX_*` environment variables (see `SandboxConfig.from_env`); flags
given here win over them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from app.sandbox.config import SandboxConfig, merge_patch
from app.sandbox.server import serve


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.sandbox",
        description="Run the Clickwrap v1.1 sandbox upstream (base URL http://HOST:PORT/v1.1).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--token", help="bearer token to accept (SANDBOX_TOKEN)")
    parser.add_argument("--task-seconds", type=float, help="task duration (SANDBOX_TASK_SECONDS)")
    parser.add_argument("--task-seconds-max", type=float, help="spread task durations up to this")
    parser.add_argument("--rows", type=int, help="rows per export (SANDBOX_ROWS)")
    parser.add_argument("--rows-per-file", type=int, help="rows per CSV file")
    parser.add_argument("--retention-seconds", type=float, help="CSV lifetime after completion")
    parser.add_argument("--seed", type=int, help="seed of the fault RNG")
    parser.add_argument(
        "--config-json",
        help="a JSON merge-patch of any config field, e.g. '{\"fail_rate_429\": 0.1}'",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SandboxConfig:
    """The environment's config, overridden by the flags that were given."""
    config = SandboxConfig.from_env()
    patch = {
        name: getattr(args, name)
        for name in (
            "token",
            "task_seconds",
            "task_seconds_max",
            "rows",
            "rows_per_file",
            "retention_seconds",
            "seed",
        )
        if getattr(args, name) is not None
    }
    if args.config_json:
        patch.update(json.loads(args.config_json))
    return merge_patch(config, patch) if patch else config


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = build_config(args)
    print(f"Clickwrap sandbox on http://{args.host}:{args.port}/v1.1", flush=True)
    serve(args.host, args.port, config)


if __name__ == "__main__":
    main()
