"""``export-gateway download``: stream an export's merged CSV from the gateway to a file.

The body goes to a temporary file beside the target and is renamed over it only once the
gateway has ended the response cleanly, so an interrupted download never leaves a file that
looks complete. Exit codes: 0 done, 1 the gateway answered an error (its problem detail is
printed), 2 usage (e.g. no API key), 3 transport error or truncated download.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

OK, HTTP_ERROR, USAGE, TRANSPORT = 0, 1, 2, 3
_FILENAME = re.compile(r'filename="([^"/\\]+)"')
_PROGRESS_EVERY_SECONDS = 0.25


class Progress:
    """One progress line on stderr: bytes so far (and the share of the whole, when the
    answer says its length: an archived copy does) and the rate. Redrawn in place on a
    terminal; elsewhere only the final line is written."""

    def __init__(self, stream: IO[str], *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.live = enabled and stream.isatty()
        self.started = time.monotonic()
        self.drawn = 0.0
        self.bytes = 0
        self.total: int | None = None

    def add(self, count: int) -> None:
        self.bytes += count
        now = time.monotonic()
        if self.live and now - self.drawn >= _PROGRESS_EVERY_SECONDS:
            self.drawn = now
            self.stream.write("\r" + self._line(now))
            self.stream.flush()

    def done(self, note: str) -> None:
        if self.enabled:
            prefix = "\r" if self.live else ""
            self.stream.write(f"{prefix}{self._line(time.monotonic())}  {note}\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.bytes / elapsed / 1e6
        done = f"{_size(self.bytes)} ({self.bytes} bytes)"
        if self.total:
            done += f" of {_size(self.total)} ({100 * self.bytes / self.total:.0f}%)"
        return f"{done} in {elapsed:.1f} s, {rate:.1f} MB/s"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # pragma: no cover - the loop always returns


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return response.text.strip()[:500]


def _target(output: str | None, response: httpx.Response, export_id: str) -> str:
    if output:
        return output
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    return match.group(1) if match else f"{export_id}.csv"


def download_csv(
    *, export_id: str, output: str | None, url: str, key: str | None, quiet: bool
) -> int:
    err = sys.stderr
    if not key:
        err.write("export-gateway download: no API key: pass --key or set GATEWAY_API_KEY\n")
        return USAGE
    progress = Progress(err, enabled=not quiet)
    temp: Path | None = None
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/csv"}
    try:
        with (
            httpx.Client(
                base_url=url, headers=headers, timeout=httpx.Timeout(60.0, connect=10.0)
            ) as client,
            client.stream("GET", f"/v1/exports/{export_id}/csv") as response,
        ):
            if response.status_code != 200:
                response.read()
                err.write(
                    f"export-gateway download: {response.status_code} "
                    f"{response.reason_phrase}: {_problem(response)}\n"
                )
                return HTTP_ERROR
            target = _target(output, response, export_id)
            length = response.headers.get("content-length", "")
            progress.total = int(length) if length.isdigit() else None
            if target == "-":
                sink = sys.stdout.buffer
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    progress.add(len(chunk))
                sink.flush()
            else:
                path = Path(target)
                fd, name = tempfile.mkstemp(
                    prefix=f".{path.name}.", suffix=".part", dir=path.parent
                )
                temp = Path(name)
                with os.fdopen(fd, "wb") as sink:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                        progress.add(len(chunk))
                os.replace(temp, path)
                temp = None
    except httpx.HTTPError as exc:
        progress.done("FAILED")
        err.write(f"export-gateway download: transfer failed: {type(exc).__name__}: {exc}\n")
        return TRANSPORT
    except OSError as exc:
        progress.done("FAILED")
        err.write(f"export-gateway download: cannot write: {exc}\n")
        return TRANSPORT
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink()
    progress.done(f"-> {target}")
    return OK
