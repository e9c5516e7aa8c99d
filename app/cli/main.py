"""``export-gateway``: the dev runner, the sandbox upstream and the HTTP client.

export-gateway run       Redis (private, unless GATEWAY_REDIS_URL is set), the sandbox
                         upstream (unless GATEWAY_UPSTREAM_TOKEN is set), the API and one
                         worker; Ctrl-C stops everything it started.
export-gateway sandbox   only the sandbox upstream
export-gateway submit | status | list | cancel | check
                         the HTTP client (see app/cli/client.py for exit codes)
export-gateway download  stream an export's CSV (GET /v1/exports/{id}/csv) to a file
export-gateway feeds create | list | run | pause | resume
                         feeds: exports on a schedule (see app/cli/feeds.py)
export-gateway verify    re-read an export's archived copy and compare its sha256 (an
                         operator's command: it reads the gateway's settings, not an API key)
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
from pydantic import SecretStr

from app.cli import client as cli_client
from app.cli import feeds as cli_feeds
from app.cli import verify as cli_verify
from app.platform.localredis import LocalRedis, free_port
from app.webhooks.signing import WebhookSigner

STATE_DIR = Path(".gateway")
DEFAULT_URL = "http://127.0.0.1:8000"


def _persistent_secret(name: str, make: str, valid: Callable[[str], bool] = bool) -> str:
    """A dev secret kept in .gateway/ across runs; made anew when missing or no longer valid."""
    path = STATE_DIR / name
    if path.exists() and valid(kept := path.read_text().strip()):
        return kept
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(make + "\n")
    path.chmod(0o600)
    return make


def _usable_webhook_secret(secret: str) -> bool:
    try:
        WebhookSigner.from_settings(SecretStr(secret), [])
    except ValueError:
        return False
    return True


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    started: list[subprocess.Popen[bytes]] = []
    redis: LocalRedis | None = None
    notes: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not env.get("GATEWAY_REDIS_URL"):
            redis = LocalRedis(STATE_DIR / "redis", port=args.redis_port or free_port())
            redis.persistent = True
            redis.start()
            env["GATEWAY_REDIS_URL"] = redis.url
            notes.append(f"private Redis on {redis.url} (data in {STATE_DIR / 'redis'})")
        if not env.get("GATEWAY_UPSTREAM_TOKEN"):
            port = free_port()
            token = secrets.token_urlsafe(24)
            sandbox = subprocess.Popen(
                [sys.executable, "-m", "app.sandbox", "--host", "127.0.0.1", "--port", str(port)],
                env={**env, "SANDBOX_TOKEN": token},
            )
            started.append(sandbox)
            base = f"http://127.0.0.1:{port}/v1.1"
            if not _wait_http(f"http://127.0.0.1:{port}/_sandbox/config", 20, sandbox):
                raise RuntimeError("the sandbox upstream did not start")
            env["GATEWAY_UPSTREAM_BASE_URL"] = base
            env["GATEWAY_UPSTREAM_TOKEN"] = token
            notes.append(f"sandbox upstream on {base} (no GATEWAY_UPSTREAM_TOKEN set)")
        api_key = ""
        if not env.get("GATEWAY_API_KEYS"):
            api_key = _persistent_secret("dev-api-key", "dev_" + secrets.token_urlsafe(24))
            env["GATEWAY_API_KEYS"] = f"dev:{api_key}"
        if not env.get("GATEWAY_WEBHOOK_SECRET"):
            env["GATEWAY_WEBHOOK_SECRET"] = _persistent_secret(
                "dev-webhook-secret",
                "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
                valid=_usable_webhook_secret,
            )
            notes.append(f"webhook secret in {STATE_DIR / 'dev-webhook-secret'}")
        env.setdefault("GATEWAY_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
        if "GATEWAY_ARCHIVE_URL" not in env:  # set it empty to run without an archive
            archive = (STATE_DIR / "archive").resolve()
            env["GATEWAY_ARCHIVE_URL"] = archive.as_uri()
            notes.append(f"archive in {archive}")
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", args.host, "--port",
             str(args.port), "--no-access-log"],
            env=env,
        )  # fmt: skip
        started.append(api)
        worker = subprocess.Popen(
            [sys.executable, "-m", "arq", "worker.main.WorkerSettings"], env=env
        )
        started.append(worker)
        url = f"http://{args.host}:{args.port}"
        if not _wait_http(f"{url}/healthz", 30, api):
            raise RuntimeError("the API did not start")
        key_text = api_key or "<one of GATEWAY_API_KEYS>"
        print(
            f"\nClickwrap Export Gateway is up on {url}  (docs: {url}/docs)\n"
            + "".join(f"  - {n}\n" for n in notes)
            + f"  - API key: {key_text}\n\n"
            "Try it:\n"
            f"  curl -s -X POST {url}/v1/exports -H 'Authorization: Bearer {key_text}' \\\n"
            "       -H 'Content-Type: application/json' \\\n"
            '       -d \'{"filter": "event_type==agreed", "fields": ["event_type"]}\'\n'
            f"  curl -s {url}/v1/exports/<id> -H 'Authorization: Bearer {key_text}'\n\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while all(p.poll() is None for p in started):
            time.sleep(0.5)
        print("a gateway process exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short and orphan a process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping...", flush=True)
        _stop(list(reversed(started)))
        if redis is not None:
            redis.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def download(args: argparse.Namespace) -> int:
    from app.cli.download import download_csv

    return download_csv(
        export_id=args.export_id,
        output=args.output,
        url=args.url or os.environ.get("GATEWAY_URL") or DEFAULT_URL,
        key=args.key or os.environ.get("GATEWAY_API_KEY"),
        quiet=args.quiet,
    )


def sandbox(args: argparse.Namespace) -> int:
    from app.sandbox.config import SandboxConfig
    from app.sandbox.server import serve

    serve(args.host, args.port, SandboxConfig.from_env())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export-gateway", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run_cmd = commands.add_parser("run", help="run the whole gateway locally (dev runner)")
    run_cmd.add_argument("--host", default="127.0.0.1")
    run_cmd.add_argument("--port", type=int, default=8000)
    run_cmd.add_argument("--redis-port", type=int, default=0, help="private Redis port")
    run_cmd.set_defaults(handler=run)

    sandbox_cmd = commands.add_parser("sandbox", help="run only the sandbox upstream")
    sandbox_cmd.add_argument("--host", default="127.0.0.1")
    sandbox_cmd.add_argument("--port", type=int, default=8090)
    sandbox_cmd.set_defaults(handler=sandbox)

    download_cmd = commands.add_parser(
        "download",
        help="stream an export's CSV files, merged into one, to a file",
        description="Stream GET /v1/exports/ID/csv to a file (written to a temporary file "
        "first, renamed when complete). Exit codes: 0 done, 1 the gateway refused (its "
        "problem detail is printed), 2 usage, 3 transport error or truncated download.",
    )
    download_cmd.add_argument("export_id", metavar="ID", help="the export id (exp_...)")
    download_cmd.add_argument(
        "-o",
        "--output",
        help="file to write ('-' for standard output); default: the name the gateway suggests",
    )
    download_cmd.add_argument(
        "--url", help=f"the gateway's base URL (default: $GATEWAY_URL or {DEFAULT_URL})"
    )
    download_cmd.add_argument("--key", help="an API key (default: $GATEWAY_API_KEY)")
    download_cmd.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    download_cmd.set_defaults(handler=download)

    cli_client.register(commands)
    cli_feeds.register(commands)
    cli_verify.register(commands)

    args = parser.parse_args(argv)
    return cli_client.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
