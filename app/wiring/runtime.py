"""The shared parts of a process (API or worker), built once at startup and closed at shutdown.

Both processes need the same things: a Redis client, one httpx client for upstream, the request
pacer, the stores and the services. Building them here keeps ``app.main``'s lifespan and the
worker's ``on_startup`` to a few lines, and guarantees both are wired identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis

from app.archive.service import ArchiveService
from app.archive.storage import InvalidStorageUrl, open_storage
from app.archive.store import ArchivedCopies
from app.config import Settings
from app.console.service import ConsoleService
from app.console.store import ConsoleStore
from app.exports.csv import CsvService
from app.exports.files import FileFetcher
from app.exports.idempotency import IdempotencyKeys
from app.exports.lifecycle import Notifier, TaskLifecycle
from app.exports.service import ExportService
from app.exports.store import ExportStore
from app.feeds.service import FeedService
from app.feeds.store import FeedStore
from app.platform.connections import connect_redis
from app.platform.jobs import JobQueue
from app.platform.keyring import KeyRing
from app.platform.leases import ClientLeases
from app.platform.ratelimit import ClientRateLimiter
from app.upstream.activity import ActivityService
from app.upstream.catalog import FieldCatalog
from app.upstream.client import UpstreamClient
from app.upstream.pacing import RequestPacer
from app.upstream.transport import ShardedTransport
from app.webhooks.delivery import DELIVERY_TIMEOUT_SECONDS
from app.webhooks.service import WebhookService
from app.webhooks.signing import WebhookSigner
from app.webhooks.ssrf import CallbackPolicy, guarded_client, guarded_file_client
from app.webhooks.store import WebhookStore

UPSTREAM_CONNECT_SECONDS = 10.0


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    http: httpx.AsyncClient
    upstream: UpstreamClient
    store: ExportStore
    lifecycle: TaskLifecycle
    exports: ExportService
    notifier: Notifier | None
    webhooks: WebhookService
    catalog: FieldCatalog
    activity: ActivityService
    # CSV links are fetched by their own client: guarded (the file policy), no upstream token,
    # no redirects, no proxies.
    link_http: httpx.AsyncClient
    csv: CsvService
    idempotency: IdempotencyKeys
    rate_limiter: ClientRateLimiter
    feeds: FeedService
    archive: ArchiveService
    console: ConsoleService

    async def close(self) -> None:
        await self.catalog.close()
        await self.link_http.aclose()
        await self.http.aclose()
        await self.webhooks.client.aclose()
        await self.redis.aclose()


def upstream_http(settings: Settings) -> httpx.AsyncClient:
    """The httpx client for the upstream API (bench/upstream_floor.py measures it alone)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=UPSTREAM_CONNECT_SECONDS),
        transport=ShardedTransport(),
        follow_redirects=False,
        trust_env=False,
    )


def feed_storage_url(settings: Settings) -> str:
    """Where feed runs' CSVs go (under ``feeds/``): ``GATEWAY_FEED_STORAGE_URL``, else the
    archive's store, else ``.gateway/feeds`` under the working directory."""
    if settings.feed_storage_url:
        return settings.feed_storage_url
    if settings.archive_url:
        return settings.archive_url
    return "file://" + str(Path(".gateway/feeds").resolve())


def archive_copies(settings: Settings) -> ArchivedCopies | None:
    """The archive's store, or None when archiving is off. A URL that is not ``file:///``
    or ``s3://`` stops the process (a store that merely cannot be reached does not: /readyz
    and the start-up log report it)."""
    if not settings.archive_url:
        return None
    try:
        return ArchivedCopies(open_storage(settings.archive_url))
    except InvalidStorageUrl as exc:
        raise ValueError(f"GATEWAY_ARCHIVE_URL: {exc}") from None


def build_runtime(settings: Settings, queue: JobQueue) -> Runtime:
    # Bad webhook settings stop the process here, before anything is opened (the errors name
    # the setting, never a secret).
    signer = WebhookSigner.from_settings(settings.webhook_secret, settings.webhook_secrets)
    policy = CallbackPolicy.from_setting(settings.webhook_allowed_networks)
    copies = archive_copies(settings)
    file_policy = CallbackPolicy.for_files(settings.file_allowed_networks)
    redis = connect_redis(settings)
    http = upstream_http(settings)
    token = settings.upstream_token.get_secret_value() if settings.upstream_token else None
    upstream = UpstreamClient(
        http,
        base_url=settings.upstream_base_url,
        token=token,
        pacer=RequestPacer(
            redis,
            settings.upstream_max_rps,
            # an upper bound on one request's life: connect, then the per-phase timeouts
            hold_seconds=UPSTREAM_CONNECT_SECONDS + 2 * settings.upstream_timeout_seconds,
        ),
    )
    store = ExportStore(redis, record_ttl=settings.record_retention_seconds)
    webhooks = WebhookService(
        store=WebhookStore(redis, record_ttl=settings.record_retention_seconds),
        exports=store,
        queue=queue,
        signer=signer,
        policy=policy,
        client=guarded_client(policy),
        retry_schedule=settings.webhook_retry_schedule,
        in_flight=ClientLeases(
            redis,
            limit=settings.client_max_deliveries,
            # a lease outlives its delivery (15 s at most) only if the worker died first
            lease_seconds=DELIVERY_TIMEOUT_SECONDS + 15,
            what="webhook deliveries",
        ),
    )
    notifier: Notifier | None = webhooks
    lifecycle = TaskLifecycle(
        settings=settings, store=store, queue=queue, upstream=upstream, notifier=notifier
    )
    catalog = FieldCatalog(
        redis,
        upstream,
        fresh_seconds=settings.fields_cache_seconds,
        stale_seconds=settings.fields_stale_seconds,
        wait_seconds=settings.upstream_timeout_seconds,
    )
    activity = ActivityService(upstream, wait_seconds=settings.upstream_timeout_seconds)
    exports = ExportService(
        store=store,
        lifecycle=lifecycle,
        notifier=notifier,
        poll_initial_seconds=settings.poll_initial_seconds,
        callbacks=webhooks,
        catalog=catalog,
    )
    link_http = guarded_file_client(
        file_policy, timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=10.0)
    )
    fetcher = FileFetcher(link_http, deadline_seconds=settings.download_deadline_seconds)
    # Feed runs' windowed CSVs: the gateway's own files, in the object storage.
    run_files = open_storage(feed_storage_url(settings))
    csv = CsvService(
        exports=exports,
        fetcher=fetcher,
        stored_files=run_files,
        downloads=ClientLeases(
            redis,
            limit=settings.client_max_downloads,
            # a lease outlives its download only if the process died first
            lease_seconds=settings.download_deadline_seconds + 30,
            what="CSV downloads",
        ),
    )
    feeds = FeedService(
        settings=settings,
        store=FeedStore(redis, record_ttl=settings.record_retention_seconds),
        exports=exports,
        export_store=store,
        queue=queue,
        notifier=notifier,
        files=run_files,
        fetcher=fetcher,
        callbacks=webhooks,
        catalog=catalog,
    )
    lifecycle.feed_runs = feeds
    archive = ArchiveService(
        settings=settings,
        store=store,
        exports=exports,
        lifecycle=lifecycle,
        queue=queue,
        fetcher=fetcher,
        copies=copies,
    )
    client_digests = settings.api_key_digests()
    console = ConsoleService(
        store=ConsoleStore(redis, signin_per_minute=settings.console_signin_per_minute),
        exports=exports,
        export_store=store,
        webhooks=webhooks,
        client_keys=KeyRing(client_digests),
        admin_keys=KeyRing(settings.admin_key_digests()),
        clients=list(client_digests.values()),
        session_seconds=settings.console_session_seconds,
        upstream_cap=settings.upstream_max_active_tasks,
        ready_worker_seconds=settings.ready_worker_seconds,
        queue_keys=queue.queue_keys,
        feeds=feeds,
    )
    return Runtime(
        settings,
        redis,
        http,
        upstream,
        store,
        lifecycle,
        exports,
        notifier,
        webhooks,
        catalog,
        activity,
        link_http,
        csv,
        IdempotencyKeys(redis),
        ClientRateLimiter(redis, settings.client_rate_limit_per_minute),
        feeds,
        archive,
        console,
    )
