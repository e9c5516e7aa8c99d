"""Thin routes of an export's links: the merged CSV download, and re-running an export.

``GET /v1/exports/{id}/csv`` answers with ``CsvResponse``, a streaming response that, when the
stream breaks after the answer has started, leaves the chunked body unterminated: the server
then drops the connection and the client sees an error, not a clean end of a truncated file.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response, status
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

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        sent = 0
        try:
            async for chunk in self.body_iterator:
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except CsvStreamError as exc:
            log.error(
                "csv download aborted",
                extra={"export_id": self.download.export.id, "error": str(exc), "bytes": sent},
            )
            return  # the body stays unfinished: the server closes the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
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
    502: {"description": "The file host refused the first file", "model": Problem},
    503: {"description": "The archived copy cannot be read just now", "model": Problem},
}


@router.get(
    "/{export_id}/csv",
    summary="The export's CSV files as one CSV",
    status_code=status.HTTP_200_OK,
    response_class=CsvResponse,
    responses=_CSV_RESPONSES,
)
async def download_csv(
    export_id: str, client_id: ClientId, csv: CsvDep, archive: ArchiveDep, request: Request
) -> Response:
    # Once the gateway's own copy exists it is what /csv serves (app/archive/routes.py).
    if (copy := await archive.open_copy(client_id, export_id)) is not None:
        return archived_csv_response(copy, request.headers)
    return CsvResponse(await csv.open(client_id, export_id))


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
