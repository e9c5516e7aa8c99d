"""Thin routes onto upstream: a site's export fields (cached) and one page of activity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.upstream.activity import MAX_PER_PAGE, ActivityService
from app.upstream.catalog import FieldCatalog
from app.web.deps import ClientId
from app.web.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["upstream"], responses=PROBLEM_RESPONSES)

MAX_SITE_ID = 2**53 - 1
UPSTREAM_PROBLEMS: dict[int | str, dict[str, Any]] = {
    502: {"description": "Upstream refused the request"},
    503: {"description": "Upstream unreachable or busy; retry after Retry-After seconds"},
}


async def get_catalog(request: Request) -> FieldCatalog:
    catalog: FieldCatalog = request.app.state.runtime.catalog
    return catalog


async def get_activity(request: Request) -> ActivityService:
    activity: ActivityService = request.app.state.runtime.activity
    return activity


CatalogDep = Annotated[FieldCatalog, Depends(get_catalog)]
ActivityDep = Annotated[ActivityService, Depends(get_activity)]


class SiteFieldList(BaseModel):
    data: list[str] = Field(examples=[["id", "signer_id", "created_time", "event_type"]])


@router.get(
    "/fields",
    response_model=SiteFieldList,
    summary="The site's export fields (cached from upstream)",
    responses=UPSTREAM_PROBLEMS,
)
async def site_fields(
    client_id: ClientId,
    catalog: CatalogDep,
    site_id: Annotated[int, Query(ge=1, le=MAX_SITE_ID, description="The Clickwrap site.")],
) -> SiteFieldList:
    fields = await catalog.site_fields(site_id)
    return SiteFieldList(data=list(fields.names))


@router.get(
    "/activity",
    summary="One page of upstream activity, for small queries",
    response_description="The upstream envelope, as upstream sent it",
    responses=UPSTREAM_PROBLEMS,
)
async def activity_page(
    client_id: ClientId,
    activity: ActivityDep,
    filter: Annotated[str | None, Query(max_length=4096, description="Upstream filter.")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 25,
) -> JSONResponse:
    return JSONResponse(await activity.page(filter=filter, page=page, per_page=per_page))
