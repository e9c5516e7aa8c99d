"""FastAPI dependencies as ``Annotated`` aliases, so routes read as plain signatures.

They are ``async def`` although none of them awaits: FastAPI runs a plain ``def`` dependency in
a worker thread, and those thread hops cost more than the rest of a status read put together
(bench/status_reads.py, docs/PERFORMANCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.archive.service import ArchiveService
from app.exports.csv import CsvService
from app.exports.service import ExportService
from app.feeds.service import FeedService
from app.platform.logs import bind
from app.webhooks.service import WebhookService
from app.wiring.runtime import Runtime

# Declares the bearer scheme in the OpenAPI document (and the Authorize button in /docs);
# the key itself is checked by ApiKeys, which answers 401 problems.
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_exports(request: Request) -> ExportService:
    runtime: Runtime = request.app.state.runtime
    return runtime.exports


async def get_csv(request: Request) -> CsvService:
    runtime: Runtime = request.app.state.runtime
    return runtime.csv


async def get_feeds(request: Request) -> FeedService:
    runtime: Runtime = request.app.state.runtime
    return runtime.feeds


async def get_archive(request: Request) -> ArchiveService:
    runtime: Runtime = request.app.state.runtime
    return runtime.archive


async def get_webhooks(request: Request) -> WebhookService:
    runtime: Runtime = request.app.state.runtime
    return runtime.webhooks


# How a route that authenticates without the ``ClientId`` dependency (the status read, the
# accept route) still shows the bearer scheme in the OpenAPI document.
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def authenticate(request: Request) -> str:
    """The client id of the request's API key (401 problem when there is none or it is wrong),
    bound to the request's log lines."""
    client_id: str = request.app.state.api_keys.client_for(request.headers.get("authorization"))
    request.state.client_id = client_id
    bind(client_id=client_id)
    return client_id


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_client_id(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> str:
    return authenticate(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ExportsDep = Annotated[ExportService, Depends(get_exports)]
CsvDep = Annotated[CsvService, Depends(get_csv)]
ArchiveDep = Annotated[ArchiveService, Depends(get_archive)]
ClientId = Annotated[str, Depends(get_client_id)]
WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
FeedsDep = Annotated[FeedService, Depends(get_feeds)]


@dataclass(frozen=True, slots=True)
class Caller:
    client_id: str
    runtime: Runtime


async def admitted_caller(request: Request) -> Caller:
    """For ``POST /v1/exports`` (a ``DirectRoute``): the caller, authenticated and counted
    against its rate limit (429 when over it), before the body is read, so a bad key answers
    401 whatever the body."""
    client_id = authenticate(request)
    runtime = runtime_of(request)
    await runtime.rate_limiter.admit(client_id)
    return Caller(client_id, runtime)


AdmittedCaller = Annotated[Caller, Depends(admitted_caller)]
