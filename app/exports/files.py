"""Fetching an export's CSV files from the file host: one guarded path for every reader.

CSV links are upstream's data, not trusted. ``FileFetcher`` is the only way the gateway reads
them (the ``/csv`` download, and anything else that copies the files), and it holds these
rules in one place:

* the connection goes through the SSRF guard under the file policy (the client is built by
  the wiring with ``app.webhooks.ssrf.guarded_file_client``:
  ``https`` to a public address, or an address inside ``GATEWAY_FILE_ALLOWED_NETWORKS``;
  never a metadata address; checked for the address actually connected to);
* no redirect is followed, no proxy is read from the environment, no credential is sent;
* ``Accept-Encoding: identity`` is asked for, and an answer encoded anyway (gzip, ...) is
  refused rather than inflated: a small compressed file must not become gigabytes here;
* the bytes are read raw, each read bounded by what is left of the download's total deadline
  (``GATEWAY_DOWNLOAD_DEADLINE_SECONDS``), so a host trickling a row a second cannot hold a
  download open for ever.

Failures before anything was sent are ``UpstreamFailure`` (a 502 problem); once the answer
has started they are ``CsvStreamError`` and the answer is cut short.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import httpx

from app.platform.errors import UpstreamFailure

_IDENTITY = frozenset({"", "identity"})


class CsvStreamError(Exception):
    """The merged CSV cannot be completed; the response must end as an error."""


def link_host(url: str) -> str:
    """Only the host of a link for messages and logs: the query holds its signature."""
    return urlsplit(url).hostname or "?"


class FileFetcher:
    """Opens CSV links through the guarded file client and streams their bytes."""

    def __init__(self, http: httpx.AsyncClient, *, deadline_seconds: float) -> None:
        self.http = http
        self.deadline_seconds = deadline_seconds

    def deadline(self) -> float:
        """The monotonic time by which a download starting now must be done."""
        return time.monotonic() + self.deadline_seconds

    async def open(self, link: str, number: int, count: int, *, mid_stream: bool) -> httpx.Response:
        """GET one file, streamed; its status and encoding checked (the body is left unread)."""
        try:
            request = self.http.build_request(
                "GET", link, headers={"Accept": "text/csv, */*", "Accept-Encoding": "identity"}
            )
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = f"file {number} of {count} could not be fetched from {link_host(link)} "
            # The guard's refusal carries a reason fit to show (the host and the kind of
            # address, never a path or query); other errors only their kind.
            reason = getattr(exc, "reason", None)
            if isinstance(reason, str):
                message += f"({reason})"
                error = CsvStreamError(message) if mid_stream else UpstreamFailure(message)
                raise error from None
            message += f"({type(exc).__name__})"
            raise self._failure(message, mid_stream) from None
        message = ""
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if response.status_code != 200:
            message = (
                f"the file host {link_host(link)} answered {response.status_code} for file "
                f"{number} of {count}"
            )
            if not mid_stream:
                message += "; if the files are gone, POST the export's rerun route to run it again"
        elif encoding not in _IDENTITY:
            message = (
                f"the file host {link_host(link)} sent file {number} of {count} "
                f"{encoding[:20]!r}-encoded although identity was asked for"
            )
        if message:
            await response.aclose()
            raise self._failure(message, mid_stream)
        return response

    @staticmethod
    def _failure(message: str, mid_stream: bool) -> Exception:
        if mid_stream:
            return CsvStreamError(message)
        if message.startswith("file "):
            message += "; try again later"
        return UpstreamFailure(message)

    async def chunks(
        self, response: httpx.Response, number: int, count: int, deadline: float
    ) -> AsyncIterator[bytes]:
        """The raw bytes of an open file, each read bounded by what is left until
        ``deadline`` (monotonic); ``CsvStreamError`` when the file breaks off or time is up."""
        reader = response.aiter_raw().__aiter__()
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                with anyio.fail_after(remaining):
                    chunk = await reader.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise CsvStreamError(
                    f"the download passed its deadline of {self.deadline_seconds:g} s "
                    f"in file {number} of {count}"
                ) from None
            except httpx.HTTPError as exc:
                raise CsvStreamError(
                    f"file {number} of {count} broke off mid-download ({type(exc).__name__})"
                ) from None
            yield chunk
