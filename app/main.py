"""The FastAPI application: ``uvicorn app.main:app``.

The lifespan builds the process runtime (Redis, the arq queue, the upstream client, services),
installs the one problem+json error handler and mounts the routers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import get_settings
from app.console import routes as console
from app.exports.link_routes import router as export_links_router
from app.exports.routes import router as exports_router
from app.feeds.routes import router as feeds_router
from app.platform.gc_tuning import tune_gc
from app.platform.logs import configure_for
from app.platform.queue import ArqJobQueue
from app.upstream.routes import router as upstream_router
from app.web import docs, problems, serverlimits
from app.web.auth import ApiKeys
from app.web.health import router as health_router
from app.web.middleware import RequestContextMiddleware
from app.web.requestbody import RequestBodyGuard
from app.webhooks.routes import router as webhooks_router
from app.wiring.runtime import build_runtime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    app.state.api_keys = ApiKeys(settings.api_key_digests())  # unsafe keys stop start-up here
    serverlimits.install(app)  # header size, header timeout, open connections
    queue = await ArqJobQueue.connect(settings)
    runtime = build_runtime(settings, queue)
    app.state.runtime = runtime
    # Logged in the background: a store that does not answer must not hold up start-up.
    archive_report = asyncio.create_task(runtime.archive.report_readiness())
    tune_gc()
    try:
        yield
    finally:
        archive_report.cancel()
        await runtime.close()
        await queue.close()


def create_app() -> FastAPI:
    configure_for(get_settings())  # JSON log lines, uvicorn's own included
    app = FastAPI(
        title="Clickwrap Export Gateway",
        version="0.1.0",
        summary="Asynchronous exports of Ironclad Clickwrap activity, done once and done well.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(RequestBodyGuard)
    problems.install(app)
    app.add_middleware(RequestContextMiddleware)
    # Routes are matched in this order: the callers' routes first, the docs last.
    app.include_router(exports_router)
    app.include_router(export_links_router)
    app.include_router(feeds_router)
    app.include_router(webhooks_router)
    app.include_router(health_router)
    app.include_router(upstream_router)
    app.include_router(console.router)
    app.mount("/console/static", console.static, name="console-static")
    docs.install(app)
    return app


app = create_app()
