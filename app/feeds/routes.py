"""Thin HTTP routes for feeds: parse, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.exports.schemas import Export, ExportPage
from app.feeds.schemas import Feed, FeedCreate, FeedPage, FeedPatch
from app.web.deps import ClientId, FeedsDep
from app.web.problems import problem_responses

router = APIRouter(prefix="/v1/feeds", tags=["feeds"], responses=problem_responses(401, 404, 503))

_Limit = Annotated[int, Query(ge=1, le=100, description="Items per page (1 to 100).")]
_Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page (opaque).")
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Feed,
    summary="Create a feed",
    description="A saved query exported on a five-field UTC cron schedule; each run holds "
    "exactly the activity created since the previous one. 409 beyond the client's feed limit.",
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(400, 409, 413, 415, 422),
    },
)
async def create_feed(
    body: FeedCreate, client_id: ClientId, feeds: FeedsDep, response: Response
) -> Feed:
    feed = await feeds.create(client_id, body)
    response.headers["Location"] = f"/v1/feeds/{feed.id}"
    return feed


@router.get("", response_model=FeedPage, summary="The caller's feeds, newest first")
async def list_feeds(
    client_id: ClientId, feeds: FeedsDep, limit: _Limit = 20, cursor: _Cursor = None
) -> FeedPage:
    return await feeds.page(client_id, limit=limit, cursor=cursor)


@router.get("/{feed_id}", response_model=Feed, summary="One feed")
async def get_feed(feed_id: str, client_id: ClientId, feeds: FeedsDep) -> Feed:
    return await feeds.get(client_id, feed_id)


@router.patch(
    "/{feed_id}",
    response_model=Feed,
    summary="Change a feed's schedule, paused, callback_url or metadata",
    description="The query (`filter`, `fields`, `site_id`, `start_from`) cannot change (422): "
    "a changed query would break exactly-once delivery, so create a new feed instead. "
    "Resuming a paused feed catches up in one run covering the whole gap.",
    responses=problem_responses(400, 413, 415, 422),
)
async def patch_feed(feed_id: str, body: FeedPatch, client_id: ClientId, feeds: FeedsDep) -> Feed:
    return await feeds.patch(client_id, feed_id, body)


@router.delete(
    "/{feed_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a feed (its runs' exports stay)",
)
async def delete_feed(feed_id: str, client_id: ClientId, feeds: FeedsDep) -> Response:
    await feeds.delete(client_id, feed_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{feed_id}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Export,
    summary="Start a run now",
    description="The run's export, with `feed_id` and `window`. 409 while a run of the feed is "
    "unfinished (runs never overlap), or when the window would be empty.",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(409),
    },
)
async def run_feed(
    feed_id: str, client_id: ClientId, feeds: FeedsDep, response: Response
) -> Export:
    export = await feeds.run_now(client_id, feed_id)
    response.headers["Location"] = f"/v1/exports/{export.id}"
    return export


@router.get(
    "/{feed_id}/runs",
    response_model=ExportPage,
    summary="The feed's runs (their exports), newest first",
    responses=problem_responses(422),
)
async def list_runs(
    feed_id: str, client_id: ClientId, feeds: FeedsDep, limit: _Limit = 20, cursor: _Cursor = None
) -> ExportPage:
    return await feeds.runs(client_id, feed_id, limit=limit, cursor=cursor)
