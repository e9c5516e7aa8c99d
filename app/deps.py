"""FastAPI dependencies as ``Annotated`` aliases, so routes read as plain signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.exports.csv import CsvService
from app.exports.service import ExportService
from app.logs import bind
from app.runtime import Runtime
from app.webhooks.service import WebhookService


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_exports(request: Request) -> ExportService:
    return get_runtime(request).exports


def get_csv(request: Request) -> CsvService:
    return get_runtime(request).csv


def get_webhooks(request: Request) -> WebhookService:
    return get_runtime(request).webhooks


def get_client_id(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
) -> str:
    client_id: str = request.app.state.api_keys.client_for(authorization)
    request.state.client_id = client_id
    bind(client_id=client_id)
    return client_id


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ExportsDep = Annotated[ExportService, Depends(get_exports)]
CsvDep = Annotated[CsvService, Depends(get_csv)]
ClientId = Annotated[str, Depends(get_client_id)]
WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
