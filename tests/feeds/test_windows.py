"""Exactly once, by construction: consecutive windows, each asked of a strict upstream with
only ``created_time>=<date>`` and cut at both edges by the gateway, hold every record once.

These run the gateway's own parts (``upstream_filter``, ``window.cut``) against the sandbox's
own parts (its strict filter check, its timeline selection and CSV rendering), in process:
fast enough for hypothesis to try many arrival times and window edges."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.exports.schemas import Window
from app.feeds.schedule import ScheduleError, check_schedule, next_fire
from app.feeds.service import upstream_filter
from app.feeds.window import CutCount, RowTimeError, cut
from app.sandbox.config import SandboxConfig, TimelineRecord
from app.sandbox.data import format_time, timeline_file_chunks
from app.sandbox.filters import parse_filter, strict_problem
from app.sandbox.state import SandboxState

MIDNIGHT = datetime(2026, 3, 15, tzinfo=UTC)
COLUMNS = ["id", "signer_id", "created_time", "event_type"]


async def _run_window(
    state: SandboxState, feed_filter: str | None, window: Window
) -> tuple[list[str], CutCount]:
    """One run: the query the gateway sends, what the strict sandbox answers, the cut."""
    query = upstream_filter(feed_filter, window.start)
    assert strict_problem(query) is None, query
    rows = state.timeline_rows(5193, COLUMNS, parse_filter(query))
    count = CutCount()
    out = b"".join(
        [piece async for piece in cut(timeline_file_chunks(COLUMNS, rows), window, count)]
    )
    lines = out.decode().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    return [line.split(",")[0] for line in lines[1:]], count


# Instants where off-by-one errors live: midnight, a second's edges, the millisecond around.
_EDGES = [
    MIDNIGHT,
    MIDNIGHT - timedelta(milliseconds=1),
    MIDNIGHT + timedelta(milliseconds=1),
    MIDNIGHT + timedelta(seconds=37),
    MIDNIGHT + timedelta(seconds=37, milliseconds=999),
    MIDNIGHT - timedelta(hours=20),
    MIDNIGHT + timedelta(hours=20),
]
_instants = st.one_of(
    st.sampled_from(_EDGES),
    st.integers(-36 * 3600 * 1000, 36 * 3600 * 1000).map(
        lambda ms: MIDNIGHT + timedelta(milliseconds=ms)
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrivals=st.lists(_instants, min_size=0, max_size=40),
    edges=st.lists(_instants, min_size=4, max_size=4, unique=True).map(sorted),
    on_edges=st.integers(0, 4),
    other_types=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_consecutive_windows_hold_every_record_of_the_span_exactly_once(
    arrivals: list[datetime], edges: list[datetime], on_edges: int, other_types: list[bool]
) -> None:
    # Several records exactly on each window edge (the boundary instant), besides the rest.
    times = arrivals + [edge for edge in edges for _ in range(on_edges)]
    records = [
        TimelineRecord(
            id=f"r{i}",
            created_time=format_time(moment),
            event_type="displayed" if other_types[i % 40] else "agreed",
        )
        for i, moment in enumerate(times)
    ]
    state = SandboxState(
        SandboxConfig(timeline=records, strict_filters=True, now="2030-01-01T00:00:00Z")
    )
    windows = [Window(start=a, end=b) for a, b in itertools.pairwise(edges)]

    async def all_runs() -> list[list[str]]:
        return [(await _run_window(state, "event_type==agreed", w))[0] for w in windows]

    runs = asyncio.run(all_runs())
    seen = [record_id for run in runs for record_id in run]
    expected = [
        f"r{i}"
        for i, moment in enumerate(times)
        if edges[0] <= moment < edges[-1] and not other_types[i % 40]
    ]
    assert sorted(seen) == sorted(expected)  # each once, none missing, none extra
    for window, run in zip(windows, runs, strict=True):
        for record_id in run:
            moment = times[int(record_id[1:])]
            assert window.start <= moment < window.end


async def test_a_row_whose_created_time_is_not_a_time_fails_the_cut_naming_the_row() -> None:
    records = [
        TimelineRecord(id="good", created_time="2026-03-15T10:00:00.000Z"),
        TimelineRecord(id="bad-one", created_time="yesterday-ish"),
    ]
    state = SandboxState(SandboxConfig(timeline=records, now="2030-01-01T00:00:00Z"))
    window = Window(start=MIDNIGHT, end=MIDNIGHT + timedelta(days=1))
    with pytest.raises(RowTimeError, match=r"row \d+ \(id 'bad-one'\).*'yesterday-ish'"):
        await _run_window(state, None, window)


async def test_quoted_values_with_line_breaks_and_crlf_files_are_cut_whole() -> None:
    body = (
        b"id,created_time,note\r\n"
        b'a,2026-03-14T23:59:59.999Z,"before\r\nmidnight"\r\n'
        b'b,2026-03-15T00:00:00.000Z,"on ""the"" edge\nkept"\r\n'
        b"c,2026-03-15T00:00:00.001Z,plain"
    )

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):  # cut anywhere, even inside a record
            yield body[i : i + 7]

    count = CutCount()
    window = Window(start=MIDNIGHT, end=MIDNIGHT + timedelta(milliseconds=1))
    out = b"".join([piece async for piece in cut(chunks(), window, count)])
    assert out == b'id,created_time,note\r\nb,2026-03-15T00:00:00.000Z,"on ""the"" edge\nkept"\r\n'
    assert (count.read, count.kept) == (3, 1)


def test_the_strict_sandbox_refuses_what_upstream_is_not_known_to_understand() -> None:
    assert strict_problem("created_time>=2026-03-15 and event_type==agreed") is None
    assert strict_problem("created_time>=2026-03-15T10:00:00Z") is not None
    assert strict_problem("created_time<2026-03-15") is not None
    assert strict_problem("event_type!=agreed") is not None


def test_the_upstream_query_is_the_date_of_from_and_the_feed_filter() -> None:
    late = datetime(2026, 3, 14, 23, 59, 59, 999000, tzinfo=UTC)
    assert upstream_filter(None, late) == "created_time>=2026-03-14"
    assert (
        upstream_filter("event_type==agreed or event_type==updated", MIDNIGHT)
        == "created_time>=2026-03-15 and (event_type==agreed or event_type==updated)"
    )


@pytest.mark.parametrize(
    "expression",
    ["* * * * * *", "@hourly", "61 * * * *", "H * * * *", "0 0 31 2 *", "*/5 * * *", ""],
)
def test_a_schedule_that_is_not_a_five_field_cron_that_fires_is_refused(expression: str) -> None:
    with pytest.raises(ScheduleError):
        check_schedule(expression)


def test_schedules_fire_at_most_once_a_minute_in_utc() -> None:
    after = datetime(2026, 3, 15, 10, 0, 30, tzinfo=UTC)
    assert next_fire(check_schedule("* * * * *"), after) == datetime(2026, 3, 15, 10, 1, tzinfo=UTC)
    assert next_fire(check_schedule("0  2 * * *"), after) == datetime(2026, 3, 16, 2, tzinfo=UTC)
