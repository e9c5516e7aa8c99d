"""Listing a client's exports: the opaque page cursor and the page walk.

A cursor is the position of the last export a page showed: base64url of
``"{created_ms}:{export_id}"``. Pages go newest first, ordered by creation time and then id,
so a position is a fixed point of that order: exports created later sort before it and never
appear in the pages after it (no repeats, no gaps while others submit).

Every page costs a few round trips, whatever its size: the client's index (ZSET) from the
position, then one MGET of the exports and one MGET of their tasks. With a ``status`` filter
the walk reads on in batches until the page is full, but reads at most ``SCAN_BUDGET``
entries per request; a page may then hold fewer than ``limit`` exports and still carry a
``next_cursor`` (only ``null`` says the list is done).
"""

from __future__ import annotations

import base64
import binascii
import re

from app.exports.schemas import Export, ExportPage, ExportRecord, ExportStatus
from app.exports.store import ExportStore
from app.platform.errors import invalid

SCAN_BUDGET = 1000
_EXPORT_ID = re.compile(r"^exp_[A-Za-z0-9_-]{22}$")

Position = tuple[int, str]


def encode_cursor(position: Position) -> str:
    ms, export_id = position
    return base64.urlsafe_b64encode(f"{ms}:{export_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms_text, _, export_id = text.partition(":")
        # Only the digits this API writes: int() alone would also take " 12" and "1_000".
        if not (ms_text.isascii() and ms_text.isdigit()):
            raise ValueError(ms_text)
        ms = int(ms_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("cursor", "is not a cursor this API issued") from None
    if ms < 0 or not _EXPORT_ID.match(export_id):
        raise invalid("cursor", "is not a cursor this API issued")
    return ms, export_id


async def list_exports(
    store: ExportStore,
    client_id: str,
    *,
    status: ExportStatus | None,
    limit: int,
    cursor: str | None,
) -> ExportPage:
    rows, next_cursor = await walk(store, client_id, status=status, limit=limit, cursor=cursor)
    return ExportPage(data=[export for _, export in rows], next_cursor=next_cursor)


async def walk(
    store: ExportStore,
    client_id: str | None,
    *,
    status: ExportStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[ExportRecord, Export]], str | None]:
    """One page of (record, export) pairs and the next cursor: the client's exports, or with
    ``client_id`` None every client's (the all-clients index; same order, same cursors)."""
    position = decode_cursor(cursor) if cursor else None
    found: list[tuple[ExportRecord, Export, Position]] = []
    scanned = 0
    exhausted = False
    batch = limit + 1 if status is None else max(limit + 1, 100)
    while len(found) <= limit and scanned < SCAN_BUDGET:
        if client_id is None:
            entries = await store.all_exports_before(position, batch)
        else:
            entries = await store.client_exports_before(client_id, position, batch)
        records = await store.get_exports([export_id for export_id, _ in entries])
        task_ids = sorted({r.task_id for r in records if r is not None})
        tasks = dict(zip(task_ids, await store.get_tasks(task_ids), strict=True))
        for (export_id, ms), record in zip(entries, records, strict=True):
            position = (ms, export_id)
            scanned += 1
            # Records past their retention are gone while the index still names them.
            task = tasks.get(record.task_id) if record is not None else None
            if record is None or task is None:
                continue
            if client_id is not None and record.client_id != client_id:
                continue
            export = Export.of(record, task)
            if status is not None and export.status != status:
                continue
            found.append((record, export, position))
            if len(found) > limit:
                break
        if len(entries) < batch:
            exhausted = True
            break
    if len(found) > limit:
        next_cursor: str | None = encode_cursor(found[limit - 1][2])
    elif exhausted or position is None:
        next_cursor = None
    else:  # the scan budget ran out: carry on from the last entry read
        next_cursor = encode_cursor(position)
    return [(record, export) for record, export, _ in found[:limit]], next_cursor
