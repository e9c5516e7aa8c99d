"""Cutting a feed run's window out of upstream's CSV: keep exactly ``from <= created_time < to``.

Upstream's filter is only known to understand ``>=`` with a date, so a run asks upstream for
everything from the date of ``from`` on and cuts both edges here, while the files stream by:

* records are found by their line breaks, a line break inside a quoted value (an odd number of
  ``"`` so far in the record) does not end one, so values holding line breaks stay whole;
* the header record names the ``created_time`` column (and ``id``, for error messages);
* every data record's ``created_time`` is read as ISO 8601 (a time without an offset is UTC);
  one that cannot be read fails the run with ``RowTimeError`` naming the row: a row is never
  dropped silently, since it might belong to the window;
* kept records are passed on byte for byte (quoting and values exactly as upstream wrote them),
  each ending with a line break.

Memory holds one chunk and the record being read, whatever the size of the export.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from app.exports.schemas import Window

TIME_COLUMN = "created_time"
MAX_RECORD_BYTES = 16 << 20  # a record longer than this is a broken file, not a CSV row
# Kept records leave in pieces of about this size, not one by one: the object store pulls
# each piece through a round of the event loop, and per record that was nearly all of the
# cut's time (bench/feed_cut.py: 9,000 rows/s one by one, see docs/PERFORMANCE.md).
OUTPUT_BYTES = 256 * 1024


class WindowCutError(Exception):
    """The files cannot be cut: the run fails with this message (and no retry helps)."""


class RowTimeError(WindowCutError):
    """A data row whose ``created_time`` is not a time."""


@dataclass
class CutCount:
    """What a cut saw: data rows read, and rows kept (inside the window)."""

    read: int = 0
    kept: int = 0


def parse_created_time(value: str) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (no offset: UTC); None when unreadable."""
    text = value.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


async def records(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The CSV records of a byte stream, each with its line break (the last one may lack it)."""
    buffer = bytearray()
    start = 0  # where the record being read begins in ``buffer``
    scan = 0  # how far it has been searched for its end
    quotes = 0  # '"' seen in the record up to ``scan``
    async for chunk in chunks:
        buffer += chunk
        while True:
            newline = buffer.find(b"\n", scan)
            if newline < 0:
                quotes += buffer.count(b'"', scan)
                scan = len(buffer)
                break
            quotes += buffer.count(b'"', scan, newline)
            scan = newline + 1
            if quotes % 2 == 0:
                yield bytes(buffer[start:scan])
                start, quotes = scan, 0
        if len(buffer) - start > MAX_RECORD_BYTES:
            raise WindowCutError(f"a record runs past {MAX_RECORD_BYTES} bytes without ending")
        if start:
            del buffer[:start]
            scan -= start
            start = 0
    if quotes % 2:
        raise WindowCutError("the CSV ends inside a quoted value")
    if buffer[start:].strip():
        yield bytes(buffer[start:])


def _fields(record: bytes) -> list[str]:
    text = record.decode("utf-8", errors="replace")
    return next(csv.reader([text]), [])


async def cut(
    chunks: AsyncIterator[bytes], window: Window, count: CutCount
) -> AsyncIterator[bytes]:
    """The header and the records of ``chunks`` inside ``window``; ``count`` is kept up to
    date as they pass. Raises ``WindowCutError`` (or ``RowTimeError``) as described above."""
    time_at: int | None = None
    id_at: int | None = None
    newline = b"\n"
    out = bytearray()
    async for record in records(chunks):
        if len(out) >= OUTPUT_BYTES:
            yield bytes(out)
            out.clear()
        if time_at is None:
            header = [name.strip() for name in _fields(record)]
            if TIME_COLUMN not in header:
                raise WindowCutError(f"the files have no {TIME_COLUMN} column (header: {header})")
            time_at = header.index(TIME_COLUMN)
            id_at = header.index("id") if "id" in header else None
            newline = b"\r\n" if record.endswith(b"\r\n") else b"\n"
            out += record if record.endswith(b"\n") else record + newline
            continue
        if not record.strip(b"\r\n"):
            continue  # a blank line is no record
        values = _fields(record)
        count.read += 1
        raw = values[time_at] if time_at < len(values) else ""
        moment = parse_created_time(raw)
        if moment is None:
            row_id = values[id_at] if id_at is not None and id_at < len(values) else "?"
            raise RowTimeError(
                f"row {count.read} (id {row_id!r}) has {TIME_COLUMN} {raw[:64]!r}, which is not "
                "an ISO 8601 time; the run cannot tell whether the row belongs to its window"
            )
        if window.start <= moment < window.end:
            count.kept += 1
            out += record if record.endswith(b"\n") else record + newline
    if out:
        yield bytes(out)
