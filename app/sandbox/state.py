"""In-memory bookkeeping of the sandbox: its live config, export tasks, fault RNG and stats.

Everything a request touches is O(1) (or O(log n) for the active-task heap): tasks live in a
dict by id, request arrivals in a deque trimmed to the last second. Times are measured with
`time.monotonic()`; wall-clock UTC is used only for the timestamps the API shows.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from app.sandbox.config import DEFAULT_SITE_FIELDS, SandboxConfig
from app.sandbox.data import (
    ACTIVITY_START,
    ACTIVITY_STEP_MS,
    RecordSource,
    file_count,
    format_time,
)
from app.sandbox.filters import ParsedFilter, parse_filter, parse_time

FILES_ROUTE = "/v1.1/files/{task_id}/{file_name}"
"""Route template of CSV downloads (counted in stats, but not as an upstream API request)."""

Phase = Literal["pending", "running", "complete", "failed"]
Fault = Literal["429", "503", "500", "malformed"]


@dataclass(slots=True)
class Task:
    """One export task, fixed at creation (later config changes only alter how it is shown)."""

    id: str
    site: int
    columns: list[str]
    flt: ParsedFilter
    query: dict[str, str]
    created_mono: float
    created_wall: datetime
    duration: float
    """Seconds from creation to completion (or failure); math.inf when it never finishes."""
    pending_seconds: float
    """Seconds from creation during which the task shows as pending (then running)."""
    fails: bool
    rows: int
    rows_per_file: int
    tricky: bool
    polls: int = 0
    downloads: int = 0
    timeline_rows: list[list[str]] | None = None
    """The task's rows when the sandbox has a timeline (values in the order of `columns`)."""
    _source: RecordSource | None = field(default=None, repr=False)

    @property
    def finished_mono(self) -> float:
        return self.created_mono + self.duration

    @property
    def finished_wall(self) -> datetime | None:
        if math.isinf(self.duration):
            return None
        return self.created_wall + timedelta(seconds=self.duration)

    def phase(self, now: float) -> Phase:
        elapsed = now - self.created_mono
        if elapsed >= self.duration:
            return "failed" if self.fails else "complete"
        return "pending" if elapsed < self.pending_seconds else "running"

    @property
    def file_count(self) -> int:
        return file_count(self.rows, self.rows_per_file)

    def file_rows(self, number: int) -> tuple[int, int]:
        """Row range [first, stop) of file `number` (1-based)."""
        first = (number - 1) * self.rows_per_file
        return first, min(self.rows, first + self.rows_per_file)

    def source(self, account: int) -> RecordSource:
        if self._source is None:
            self._source = RecordSource(
                self.id,
                site=self.site,
                account=account,
                count=self.rows,
                flt=self.flt,
                tricky=self.tricky,
            )
        return self._source


class SlidingWindow:
    """Counts arrivals in the last `width` seconds; remembers the highest count ever seen."""

    def __init__(self, width: float = 1.0) -> None:
        self.width = width
        self._times: deque[float] = deque()
        self.max_count = 0

    def add(self, now: float) -> int:
        """Record an arrival at `now`; answer how many arrived in (now - width, now]."""
        times = self._times
        while times and now - times[0] >= self.width:
            times.popleft()
        times.append(now)
        if len(times) > self.max_count:
            self.max_count = len(times)
        return len(times)


class ActiveTracker:
    """Tasks created and not yet finished by time; remembers the most at once."""

    def __init__(self) -> None:
        self._ends: list[float] = []
        self.max_count = 0

    def _prune(self, now: float) -> None:
        ends = self._ends
        while ends and ends[0] <= now:
            heapq.heappop(ends)

    def add(self, now: float, end: float) -> None:
        self._prune(now)
        heapq.heappush(self._ends, end)
        self.max_count = max(self.max_count, len(self._ends))

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._ends)


_PROCESS_BYTES = os.urandom(5).hex()
_COUNTER = itertools.count(random.SystemRandom().randrange(1 << 24))


def new_task_id() -> str:
    """24 hex characters, shaped like a MongoDB ObjectId (time, process, counter)."""
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_PROCESS_BYTES}{next(_COUNTER) & 0xFFFFFF:06x}"


def _id_fraction(task_id: str) -> float:
    digest = hashlib.blake2b(task_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


@lru_cache(maxsize=64)
def activity_dataset(site: int, account: int, count: int) -> tuple[tuple[dict[str, Any], ...], ...]:
    """The fixed /activity data set of a site: (flat, nested) per record, oldest first."""
    source = RecordSource(
        f"activity-{site}",
        site=site,
        account=account,
        count=count,
        start=ACTIVITY_START,
        step_ms=ACTIVITY_STEP_MS,
    )
    return tuple((source.flat(i, DEFAULT_SITE_FIELDS), source.record(i)) for i in range(count))


@lru_cache(maxsize=256)
def activity_selection(
    site: int, account: int, count: int, filter_text: str, sort: str
) -> tuple[dict[str, Any], ...]:
    """Records of the data set that match `filter_text`, in `sort` order (`-field` descends)."""
    flt = parse_filter(filter_text)
    rows = [pair for pair in activity_dataset(site, account, count) if flt.matches(pair[0])]
    key = sort.strip().lstrip("+")
    descending = key.startswith("-")
    key = key.lstrip("-") or "created_time"
    if key != "created_time" and key in DEFAULT_SITE_FIELDS:
        rows.sort(key=lambda pair: _sort_key(pair[0][key]))
    if descending:
        rows.reverse()
    return tuple(nested for _, nested in rows)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int):
        return (1, int(value))
    return (2, str(value))


class SandboxState:
    """The sandbox's whole mutable state; one per app."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.startup_config = config.model_copy(deep=True)
        self.clock = clock
        self.wall_clock = wall_clock
        self.config = config.model_copy(deep=True)
        self.rng = random.Random(config.seed)
        self.tasks: dict[str, Task] = {}
        self.requests: dict[str, dict[str, int]] = {}
        self.faults: dict[str, int] = {}
        self.window = SlidingWindow()
        self.active = ActiveTracker()

    # --- config ----------------------------------------------------------------------------
    def set_config(self, config: SandboxConfig) -> None:
        if config.seed != self.config.seed:
            self.rng = random.Random(config.seed)
        self.config = config

    def reset(self) -> None:
        """Forget tasks and counters; return to the startup config (and reseed)."""
        self.config = self.startup_config.model_copy(deep=True)
        self.rng = random.Random(self.config.seed)
        self.tasks.clear()
        self.requests.clear()
        self.faults.clear()
        self.window = SlidingWindow()
        self.active = ActiveTracker()

    # --- requests and faults ---------------------------------------------------------------
    def note_api_arrival(self) -> int:
        """Record an upstream API request; answer the arrivals in the last second."""
        return self.window.add(self.clock())

    def note_response(self, route: str, status: int) -> None:
        by_status = self.requests.setdefault(route, {})
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1

    def note_fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def draw_slow(self) -> bool:
        return self.rng.random() < self.config.slow_rate

    def draw_fault(self) -> Fault | None:
        """Pick at most one injected failure for a request, by the configured rates."""
        cfg = self.config
        roll = self.rng.random()
        for kind, rate in (
            ("429", cfg.fail_rate_429),
            ("503", cfg.fail_rate_503),
            ("500", cfg.fail_rate_500),
            ("malformed", cfg.malformed_rate),
        ):
            if roll < rate:
                return kind  # type: ignore[return-value]
            roll -= rate
        return None

    # --- tasks -----------------------------------------------------------------------------
    def active_now(self) -> int:
        return self.active.count(self.clock())

    def create_task(
        self, *, site: int, columns: Sequence[str], flt: ParsedFilter, query: dict[str, str]
    ) -> Task:
        cfg = self.config
        task_id = new_task_id()
        while task_id in self.tasks:  # pragma: no cover - needs 2**24 tasks in one second
            task_id = new_task_id()
        duration = cfg.task_seconds
        if cfg.task_seconds_max is not None and cfg.task_seconds_max > cfg.task_seconds:
            duration += _id_fraction(task_id) * (cfg.task_seconds_max - cfg.task_seconds)
        fails = self.rng.random() < cfg.task_fail_rate or flt.fail
        pending_seconds = duration * cfg.pending_fraction
        if cfg.never_finish or flt.never:
            duration = math.inf
        timeline_rows = None
        if cfg.timeline is not None and not flt.empty:
            timeline_rows = self.timeline_rows(site, list(columns), flt)
        now = self.clock()
        task = Task(
            id=task_id,
            site=site,
            columns=list(columns),
            flt=flt,
            query=query,
            created_mono=now,
            created_wall=self.wall_clock(),
            duration=duration,
            pending_seconds=pending_seconds,
            fails=fails,
            rows=0 if flt.empty else cfg.rows if timeline_rows is None else len(timeline_rows),
            rows_per_file=cfg.rows_per_file,
            tricky=cfg.csv_tricky_values,
            timeline_rows=timeline_rows,
        )
        self.tasks[task_id] = task
        self.active.add(now, task.finished_mono)
        return task

    def timeline_now(self) -> datetime:
        """The timeline's "now": the configured one, else the wall clock."""
        configured = parse_time(self.config.now) if self.config.now else None
        return configured or self.wall_clock()

    def timeline_rows(self, site: int, columns: list[str], flt: ParsedFilter) -> list[list[str]]:
        """The timeline's records an export made now holds: indexed by now (created before
        it, and at least its lateness ago) and matching the filter, oldest first. A record
        whose created_time is not a time is always visible (to test how it is reported)."""
        cfg = self.config
        now = self.timeline_now()
        rows: list[tuple[datetime | None, list[str]]] = []
        for record in cfg.timeline or []:
            created = parse_time(record.created_time)
            late = cfg.index_delay_seconds if record.late_seconds is None else record.late_seconds
            if created is not None and (created >= now or created + timedelta(seconds=late) > now):
                continue
            flat: dict[str, object] = {
                "id": record.id,
                "created_time": record.created_time,
                "event_type": record.event_type,
                "signer_id": f"signer-{record.id}@example.com",
                "site": site,
                "account": cfg.account,
            }
            if not flt.matches(flat):
                continue
            rows.append((created, [str(flat.get(column, "")) for column in columns]))
        rows.sort(key=lambda pair: pair[0] or datetime.min.replace(tzinfo=UTC))
        return [row for _, row in rows]

    def phase(self, task: Task) -> Phase:
        return task.phase(self.clock())

    def is_expired(self, task: Task) -> bool:
        """Whether a finished task's CSV files have been deleted (retention passed)."""
        return self.clock() >= task.finished_mono + self.config.retention_seconds

    # --- observation -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "requests": {route: dict(codes) for route, codes in self.requests.items()},
            "requests_total": sum(sum(codes.values()) for codes in self.requests.values()),
            "api_requests_total": sum(
                sum(codes.values())
                for route, codes in self.requests.items()
                if not route.endswith(FILES_ROUTE)
            ),
            "faults_injected": dict(self.faults),
            "tasks_created": len(self.tasks),
            "tasks": [
                {
                    "id": task.id,
                    "filter": task.query.get("filter"),
                    "fields": task.query.get("fields"),
                    "site": task.query.get("site"),
                    "effective_site": task.site,
                    "columns": task.columns,
                    "query": task.query,
                    "created_at": format_time(task.created_wall),
                    "status": task.phase(now),
                    "polls": task.polls,
                    "downloads": task.downloads,
                }
                for task in self.tasks.values()
            ],
            "active_tasks_now": self.active.count(now),
            "max_active_tasks": self.active.max_count,
            "max_requests_in_any_1s_window": self.window.max_count,
        }
