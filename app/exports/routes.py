"""Thin HTTP routes for exports: parse, call the service, shape the response."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.deps import ClientId, ExportsDep
from app.exports.schemas import Export, ExportRequest
from app.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=PROBLEM_RESPONSES)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Export,
    summary="Accept an export request",
    responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}}},
)
async def submit_export(
    body: ExportRequest, client_id: ClientId, exports: ExportsDep, response: Response
) -> Export:
    export = await exports.submit(client_id, body)
    response.headers["Location"] = f"/v1/exports/{export.id}"
    return export


@router.get("/{export_id}", response_model=Export, summary="One export")
async def get_export(
    export_id: str, client_id: ClientId, exports: ExportsDep, response: Response
) -> Export:
    export, retry_after = await exports.get(client_id, export_id)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return export
