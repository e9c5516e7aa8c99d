"""How fast a feed run cuts its window out of upstream's files, and with how much memory.

Runs the gateway's own cut (``app.feeds.window.cut``) over a CSV rendered beforehand by the
sandbox's renderer (by default 200,000 rows, ~45 MB, in 64 KiB chunks, as files arrive from a
file host), keeping about half of the rows (the window ends mid-file), and writes the result
through the object storage (``open_storage``, a ``file://`` directory) exactly as a run does.
No network: this is the CPU cost of the cut itself, the figure a worker's cut job is bounded
by. Prints rows read and kept, MB/s through the cut, and, from a second pass under
tracemalloc, the peak of Python allocations during the cut (flat: one chunk and one record at
a time, whatever the size).

    .venv/bin/python bench/feed_cut.py                 # the full run
    .venv/bin/python bench/feed_cut.py --rows 5000     # a quick smoke
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from app.archive.storage import open_storage
from app.exports.schemas import Window
from app.feeds.window import CutCount, cut
from app.sandbox.data import RecordSource, csv_file_chunks

COLUMNS = [
    "id",
    "signer_id",
    "created_time",
    "event_type",
    "connection_data.page_title",
    "connection_data.user_agent",
]
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP_MS = 1000
CHUNK = 64 * 1024


async def render(rows: int) -> list[bytes]:
    """The file, in a file host's chunk size, so records straddle chunks."""
    source = RecordSource("bench-cut", site=1, account=1, count=rows, start=START, step_ms=STEP_MS)
    text = b"".join([piece async for piece in csv_file_chunks(source, COLUMNS, 0, rows)])
    return [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]


async def one_cut(chunks: list[bytes], window: Window, directory: str) -> tuple[CutCount, int]:
    async def arriving() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    count = CutCount()
    store = open_storage(f"file://{directory}")
    written = await store.write("feeds/bench/run.csv", cut(arriving(), window, count))
    return count, written.size


async def main(rows: int) -> int:
    chunks = await render(rows)
    read_bytes = sum(len(c) for c in chunks)
    window = Window(start=START, end=START + timedelta(milliseconds=STEP_MS * rows // 2))
    with tempfile.TemporaryDirectory() as directory:
        began = time.perf_counter()
        count, size = await one_cut(chunks, window, directory)
        elapsed = time.perf_counter() - began
        tracemalloc.start()
        await one_cut(chunks, window, directory)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    mb = read_bytes / 1e6
    print(f"rows read {count.read:,}, kept {count.kept:,} (window ends mid-file)")
    print(f"bytes read {mb:.1f} MB, written {size / 1e6:.1f} MB")
    print(f"elapsed {elapsed:.2f} s: {mb / elapsed:.1f} MB/s, {count.read / elapsed:,.0f} rows/s")
    print(f"peak Python allocations during the cut: {peak / 1e6:.2f} MB")
    ok = count.read == rows and abs(count.kept - rows // 2) <= 1
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    raise SystemExit(asyncio.run(main(parser.parse_args().rows)))
