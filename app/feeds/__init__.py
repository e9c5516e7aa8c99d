"""Feeds: saved queries the gateway exports on a schedule, every activity record exactly once.

A feed holds a query (filter, fields, site), a five-field UTC cron schedule and a watermark.
Each run is an export with a window ``[watermark, now - settle)``: upstream is asked for
everything from the window's first date on, and the gateway cuts the window's edges itself
while streaming the files, writing the run's own CSV through the object storage
(``app.archive.storage``: ``GATEWAY_FEED_STORAGE_URL``) with ``window.py``. The
watermark moves only when a run completes; a failed run is tried again with the same window.

    routes.py     thin routes: /v1/feeds, /v1/feeds/{id}, /v1/feeds/{id}/runs
    schemas.py    FeedCreate, FeedPatch, FeedRecord (stored, with the run in progress), Feed
    service.py    caller operations, the scheduler's tick, a run's life (claim, cut, complete)
    store.py      every Redis read/write of feeds (one transaction per change)
    schedule.py   cron expressions (croniter): checking them, the next firing
    window.py     cutting ``from <= created_time < to`` out of a CSV stream
"""
