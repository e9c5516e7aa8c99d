"""Every Prometheus metric of the gateway, defined once (``prometheus-client``).

Each process (the API and every worker) keeps its own counters; Prometheus scrapes each
(``/metrics`` on the API, ``GATEWAY_WORKER_METRICS_PORT`` on a worker) and sums them. Counters
count transitions where they happen; the gauges of open tasks, waiting tasks and queue depth are
read from Redis sorted sets at scrape time (``refresh_queue_gauges``: a few O(1)/O(log n)
commands, never a scan).

Other modules import the metric objects from here (webhook delivery uses
``WEBHOOK_ATTEMPTS`` and ``WEBHOOK_DEAD_LETTERS``).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from app.platform import keys

# -- exports and upstream tasks --------------------------------------------------------------
EXPORTS = Counter(
    "gateway_exports",
    "Exports reaching a status (queued at acceptance; completed, failed, expired, canceled "
    "when the export's task gets there)",
    ["status"],
)
COALESCED = Counter(
    "gateway_coalesced_requests",
    "Accepted exports served by an existing upstream task (running or reusable) instead of "
    "a new one",
)
UPSTREAM_TASKS = Counter(
    "gateway_upstream_tasks",
    "Upstream tasks reaching a status (created, completed, ...)",
    ["status"],
)
POLLS_PER_EXPORT = Histogram(
    "gateway_polls_per_export",
    "Upstream polls an export's task needed before it finished",
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144),
)

# -- upstream requests -----------------------------------------------------------------------
UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests",
    "Requests to the Clickwrap API by route template, method and status code "
    "(`timeout` or `network` when no answer came)",
    ["route", "method", "status"],
)
UPSTREAM_LATENCY = Histogram(
    "gateway_upstream_request_seconds",
    "Latency of requests to the Clickwrap API",
    ["route", "method"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# -- webhooks (recorded by the webhook delivery code) -----------------------------------------
WEBHOOK_ATTEMPTS = Counter(
    "gateway_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, failed, gave_up)",
    ["outcome"],
)
WEBHOOK_DEAD_LETTERS = Counter(
    "gateway_webhook_dead_letters", "Webhook events given up on after the last retry"
)

# -- infrastructure --------------------------------------------------------------------------
REDIS_ERRORS = Counter(
    "gateway_redis_errors", "Redis commands that failed (connection, timeout, ...)", ["where"]
)
ARCHIVE_COPIES = Counter(
    "gateway_archive_copies",
    "Attempts to copy a completed export's CSV into the archive, by outcome",
    ["outcome"],  # archived | retry | failed
)
ARCHIVE_BYTES = Counter("gateway_archive_bytes", "Bytes written into the archive")
ARCHIVE_VERIFICATIONS = Counter(
    "gateway_archive_verifications",
    "Archived copies re-read and their sha256 compared, by outcome",
    ["outcome"],  # ok | mismatch | missing | error
)
ARCHIVE_DELETED = Counter(
    "gateway_archive_deleted", "Archived copies deleted at the end of their retention"
)
FEED_RUNS = Counter(
    "gateway_feed_runs",
    "Feed run attempts by what became of them",
    ["outcome"],  # started, completed, retrying, failed (out of attempts or a bad row)
)
FEED_ROWS = Counter("gateway_feed_rows", "Rows written into feed runs' windowed CSVs")
SWEEP_RUNS = Counter("gateway_sweep_runs", "Self-healing sweeps run by this process")
SWEEP_REPAIRS = Counter(
    "gateway_sweep_repairs",
    "Things the self-healing sweep repaired, by kind (rescheduled, restarted, requeued, "
    "released, dropped_index, expiry, deliveries)",
    ["kind"],
)

# -- read from Redis at scrape time ----------------------------------------------------------
OPEN_TASKS = Gauge("gateway_open_tasks", "Upstream tasks not yet finished (queued or running)")
WAITING_TASKS = Gauge("gateway_waiting_tasks", "Queued tasks waiting for an upstream slot")
ACTIVE_TASKS = Gauge("gateway_active_tasks", "Tasks holding an upstream slot")
OLDEST_WAITING_AGE = Gauge(
    "gateway_oldest_waiting_seconds", "Age of the oldest task waiting for a slot (0 when none)"
)
JOB_QUEUE_DEPTH = Gauge("gateway_job_queue_depth", "Jobs in the job queue (due or deferred)")
WORKERS_ALIVE = Gauge(
    "gateway_workers_alive", "Workers whose heartbeat is within GATEWAY_READY_WORKER_SECONDS"
)


async def refresh_queue_gauges(
    redis: Redis, *, job_queue_keys: tuple[str, ...], ready_worker_seconds: float
) -> None:
    """Set the scrape-time gauges from Redis (one pipeline of cheap commands)."""
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.OPEN_TASKS)
        pipe.zcard(keys.UPSTREAM_WAITING)
        pipe.zcard(keys.UPSTREAM_ACTIVE)
        pipe.zrange(keys.UPSTREAM_WAITING, 0, 0, withscores=True)
        pipe.zcount(keys.WORKERS, now - ready_worker_seconds, "+inf")
        for queue_key in job_queue_keys:
            pipe.zcard(queue_key)
        results = await pipe.execute()
    open_tasks, waiting, active, oldest, workers = results[:5]
    OPEN_TASKS.set(open_tasks)
    WAITING_TASKS.set(waiting)
    ACTIVE_TASKS.set(active)
    # waiting tasks are scored by creation time in milliseconds
    OLDEST_WAITING_AGE.set(max(0.0, now - oldest[0][1] / 1000) if oldest else 0.0)
    WORKERS_ALIVE.set(workers)
    if job_queue_keys:
        JOB_QUEUE_DEPTH.set(sum(results[5:]))
