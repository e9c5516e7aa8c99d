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

Links are fetched by ``app.exports.files.FileFetcher`` (the guarded path every reader of the
files shares). A client has at most ``GATEWAY_CLIENT_MAX_DOWNLOADS`` downloads open at once
(one more is a 429 with ``Retry-After``), and each ends within
``GATEWAY_DOWNLOAD_DEADLINE_SECONDS``. On request (``escape_formulas``) ``FormulaEscaper``
prefixes with ``'`` every cell a spreadsheet would run as a formula; otherwise the bytes are
passed on as the files hold them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import httpx

from app.exports.files import CsvStreamError as CsvStreamError
from app.exports.files import FileFetcher
from app.exports.schemas import Export
from app.exports.service import ExportService
from app.platform import keys
from app.platform.errors import Conflict, Gone
from app.platform.leases import ClientLeases, Lease

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
MAX_HEADER_BYTES = 1 << 20  # a header record longer than this is not a CSV header


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


class FormulaEscaper:
    """Prefixes with ``'`` every CSV cell whose value begins with ``=``, ``+``, ``-``, ``@``, a
    tab or (inside quotes) a carriage return, so a spreadsheet shows it as text instead of
    running it (OWASP, "CSV injection"). Streams: ``feed`` chunks in order; nothing is held.
    An unquoted cell cannot begin with a carriage return (that is the end of its line)."""

    _START, _UNQUOTED, _QUOTED_START, _QUOTED, _QUOTE_IN_QUOTED = range(5)
    _FORMULA = frozenset(b"=+-@\t")
    _FORMULA_QUOTED = frozenset(b"=+-@\t\r")
    _CELL_END = re.compile(rb"[,\r\n]")

    def __init__(self) -> None:
        self.state = self._START

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        i, n = 0, len(chunk)
        while i < n:
            state = self.state
            if state == self._START:
                b = chunk[i]
                if b == 0x22:  # '"'
                    out.append(b)
                    self.state = self._QUOTED_START
                    i += 1
                    continue
                if b in self._FORMULA:
                    out += b"'"
                self.state = self._UNQUOTED  # the cell's end, if this byte is one, below
            elif state == self._UNQUOTED:
                found = self._CELL_END.search(chunk, i)
                if found is None:
                    out += chunk[i:]
                    break
                out += chunk[i : found.end()]
                self.state = self._START
                i = found.end()
            elif state == self._QUOTED_START:
                if chunk[i] in self._FORMULA_QUOTED:
                    out += b"'"
                self.state = self._QUOTED
            elif state == self._QUOTED:
                end = chunk.find(b'"', i)
                if end < 0:
                    out += chunk[i:]
                    break
                out += chunk[i : end + 1]
                self.state = self._QUOTE_IN_QUOTED
                i = end + 1
            else:  # a quote inside a quoted value: doubled (still inside), or its end
                if chunk[i] == 0x22:
                    out.append(0x22)
                    self.state = self._QUOTED
                    i += 1
                else:
                    self.state = self._UNQUOTED
        return bytes(out)


def csv_filename(export: Export) -> str:
    """The download's file name: what it is, when it was made, and which export."""
    day = export.completed_at.strftime("%Y-%m-%d") if export.completed_at else "undated"
    return f"clickwrap-activity-{day}-{export.id}.csv"


@dataclass
class CsvDownload:
    """An export's files, ready to stream as one CSV (the first file is already open).
    Holds one of the client's download leases until ``aclose``."""

    export: Export
    filename: str
    fetcher: FileFetcher
    first: httpx.Response | None  # file 1, open
    links: list[str] = field(default_factory=list)
    deadline: float = 0.0  # monotonic: the whole download ends by then
    escape_formulas: bool = False
    lease: Lease | None = None
    # A feed run's CSV is the gateway's own stored file, not upstream's links.
    stored: Callable[[], AsyncIterator[bytes]] | None = None

    async def body(self) -> AsyncIterator[bytes]:
        escaper = FormulaEscaper() if self.escape_formulas else None
        if self.stored is not None:
            try:
                async for chunk in self.stored():
                    yield escaper.feed(chunk) if escaper else chunk
            finally:
                await self.aclose()
            return
        merger = CsvMerger()
        count = len(self.links)
        try:
            for index, link in enumerate(self.links):
                number = index + 1
                response = self.first if index == 0 else None
                self.first = None
                if response is None:
                    response = await self.fetcher.open(link, number, count, mid_stream=True)
                try:
                    chunks = self.fetcher.chunks(response, number, count, self.deadline)
                    async for piece in merger.feed(number, chunks):
                        yield escaper.feed(piece) if escaper else piece
                finally:
                    await response.aclose()
            if end := merger.finish():
                yield end
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        # Shielded: this also runs when the download was cut off by its deadline (a cancelled
        # scope), and the lease must be given back all the same.
        with anyio.CancelScope(shield=True):
            first, self.first = self.first, None
            if first is not None:
                await first.aclose()
            if self.lease is not None:
                await self.lease.release()


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
        fetcher: FileFetcher,
        downloads: ClientLeases,
        stored_files: StoredFiles | None = None,
    ) -> None:
        self.exports = exports
        self.fetcher = fetcher
        self.downloads = downloads
        self.stored_files = stored_files

    async def lease(self, client_id: str) -> Lease:
        """One of the client's download places (429 when it has them all), for a download
        served from elsewhere (an archived copy): the caller releases it when done."""
        return await self.downloads.take(keys.client_downloads(client_id))

    async def open(
        self, client_id: str, export_id: str, *, escape_formulas: bool = False
    ) -> CsvDownload:
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
        lease = await self.downloads.take(keys.client_downloads(client_id))
        if export.feed_id is not None:
            return await self._feed_run_file(export, lease, escape_formulas)
        deadline = self.fetcher.deadline()
        links = list(export.links)
        first = None
        try:
            if links:
                first = await self.fetcher.open(links[0], 1, len(links), mid_stream=False)
        except BaseException:
            await lease.release()
            raise
        log.info("csv download", extra={"export_id": export.id, "files": len(links)})
        return CsvDownload(
            export,
            csv_filename(export),
            self.fetcher,
            first,
            links,
            deadline=deadline,
            escape_formulas=escape_formulas,
            lease=lease,
        )

    async def _feed_run_file(
        self, export: Export, lease: Lease, escape_formulas: bool
    ) -> CsvDownload:
        """A completed feed run's own windowed file, from the gateway's store."""
        record = await self.exports.store.get_export(export.id)
        run = record.run_file if record is not None else None
        if run is None or run.object_key is None or self.stored_files is None:
            await lease.release()
            raise Gone(f"the windowed CSV of feed run {export.id} is no longer stored")
        key, files = run.object_key, self.stored_files
        log.info("csv download", extra={"export_id": export.id, "stored": True})
        return CsvDownload(
            export,
            csv_filename(export),
            self.fetcher,
            None,
            [],
            deadline=self.fetcher.deadline(),
            escape_formulas=escape_formulas,
            lease=lease,
            stored=lambda: files.read(key),
        )
