"""Thin HTTP routes for exports: parse, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from app.exports.idempotency import HEADER as IDEMPOTENCY_KEY
from app.exports.idempotency import StoredAnswer, request_hash
from app.exports.schemas import Export, ExportPage, ExportRequest, ExportStatus
from app.web.deps import (
    BEARER_SECURITY,
    AdmittedCaller,
    ClientId,
    ExportsDep,
    authenticate,
    runtime_of,
)
from app.web.problems import problem_responses
from app.web.routing import direct_route

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=problem_responses(401, 503))

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until the gateway next asks upstream (only while unfinished)",
        "schema": {"type": "integer"},
    }
}


@direct_route(
    router,
    "",
    method="POST",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Export,
    summary="Accept an export request",
    description="Answers at once with the export (`queued`, or `running`/`completed` when it "
    "shares an identical export's upstream task) and `Location`. With `Idempotency-Key`, the "
    "same key and body answer the first response again (header `Idempotent-Replayed: true`).",
    responses={
        202: {
            "description": "Accepted",
            "headers": {
                "Location": {"description": "The export's URL", "schema": {"type": "string"}},
                "Idempotent-Replayed": {
                    "description": "`true` when this is a stored answer to an earlier request",
                    "schema": {"type": "string"},
                },
            },
        },
        **problem_responses(400, 409, 413, 415, 422, 429),
    },
    openapi_extra=BEARER_SECURITY,
)
async def submit_export(
    # A DirectRoute (like the status read): FastAPI's per-request dependency solving was the
    # largest share of the cost. The caller comes first, authenticated and counted against
    # its rate limit, so a bad key answers 401 whatever the body.
    caller: AdmittedCaller,
    body: ExportRequest,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_KEY,
            description="At most 255 characters, kept 24 hours per client: the same key with "
            "the same body answers the first response again; with another body, 422; while the "
            "first request is still being handled, 409.",
            examples=["9d1c7f52-4e0b-4a8e-9c1e-0b5f3f1f2a77"],
        ),
    ] = None,
) -> Response:
    runtime = caller.runtime

    async def accept() -> StoredAnswer:
        export = await runtime.exports.submit(caller.client_id, body)
        return StoredAnswer(
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/v1/exports/{export.id}"},
            body=export.model_dump_json(),
        )

    body_hash = ""  # only a request with a key is ever compared with another
    if idempotency_key is not None:
        body_hash = request_hash(body.model_dump(mode="json", exclude_unset=True))
    answer = await runtime.idempotency.run(caller.client_id, idempotency_key, body_hash, accept)
    headers = dict(answer.headers)
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(answer.body, answer.status, headers=headers, media_type="application/json")


@router.get(
    "",
    response_model=ExportPage,
    summary="The caller's exports, newest first",
    description="Pages are stable while new exports are submitted: pass `next_cursor` back as "
    "`cursor`; newer exports never show up in later pages. With `status`, a page may hold "
    "fewer than `limit` exports; only `next_cursor: null` means the end.",
    responses=problem_responses(422),
)
async def list_exports(
    client_id: ClientId,
    exports: ExportsDep,
    status: Annotated[
        ExportStatus | None, Query(description="Only exports with this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Exports per page (1 to 100).")] = 20,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            description="`next_cursor` of the previous page (opaque).",
            examples=["MTc2NDIzNzYwMDAwMDpleHBfM2tUTWQ5eDBRZTJiVzdzWXYxTGNSZw"],
        ),
    ] = None,
) -> ExportPage:
    return await exports.page(client_id, status=status, limit=limit, cursor=cursor)


@direct_route(
    router,
    "/{export_id}",
    method="GET",
    response_model=Export,
    summary="One export",
    responses={
        200: {"description": "The export", "headers": _RETRY_AFTER},
        **problem_responses(404),
    },
    openapi_extra=BEARER_SECURITY,
)
async def get_export(export_id: str, request: Request) -> Response:
    # The hottest route: a DirectRoute, so FastAPI neither solves dependencies nor validates
    # the answer (most of its cost; docs/PERFORMANCE.md). Same checks, same answer, by hand.
    client_id = authenticate(request)
    export, retry_after = await runtime_of(request).exports.get(client_id, export_id)
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return Response(export.model_dump_json(), media_type="application/json", headers=headers)


@router.delete(
    "/{export_id}",
    response_model=Export,
    summary="Cancel an unfinished export",
    description="A queued or running export becomes `canceled` and sends no webhooks. Its "
    "upstream task stops (and frees its slot) unless other exports share it; they carry on. "
    "A finished export answers 409.",
    responses=problem_responses(404, 409),
)
async def cancel_export(export_id: str, client_id: ClientId, exports: ExportsDep) -> Export:
    return await exports.cancel(client_id, export_id)
