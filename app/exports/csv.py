"""One CSV out of an export's files: stream every file, in order, with a single header row.

Upstream splits a large export over several links. ``CsvService.open`` checks the export can be
downloaded (completed, not expired, the caller's own) and opens the first file before anything
is answered, so the common failures are still clean problem+json answers. ``CsvDownload.body``
then streams file after file from the link host to the caller through ``CsvMerger``:

* a UTF-8 byte order mark at the start of any file is dropped;
* the first record of file 1 is the header; the first record of each later file must equal it
  and is dropped (only that record: data rows may hold quoted line breaks);
* a file that does not end with a line break gets one, so records never run together.

Nothing is held but the bytes of one chunk (and, until its end is found, the header record), so
memory stays flat however large the export. Once the answer has started, any failure (a file
cut off or refused, a header that differs, a file ending inside a quoted value) raises
``CsvStreamError``: the route then drops the connection instead of finishing the response, so a
caller never takes a truncated file for a complete one.

Links are pre-signed URLs: they are fetched with a client that carries no credentials (never the
upstream token), follows no redirect and reads no proxy settings from the environment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from app.exports.schemas import Export
from app.exports.service import ExportService
from app.platform.errors import Conflict, Gone, UpstreamFailure

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
MAX_HEADER_BYTES = 1 << 20  # a header record longer than this is not a CSV header


class CsvStreamError(Exception):
    """The merged CSV cannot be completed; the response must end as an error."""


class CsvMerger:
    """Turns the byte chunks of several CSV files, fed in order, into one CSV.

    ``feed(number, chunks)`` each file in turn and send what it yields, then ``finish()``.
    A missing line break at the end of a file is owed, and sent before whatever comes next
    (or by ``finish``), in the style of the files (CRLF or LF) as soon as one shows it."""

    def __init__(self) -> None:
        self.header: bytes | None = None  # the header record, without its terminator
        self.newline = b"\n"
        self._newline_known = False
        self._owed = False  # the output so far ends without a line break

    async def feed(self, number: int, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        pending = bytearray()  # the start of the file, until the header record is complete
        in_header = True
        bom_checked = False
        quoted = False  # inside a quoted value (odd count of '"' so far, after the header)
        last = b""
        async for chunk in chunks:
            if not chunk:
                continue
            if in_header:
                pending += chunk
                if not bom_checked:
                    if len(pending) < len(BOM) and BOM.startswith(bytes(pending)):
                        continue
                    if pending.startswith(BOM):
                        del pending[: len(BOM)]
                    bom_checked = True
                end = _record_end(pending)
                if end is None:
                    if len(pending) > MAX_HEADER_BYTES:
                        raise CsvStreamError(f"file {number} has no header line")
                    continue
                in_header = False
                emitted = self._header(number, bytes(pending[:end]))
                chunk = bytes(pending[end:])
                pending.clear()
                if emitted:
                    yield emitted
                if not chunk:
                    continue
            if self._owed:
                self._owed = False
                yield self.newline
            quoted ^= bool(chunk.count(b'"') & 1)
            last = chunk[-1:]
            yield chunk
        if in_header:  # the whole file is at most a header record without a line break
            if not bom_checked and pending.startswith(BOM):
                del pending[: len(BOM)]
            if not pending:
                return  # an empty file adds nothing
            if bytes(pending).count(b'"') % 2:
                raise CsvStreamError(f"file {number} ends inside a quoted value")
            emitted = self._header(number, bytes(pending))
            if emitted:
                yield emitted
            return
        if quoted:
            raise CsvStreamError(f"file {number} ends inside a quoted value (cut short?)")
        if last and last != b"\n":
            self._owed = True

    def finish(self) -> bytes:
        """What ends the output: the line break still owed, if any."""
        owed, self._owed = self._owed, False
        return self.newline if owed else b""

    def _header(self, number: int, record: bytes) -> bytes:
        """What to send for a file's header record: the record itself for the first file
        that has one, nothing for the others (whose header must be the same)."""
        if record.endswith(b"\r\n"):
            content, terminator = record[:-2], b"\r\n"
        elif record.endswith(b"\n"):
            content, terminator = record[:-1], b"\n"
        else:
            content, terminator = record, b""
        if terminator and not self._newline_known:
            self.newline, self._newline_known = terminator, True
        if self.header is None:
            self.header = content
            self._owed = not terminator
            return record
        if content != self.header:
            raise CsvStreamError(f"the header of file {number} differs from the first file's")
        return b""


def _record_end(data: bytearray) -> int | None:
    """Index just past the line break that ends the first CSV record of ``data``, or None
    when ``data`` does not hold a whole record yet. A line break inside a quoted value (an
    odd number of '"' before it) does not end the record."""
    start = quotes = 0
    while True:
        newline = data.find(b"\n", start)
        if newline < 0:
            return None
        quotes += data.count(b'"', start, newline)
        if quotes % 2 == 0:
            return newline + 1
        start = newline + 1


def csv_filename(export: Export) -> str:
    """The download's file name: what it is, when it was made, and which export."""
    day = export.completed_at.strftime("%Y-%m-%d") if export.completed_at else "undated"
    return f"clickwrap-activity-{day}-{export.id}.csv"


def _host(url: str) -> str:
    """Only the host of a link for messages and logs: the query holds its signature."""
    return urlsplit(url).hostname or "?"


@dataclass
class CsvDownload:
    """An export's files, ready to stream as one CSV (the first file is already open)."""

    export: Export
    filename: str
    http: httpx.AsyncClient
    first: httpx.Response | None
    links: list[str] = field(default_factory=list)
    # A feed run's CSV is the gateway's own stored file, not upstream's links.
    stored: Callable[[], AsyncIterator[bytes]] | None = None

    async def body(self) -> AsyncIterator[bytes]:
        if self.stored is not None:
            async for chunk in self.stored():
                yield chunk
            return
        merger = CsvMerger()
        count = len(self.links)
        try:
            for index, link in enumerate(self.links):
                number = index + 1
                response = self.first if index == 0 else None
                self.first = None
                if response is None:
                    response = await _open_file(self.http, link, number, count, mid_stream=True)
                try:
                    async for piece in merger.feed(number, _chunks(response, number, count)):
                        yield piece
                finally:
                    await response.aclose()
            if end := merger.finish():
                yield end
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self.first is not None:
            await self.first.aclose()
            self.first = None


async def _chunks(response: httpx.Response, number: int, count: int) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        raise CsvStreamError(
            f"file {number} of {count} broke off mid-download ({type(exc).__name__})"
        ) from None


async def _open_file(
    http: httpx.AsyncClient, link: str, number: int, count: int, *, mid_stream: bool
) -> httpx.Response:
    """GET one file, streamed; its status checked (the body is left unread)."""
    try:
        request = http.build_request("GET", link, headers={"Accept": "text/csv, */*"})
        response = await http.send(request, stream=True)
    except httpx.HTTPError as exc:
        message = f"file {number} of {count} could not be fetched from {_host(link)} "
        message += f"({type(exc).__name__})"
        if mid_stream:
            raise CsvStreamError(message) from None
        raise UpstreamFailure(message + "; try again later") from None
    if response.status_code != 200:
        await response.aclose()
        message = (
            f"the file host {_host(link)} answered {response.status_code} for file "
            f"{number} of {count}"
        )
        if mid_stream:
            raise CsvStreamError(message)
        raise UpstreamFailure(
            message + "; if the files are gone, POST the export's rerun route to run it again"
        )
    return response


class StoredFiles(Protocol):
    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes of a stored object, streamed."""
        ...


class CsvService:
    """Opens an export's merged CSV for a caller; no framework code here."""

    def __init__(
        self,
        *,
        exports: ExportService,
        http: httpx.AsyncClient,
        stored_files: StoredFiles | None = None,
    ) -> None:
        self.exports = exports
        self.http = http
        self.stored_files = stored_files

    async def open(self, client_id: str, export_id: str) -> CsvDownload:
        export, _ = await self.exports.get(client_id, export_id)
        rerun = f"/v1/exports/{export.id}/rerun"
        if export.status == "expired":
            expired_at = export.model_dump(mode="json")["expires_at"]
            raise Gone(
                f"the CSV files of export {export.id} expired at {expired_at} (upstream deletes "
                f"them after its retention period); POST {rerun} to run the same export again",
                extra={"expired_at": expired_at, "rerun": rerun},
            )
        if export.status != "completed":
            hint = "try again once it has completed" if not export.finished else ""
            if export.status in ("failed", "canceled"):
                hint = f"it has no CSV files; POST {rerun} to run it again"
            raise Conflict(
                f"export {export.id} is {export.status}: {hint}",
                extra={"export_status": export.status},
            )
        if export.feed_id is not None:
            return await self._feed_run_file(export)
        links = list(export.links)
        first = None
        if links:
            first = await _open_file(self.http, links[0], 1, len(links), mid_stream=False)
        log.info("csv download", extra={"export_id": export.id, "files": len(links)})
        return CsvDownload(export, csv_filename(export), self.http, first, links)

    async def _feed_run_file(self, export: Export) -> CsvDownload:
        """A completed feed run's own windowed file, from the gateway's store."""
        record = await self.exports.store.get_export(export.id)
        run = record.run_file if record is not None else None
        if run is None or run.object_key is None or self.stored_files is None:
            raise Gone(f"the windowed CSV of feed run {export.id} is no longer stored")
        key, files = run.object_key, self.stored_files
        log.info("csv download", extra={"export_id": export.id, "stored": True})
        return CsvDownload(
            export, csv_filename(export), self.http, None, [], lambda: files.read(key)
        )
