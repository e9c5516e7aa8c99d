"""Garbage-collector settings for the long-running processes (API and worker).

CPython's cyclic collector runs every 700 net allocations (generation 0) and, every so often,
walks every tracked object (generation 2): after start-up that is hundreds of thousands of
long-lived objects (FastAPI's routes and models, pydantic schemas, the OpenAPI document).
Under load the API allocates many small objects per request, so those walks came every few
hundred requests and stalled the event loop for tens of milliseconds: profiling a status read
(bench/status_reads.py) showed a p99 of 73 ms against a p50 of 20 ms. Freezing what exists at
start-up (``gc.freeze``: moved to a generation the collector never walks) and collecting
generation 0 less often took the API from ~470 to ~330 µs of CPU per status read and the p99
to ~20 ms (docs/PERFORMANCE.md). Nothing here changes behaviour: cyclic garbage is still
collected, only less often.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 20


def tune_gc() -> None:
    """Call once the process has built everything it keeps (end of start-up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
