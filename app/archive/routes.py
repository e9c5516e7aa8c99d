"""The HTTP face of an archived copy: ``GET /v1/exports/{id}/csv`` answers with
``archived_csv_response`` once the export's copy exists (the route itself lives with the
export's other link routes, which fall back to upstream's links before that).

* ``ETag`` is the copy's sha256 (quoted); ``If-None-Match`` with it answers 304.
* ``Content-Length`` is known, so a client can show real progress.
* ``Range: bytes=a-b`` (also ``a-`` and ``-n``; one range) answers 206 with
  ``Content-Range``; a range that starts past the end answers 416 (``Content-Range: bytes
  */size``); ``If-Range`` with another ETag, several ranges, or a malformed header get the
  whole copy (200), as RFC 9110 allows.
* If the store fails once the answer has started, the body is left unfinished: the server
  drops the connection and the client sees an error, never a clean end of a short file.
"""

from __future__ import annotations

import logging
import re

import anyio
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.archive.service import ArchivedCsv
from app.archive.storage import StorageError
from app.exports.csv import FormulaEscaper
from app.platform.errors import RangeNotSatisfiable
from app.platform.leases import Lease

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The half-open byte range ``[start, end)`` a Range header asks for, None for the whole
    copy; raises ``RangeNotSatisfiable`` for a range that selects nothing."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:  # several ranges, other units, garbage: the whole copy
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None  # an invalid range: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the range asked for lies outside the CSV's {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


class ArchivedCsvResponse(Response):
    media_type = "text/csv; charset=utf-8"

    def __init__(
        self,
        copy: ArchivedCsv,
        request_headers: Headers,
        lease: Lease | None = None,
        escape_formulas: bool = False,
    ) -> None:
        self.lease = lease  # one of the client's download places, given back when done
        self.escaper = FormulaEscaper() if escape_formulas else None
        etag = f'"{copy.sha256}"'
        headers = {
            "Content-Disposition": f'attachment; filename="{copy.filename}"',
            "Cache-Control": "no-store",
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "X-Export-Source": "archive",
        }
        self.copy = copy
        self.span: tuple[int, int] | None = None
        status = 200
        if self.escaper is not None:
            # Escaped cells are other bytes than the copy's: the whole file, streamed, with
            # neither the copy's ETag nor byte ranges (nor a length known in advance).
            del headers["ETag"], headers["Accept-Ranges"]
            super().__init__(status_code=status, headers=headers)
            del self.headers["content-length"]  # Response's own, for its empty content
            return
        if _matches(request_headers.get("if-none-match"), etag):
            status, self.span = 304, (0, 0)
        else:
            if_range = request_headers.get("if-range")
            if if_range is None or if_range.strip() == etag:
                self.span = byte_range(request_headers.get("range"), copy.size)
            if self.span is not None:
                status = 206
                headers["Content-Range"] = f"bytes {self.span[0]}-{self.span[1] - 1}/{copy.size}"
        super().__init__(status_code=status, headers=headers)
        start, end = self.span or (0, copy.size)
        if status != 304:
            self.headers["Content-Length"] = str(end - start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send(scope, send)
        finally:
            if self.lease is not None:
                with anyio.CancelScope(shield=True):
                    await self.lease.release()

    async def _send(self, scope: Scope, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.status_code == 304 or scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        start, end = self.span or (0, self.copy.size)
        sent = 0
        try:
            if end > start:
                async for chunk in self.copy.body(start, end):
                    if self.escaper is not None:
                        chunk = self.escaper.feed(chunk)
                    sent += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except StorageError as exc:
            log.error(
                "archived csv download aborted",
                extra={"export_id": self.copy.export.id, "error": str(exc), "bytes": sent},
            )
            return  # the body stays unfinished: the server closes the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags or "*" in tags


def archived_csv_response(
    copy: ArchivedCsv,
    request_headers: Headers,
    lease: Lease | None = None,
    escape_formulas: bool = False,
) -> Response:
    return ArchivedCsvResponse(copy, request_headers, lease, escape_formulas)
