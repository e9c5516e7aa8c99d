"""``export-gateway download``: stream an export's merged CSV from the gateway to a file.

The body goes to a temporary file beside the target and is renamed over it only once the
gateway has ended the response cleanly, so an interrupted download never leaves a file that
looks complete. On a terminal a progress line is redrawn in place: a bar with the percentage
when the answer says its size (``Content-Length``), else the bytes so far and the rate.
Exit codes: 0 done, 1 the gateway answered an error (its problem detail is printed), 3
transport error, truncated download or a file that cannot be written (see ``EXIT_CODES``).
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

OK, HTTP_ERROR, TRANSPORT = 0, 1, 3
BAR_WIDTH = 30
_FILENAME = re.compile(r'filename="([^"/\\]+)"')
_PROGRESS_EVERY_SECONDS = 0.25


class Progress:
    """One progress line on stderr: bytes so far (and the share of the whole, when the
    answer says its length: an archived copy does) and the rate. Redrawn in place on a
    terminal; elsewhere only the final line is written."""

    def __init__(self, stream: IO[str], *, enabled: bool, total: int | None = None) -> None:
        self.stream = stream
        self.enabled = enabled
        self.live = enabled and stream.isatty()
        self.total = total if total and total > 0 else None
        self.started = time.monotonic()
        self.drawn = 0.0
        self.bytes = 0

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
        if self.total is None:
            return f"{_size(self.bytes)} ({self.bytes} bytes) in {elapsed:.1f} s, {rate:.1f} MB/s"
        share = min(self.bytes / self.total, 1.0)
        filled = int(share * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {share:4.0%}  {_size(self.bytes)} of {_size(self.total)}, "
            f"{elapsed:.1f} s, {rate:.1f} MB/s"
        )


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
    *,
    export_id: str,
    output: str | None,
    url: str,
    key: str | None,
    quiet: bool,
    escape_formulas: bool = False,
) -> int:
    err = sys.stderr
    progress = Progress(err, enabled=not quiet)
    temp: Path | None = None
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/csv"}
    try:
        with (
            httpx.Client(
                base_url=url, headers=headers, timeout=httpx.Timeout(60.0, connect=10.0)
            ) as client,
            client.stream(
                "GET",
                f"/v1/exports/{export_id}/csv",
                params={"escape_formulas": "true"} if escape_formulas else None,
            ) as response,
        ):
            if response.status_code != 200:
                response.read()
                err.write(
                    f"export-gateway download: {response.status_code} "
                    f"{response.reason_phrase}: {_problem(response)}\n"
                )
                return HTTP_ERROR
            target = _target(output, response, export_id)
            size = response.headers.get("content-length", "")
            progress = Progress(err, enabled=not quiet, total=int(size) if size.isdigit() else None)
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
