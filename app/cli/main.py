"""``export-gateway``: the dev runner, the sandbox upstream, a webhook receiver and the HTTP
client. ``USAGE`` below is what ``export-gateway --help`` prints."""

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
from importlib import metadata
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
DISTRIBUTION = "clickwrap-export-gateway"

USAGE = """\
The Clickwrap Export Gateway's command line.

  export-gateway run        the whole gateway on this machine: Redis (a private one, unless
                            GATEWAY_REDIS_URL is set), the sandbox upstream (unless
                            GATEWAY_UPSTREAM_TOKEN is set), the API and one worker;
                            Ctrl-C stops everything it started
  export-gateway sandbox    only the sandbox of the Clickwrap API
  export-gateway listen     a webhook receiver that verifies each signature and prints the
                            event
  export-gateway submit | status | list | cancel | check | download
                            the gateway's HTTP API from the command line (results as JSON on
                            stdout; URL and key from --url/--api-key, $GATEWAY_URL and
                            $GATEWAY_API_KEY, or the dev runner's .gateway/dev-api-key)
  export-gateway feeds create | list | run | pause | resume
                            feeds: exports of everything new since the last run, on a schedule
  export-gateway verify     re-read an export's archived copy and compare its sha256 (an
                            operator's command: it reads the gateway's settings, not an API key)

Run 'export-gateway COMMAND --help' for a command's options."""


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
        if not env.get("GATEWAY_REDIS_URL") and not env.get("GATEWAY_REDIS_SENTINELS"):
            redis = LocalRedis(STATE_DIR / "redis", port=args.redis_port or free_port())
            redis.persistent = True
            redis.start()
            env["GATEWAY_REDIS_URL"] = redis.url
            notes.append(f"private Redis on {redis.url} (data in {STATE_DIR / 'redis'})")
        base_sandbox = not env.get("GATEWAY_UPSTREAM_TOKEN")
        if base_sandbox:
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
        if base_sandbox:
            env.setdefault("GATEWAY_FILE_ALLOWED_NETWORKS", "127.0.0.1/32")
        env["GATEWAY_DEV_RUNNER"] = "true"
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
            f"  - operator console: {url}/console (sign in with the API key)\n"
            + "".join(f"  - {n}\n" for n in notes)
            + f"  - API key: {key_text}\n\n"
            'Try it (the README\'s "Using it" walks through the rest):\n'
            + (f"  KEY=$(cat {STATE_DIR / 'dev-api-key'})\n" if api_key else "  KEY=...\n")
            + f'  curl -sf -X POST {url}/v1/exports -H "Authorization: Bearer $KEY" \\\n'
            "       -H 'Content-Type: application/json' \\\n"
            '       -d \'{"filter": "event_type==agreed", "fields": ["event_type"]}\'\n'
            f'  curl -sf {url}/v1/exports/<id> -H "Authorization: Bearer $KEY"\n\n'
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
        url=cli_client.base_url(args),
        key=cli_client.api_key(args),
        quiet=args.quiet,
        escape_formulas=args.escape_formulas,
    )


def listen(args: argparse.Namespace) -> int:
    from app.cli.listen import listen as serve_webhooks

    return serve_webhooks(
        host=args.host,
        port=args.port,
        secret=args.secret or os.environ.get("GATEWAY_WEBHOOK_SECRET") or _dev_webhook_secret(),
        count=args.count,
        timeout=args.timeout,
    )


def _dev_webhook_secret() -> str:
    path = STATE_DIR / "dev-webhook-secret"
    if not path.exists():
        raise cli_client.CliError(
            cli_client.USAGE,
            f"no webhook secret: pass --secret, set GATEWAY_WEBHOOK_SECRET, or start the dev "
            f"runner once (it writes {path})",
        )
    return path.read_text().strip()


def sandbox(args: argparse.Namespace) -> int:
    from app.sandbox.config import SandboxConfig
    from app.sandbox.server import serve

    serve(args.host, args.port, SandboxConfig.from_env())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="export-gateway",
        description=USAGE,
        epilog=cli_client.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {metadata.version(DISTRIBUTION)}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_cmd = cli_client.command(commands, "run", "run the whole gateway locally (dev runner)")
    run_cmd.add_argument("--host", default="127.0.0.1", help="the API's address (%(default)s)")
    run_cmd.add_argument("--port", type=int, default=8000, help="the API's port (%(default)s)")
    run_cmd.add_argument(
        "--redis-port", type=int, default=0, help="the private Redis's port (default: a free one)"
    )
    run_cmd.set_defaults(handler=run)

    sandbox_cmd = cli_client.command(commands, "sandbox", "run only the sandbox upstream")
    sandbox_cmd.add_argument("--host", default="127.0.0.1", help="address (%(default)s)")
    sandbox_cmd.add_argument("--port", type=int, default=8090, help="port (%(default)s)")
    sandbox_cmd.set_defaults(handler=sandbox)

    listen_cmd = cli_client.command(
        commands,
        "listen",
        "receive webhooks: verify each signature and print the event",
        "Receive the gateway's webhooks on http://HOST:PORT/ (any path): each one's Standard "
        "Webhooks signature is verified (with --secret, else $GATEWAY_WEBHOOK_SECRET, else the "
        "dev runner's .gateway/dev-webhook-secret); a valid one is answered 204 and printed on "
        "stdout as one JSON line, anything else is answered 401 and reported on stderr.",
    )
    listen_cmd.add_argument("--host", default="127.0.0.1", help="address (%(default)s)")
    listen_cmd.add_argument("--port", type=int, default=8765, help="port (%(default)s)")
    listen_cmd.add_argument("--secret", help="the webhook secret (whsec_...)")
    listen_cmd.add_argument(
        "--count", type=int, default=0, help="exit 0 after this many valid webhooks; 0: never"
    )
    listen_cmd.add_argument(
        "--timeout", type=float, default=0, help="exit 5 if --count is not reached in N s"
    )
    listen_cmd.set_defaults(handler=listen)

    download_cmd = cli_client.command(
        commands,
        "download",
        "stream an export's CSV files, merged into one, to a file",
        "Stream GET /v1/exports/ID/csv to a file (written to a temporary file first, renamed "
        "when complete), with a progress bar on a terminal when the size is known.",
    )
    download_cmd.add_argument("export_id", metavar="ID", help="the export id (exp_...)")
    download_cmd.add_argument(
        "-o",
        "--output",
        help="file to write ('-' for standard output); default: the name the gateway suggests",
    )
    download_cmd.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    cli_client.add_connection(download_cmd)
    download_cmd.add_argument(
        "--escape-formulas",
        action="store_true",
        help="prefix cells that a spreadsheet would run as a formula (=, +, -, @, tab, CR) "
        "with ' (for files opened in a spreadsheet)",
    )
    download_cmd.set_defaults(handler=download)

    cli_client.register(commands)
    cli_feeds.register(commands)
    cli_verify.register(commands)

    args = parser.parse_args(argv)
    return cli_client.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
