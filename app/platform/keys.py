"""Every Redis key the gateway owns, named in one place.

All keys start with ``gw:`` so that an operator can tell them from arq's own ``arq:*`` keys.

    gw:export:{export_id}          JSON   one caller's export (the caller-facing record)
    gw:client:{client_id}:exports  ZSET   the client's export ids, scored by creation time (ms)
    gw:exports:all                 ZSET   every client's export ids, scored by creation time (ms),
                                          for the operator console's all-clients view
    gw:task:{task_id}              JSON   one upstream task, shared by all exports of a query
    gw:task:{task_id}:exports      SET    ids of the exports that follow the task
    gw:tasks:open                  ZSET   task ids not yet finished, scored by creation time (ms)
    gw:tasks:completed             ZSET   completed, unexpired task ids, scored by expires_at (ms)
    gw:inflight:{fingerprint}      STR    the task id now serving a query (coalescing)
    gw:latest:{fingerprint}        STR    the task id of the newest completed run of a query
    gw:upstream:waiting            ZSET   queued task ids waiting for an upstream slot (first in,
                                          first out per client; clients' bursts interleaved)
    gw:upstream:active             ZSET   task ids holding an upstream slot
    gw:upstream:requests           ZSET   upstream requests in flight or recently answered (pacer)
    gw:fields:{site_id}            JSON   cached export fields of a site
    gw:fields:{site_id}:lock       STR    held by the one process fetching a site's fields
    gw:idem:{client_id}:{digest}   JSON   an Idempotency-Key's stored answer
    gw:ratelimit:{client_id}       ZSET   the client's recent POST /v1/exports (sliding window)
    gw:client:{client_id}:queue    STR    the score of the client's newest waiting task (fair
                                          queueing between clients for upstream slots)
    gw:deliveries:{client_id}      ZSET   the client's webhook deliveries in flight, scored by
                                          when each lease lapses (ms)
    gw:downloads:{client_id}       ZSET   the client's open /csv downloads, scored by when
                                          each lease lapses (ms)
    gw:event:{event_id}            JSON   one webhook event and its delivery state
    gw:export:{export_id}:events   LIST   event ids of an export, oldest first
    gw:export:{export_id}:attempts LIST   JSON delivery attempts of an export, oldest first
    gw:events:pending              ZSET   webhook event ids still being delivered, scored by when
                                          their next attempt is due (ms), for the sweep
    gw:webhooks:gave_up            ZSET   webhook events given up on, scored by when (ms), one
                                          day kept (the console's health strip)
    gw:workers                     ZSET   worker ids scored by their last heartbeat (unix seconds)
    gw:worker:{worker_id}:jobs     HASH   arq job ids the worker runs now -> the absolute expiry
                                          (ms) of each one's arq:in-progress marker
    gw:sweep:lock                  STR    the worker sweeping now (one sweep per interval)
    gw:feed:{feed_id}              JSON   one feed: its query, schedule, watermark, current run
    gw:feed:{feed_id}:runs         ZSET   export ids of the feed's runs, scored by creation (ms)
    gw:client:{client_id}:feeds    ZSET   the client's feed ids, scored by creation time (ms)
    gw:feeds:due                   ZSET   feed ids the scheduler must look at, scored by when (ms)
    gw:feeds:all                   ZSET   every client's feed ids by creation (ms): the operator
                                          console's all-clients view
    gw:archive:pending             ZSET   completed task ids whose archive copy is still to be
                                          made, scored by when its next attempt is due (ms)
    gw:archive:kept                ZSET   task ids with an archived copy in the store, scored
                                          by when it expires (ms; +inf: kept for ever)
    gw:console:secret              STR    the key signing console cookies and CSRF tokens (made
                                          once, shared by every API process)
    gw:console:session:{sid}       JSON   one signed-in console session (expires with it)
    gw:console:signin:{address}    ZSET   console sign-in attempts from one client address
                                          (sliding window)

One arq queue is ours to name, though arq owns what is in it:

    arq:queue:deliveries           ZSET   pending webhook deliveries (arq's default queue,
                                          arq:queue, holds every other job)
"""

from __future__ import annotations

DELIVERY_QUEUE = "arq:queue:deliveries"
PREFIX = "gw:"

OPEN_TASKS = f"{PREFIX}tasks:open"
COMPLETED_TASKS = f"{PREFIX}tasks:completed"
UPSTREAM_WAITING = f"{PREFIX}upstream:waiting"
UPSTREAM_ACTIVE = f"{PREFIX}upstream:active"
UPSTREAM_REQUESTS = f"{PREFIX}upstream:requests"
WORKERS = f"{PREFIX}workers"
SWEEP_LOCK = f"{PREFIX}sweep:lock"
EVENTS_PENDING = f"{PREFIX}events:pending"
FEEDS_DUE = f"{PREFIX}feeds:due"
ALL_FEEDS = f"{PREFIX}feeds:all"
ARCHIVE_PENDING = f"{PREFIX}archive:pending"
ARCHIVE_KEPT = f"{PREFIX}archive:kept"
ALL_EXPORTS = f"{PREFIX}exports:all"
WEBHOOK_GIVE_UPS = f"{PREFIX}webhooks:gave_up"
CONSOLE_SECRET = f"{PREFIX}console:secret"


def worker_jobs(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}:jobs"


def export(export_id: str) -> str:
    return f"{PREFIX}export:{export_id}"


def client_exports(client_id: str) -> str:
    return f"{PREFIX}client:{client_id}:exports"


def task(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def task_exports(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}:exports"


def inflight(fingerprint: str) -> str:
    return f"{PREFIX}inflight:{fingerprint}"


def latest(fingerprint: str) -> str:
    return f"{PREFIX}latest:{fingerprint}"


def site_fields(site_id: int) -> str:
    return f"{PREFIX}fields:{site_id}"


def site_fields_lock(site_id: int) -> str:
    return f"{PREFIX}fields:{site_id}:lock"


def idempotency(client_id: str, digest: str) -> str:
    return f"{PREFIX}idem:{client_id}:{digest}"


def client_rate_window(client_id: str) -> str:
    return f"{PREFIX}ratelimit:{client_id}"


def client_queue(client_id: str) -> str:
    return f"{PREFIX}client:{client_id}:queue"


def client_deliveries(client_id: str) -> str:
    return f"{PREFIX}deliveries:{client_id}"


def client_downloads(client_id: str) -> str:
    return f"{PREFIX}downloads:{client_id}"


def event(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def export_events(export_id: str) -> str:
    return f"{PREFIX}export:{export_id}:events"


def export_attempts(export_id: str) -> str:
    return f"{PREFIX}export:{export_id}:attempts"


def console_session(session_id: str) -> str:
    return f"{PREFIX}console:session:{session_id}"


def console_signin_window(address: str) -> str:
    return f"{PREFIX}console:signin:{address}"


def feed(feed_id: str) -> str:
    return f"{PREFIX}feed:{feed_id}"


def feed_runs(feed_id: str) -> str:
    return f"{PREFIX}feed:{feed_id}:runs"


def client_feeds(client_id: str) -> str:
    return f"{PREFIX}client:{client_id}:feeds"
