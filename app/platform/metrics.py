"""Every Prometheus metric of the gateway, defined once (``prometheus-client``).

Each process (the API and every worker) keeps its own counters and histograms; Prometheus
scrapes each (``/metrics`` on the API, ``GATEWAY_WORKER_METRICS_PORT`` on a worker), and a
query *sums* them across processes. Counters count transitions where they happen. The gauges
(open tasks, waiting tasks, queue depth, live workers, ...) are different: each is one
cluster-wide value read from Redis at scrape time (``refresh_queue_gauges``: a few
O(1)/O(log n) commands, never a scan), so every process reports the same number and a query
takes the *max* across processes (a sum would count it once per process).

No ``_created`` series: ``disable_created_metrics`` below (they double the series count and no
query of ours needs them).

Other modules import the metric objects from here (webhook delivery uses
``WEBHOOK_ATTEMPTS`` and ``WEBHOOK_DEAD_LETTERS``).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from redis.asyncio import Redis

from app.platform import keys

disable_created_metrics()  # type: ignore[no-untyped-call]

# -- the API's HTTP requests (recorded by app/web/middleware.py) ----------------------------
HTTP_REQUESTS = Counter(
    "gateway_http_requests",
    "Requests the API answered, by route template (`<unmatched>` for no route), method and "
    "status class (2xx, 4xx, ...)",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "gateway_http_request_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

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
WORKERS_RECOVERED = Counter(
    "gateway_workers_recovered",
    "Workers found dead (heartbeat lapsed for GATEWAY_WORKER_RECOVERY_SECONDS) whose jobs this "
    "process handed back",
)
JOBS_HANDED_BACK = Counter(
    "gateway_jobs_handed_back", "Jobs a dead worker held that this process let run again at once"
)
FEED_RUNS = Counter(
    "gateway_feed_runs",
    "Feed run attempts by what became of them",
    ["outcome"],  # started, completed, retrying, failed (out of attempts or a bad row)
)
FEED_ROWS = Counter("gateway_feed_rows", "Rows written into feed runs' windowed CSVs")
SWEEP_RUNS = Counter("gateway_sweep_runs", "Self-healing sweeps run by this process")
ISOLATED_FAILURES = Counter(
    "gateway_isolated_failures",
    "One item of a loop over many that failed and was skipped so the others went on: a stored "
    "record that cannot be read, a follower that cannot be notified, a sweep repair that "
    "failed (by where)",
    ["where"],
)
SWEEP_REPAIRS = Counter(
    "gateway_sweep_repairs",
    "Things the self-healing sweep repaired, by kind (rescheduled, restarted, requeued, "
    "released, dropped_index, expiry, deliveries)",
    ["kind"],
)

CLUSTER_WIDE = "; cluster-wide, the same from every process: aggregate with max"

# -- read from Redis at scrape time: cluster-wide, the same in every process (aggregate: max) ---
OPEN_TASKS = Gauge(
    "gateway_open_tasks",
    "Upstream tasks not yet finished (queued or running)" + CLUSTER_WIDE,
)
WAITING_TASKS = Gauge(
    "gateway_waiting_tasks",
    "Queued tasks waiting for an upstream slot" + CLUSTER_WIDE,
)
ACTIVE_TASKS = Gauge(
    "gateway_active_tasks",
    "Tasks holding an upstream slot" + CLUSTER_WIDE,
)
OLDEST_WAITING_AGE = Gauge(
    "gateway_oldest_waiting_seconds",
    "Age of the oldest task waiting for a slot (0 when none)" + CLUSTER_WIDE,
)
JOB_QUEUE_DEPTH = Gauge(
    "gateway_job_queue_depth",
    "Jobs in the job queue (due or deferred)" + CLUSTER_WIDE,
)
WORKERS_ALIVE = Gauge(
    "gateway_workers_alive",
    "Workers whose heartbeat is within GATEWAY_READY_WORKER_SECONDS" + CLUSTER_WIDE,
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
