"""Thin HTTP routes for an export's webhooks: the attempt log and redelivery."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.web.deps import ClientId, WebhooksDep
from app.web.problems import PROBLEM_RESPONSES, Problem
from app.webhooks.schemas import Deliveries, EventView

router = APIRouter(prefix="/v1/exports", tags=["webhooks"], responses=PROBLEM_RESPONSES)


@router.get(
    "/{export_id}/deliveries",
    response_model=Deliveries,
    summary="Every webhook delivery attempt for the export, oldest first",
)
async def list_deliveries(export_id: str, client_id: ClientId, webhooks: WebhooksDep) -> Deliveries:
    return await webhooks.deliveries(client_id, export_id)


@router.post(
    "/{export_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventView,
    summary="Send the export's latest event again, with its original webhook-id",
    responses={409: {"description": "The export has no event yet", "model": Problem}},
)
async def redeliver(export_id: str, client_id: ClientId, webhooks: WebhooksDep) -> EventView:
    return await webhooks.redeliver(client_id, export_id)
