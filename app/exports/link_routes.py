"""Thin routes of an export's links: the merged CSV download, and re-running an export.

``GET /v1/exports/{id}/csv`` answers with ``CsvResponse``, a streaming response that, when the
stream breaks after the answer has started, leaves the chunked body unterminated: the server
then drops the connection and the client sees an error, not a clean end of a truncated file.
The download's deadline bounds the sending side too: a caller that stops reading is cut off
then, and its download lease and file connection are given back.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.archive.routes import archived_csv_response
from app.exports.csv import CsvDownload, CsvStreamError
from app.exports.schemas import Export
from app.web.deps import ArchiveDep, ClientId, CsvDep, ExportsDep
from app.web.problems import PROBLEM_RESPONSES, Problem

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=PROBLEM_RESPONSES)


class CsvResponse(StreamingResponse):
    def __init__(self, download: CsvDownload) -> None:
        super().__init__(
            download.body(),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{download.filename}"',
                "Cache-Control": "no-store",
                "X-Export-Files": str(len(download.links)),
            },
        )
        self.download = download
        self.deadline_seconds = download.fetcher.deadline_seconds

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        sent = 0
        error = f"the download passed its deadline of {self.deadline_seconds:g} s"
        try:
            with anyio.move_on_after(self.download.deadline - time.monotonic()):
                async for chunk in self.body_iterator:
                    sent += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                error = ""
        except CsvStreamError as exc:
            error = str(exc)
        if error:
            log.error(
                "csv download aborted",
                extra={"export_id": self.download.export.id, "error": error, "bytes": sent},
            )
            return  # the body stays unfinished: the server closes the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:  # a body cut off mid-way: close its file now
                await aclose()
            await self.download.aclose()


_CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every file of the export as one CSV with one header row",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
    409: {
        "description": "The export has not completed (or failed, or was canceled)",
        "model": Problem,
    },
    410: {
        "description": "The CSV files have expired; the problem names the rerun route",
        "model": Problem,
    },
    206: {"description": "A byte range of an archived copy (`Range`)"},
    304: {"description": "`If-None-Match` names the archived copy's ETag"},
    416: {"description": "The range lies outside an archived copy", "model": Problem},
    503: {"description": "The archived copy cannot be read just now", "model": Problem},
    429: {
        "description": "The client already has its maximum of downloads open; retry after "
        "`Retry-After` seconds",
        "model": Problem,
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    502: {
        "description": "The file host refused the first file, or its link is not one the "
        "gateway fetches",
        "model": Problem,
    },
}


@router.get(
    "/{export_id}/csv",
    summary="The export's CSV files as one CSV",
    status_code=status.HTTP_200_OK,
    response_class=CsvResponse,
    responses=_CSV_RESPONSES,
)
async def download_csv(
    export_id: str,
    client_id: ClientId,
    csv: CsvDep,
    archive: ArchiveDep,
    request: Request,
    escape_formulas: Annotated[
        bool,
        Query(
            description="Prefix with `'` every cell beginning with `=`, `+`, `-`, `@`, a tab "
            "or a carriage return (for files opened in a spreadsheet); otherwise the files' "
            "bytes are passed on unchanged."
        ),
    ] = False,
) -> Response:
    # Once the gateway's own copy exists it is what /csv serves (app/archive/routes.py),
    # byte for byte, or with formulas escaped on request.
    if copy := await archive.open_copy(client_id, export_id):
        lease = await csv.lease(client_id)
        return archived_csv_response(copy, request.headers, lease, escape_formulas)
    return CsvResponse(await csv.open(client_id, export_id, escape_formulas=escape_formulas))


@router.post(
    "/{export_id}/rerun",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Export,
    summary="Run a finished or expired export again",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        409: {"description": "The export has not finished yet", "model": Problem},
    },
)
async def rerun_export(
    export_id: str, client_id: ClientId, exports: ExportsDep, response: Response
) -> Export:
    export = await exports.rerun(client_id, export_id)
    response.headers["Location"] = f"/v1/exports/{export.id}"
    return export
