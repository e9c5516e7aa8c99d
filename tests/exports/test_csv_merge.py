"""The CSV merge rule on its own: any files, cut into any chunks, make one CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.exports.csv import BOM, CsvMerger, CsvStreamError

HEADER = ["id", "signer_id", "connection_data.page_title"]
values = st.text(alphabet=st.sampled_from(list('ab,"\n\r ü✓')), min_size=0, max_size=8)
rows = st.lists(st.lists(values, min_size=3, max_size=3), min_size=0, max_size=6)


def render(table: list[list[str]], terminator: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=terminator).writerows(table)
    return buffer.getvalue().encode()


async def pieces(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[start:cut]
        start = max(start, cut)
    yield data[start:]


async def merge(files: list[bytes], cuts: list[int]) -> bytes:
    merger = CsvMerger()
    out = bytearray()
    for number, data in enumerate(files, 1):
        async for chunk in merger.feed(number, pieces(data, cuts)):
            out += chunk
    return bytes(out + merger.finish())


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(rows, min_size=1, max_size=4),
    bom=st.booleans(),
    final_newline=st.booleans(),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_files_merge_into_one_csv_with_one_header(
    parts: list[list[list[str]]], bom: bool, final_newline: bool, crlf: bool, cuts: list[int]
) -> None:
    terminator = "\r\n" if crlf else "\n"
    files = []
    for part in parts:
        data = render([HEADER, *part], terminator)
        if not final_newline:
            data = data.removesuffix(terminator.encode())
        files.append((BOM if bom else b"") + data)
    merged = asyncio.run(merge(files, cuts))
    every_row = [row for part in parts for row in part]
    if not any(b"\n" in data for data in files):
        terminator = "\n"  # nothing shows the files' line break style: LF
    assert merged == render([HEADER, *every_row], terminator)


async def test_a_header_that_differs_breaks_the_merge() -> None:
    first = render([HEADER, ["1", "a", "x"]], "\n")
    second = render([["id", "other"], ["2", "b"]], "\n")
    with pytest.raises(CsvStreamError, match="header of file 2"):
        await merge([first, second], [])


async def test_a_file_ending_inside_a_quoted_value_breaks_the_merge() -> None:
    cut = render([HEADER, ["1", "a", "line one\nline two"]], "\n")[:-8]
    with pytest.raises(CsvStreamError, match="inside a quoted value"):
        await merge([cut], [])


async def test_empty_files_add_nothing() -> None:
    first = render([HEADER, ["1", "a", "x"]], "\n")
    assert await merge([b"", first, BOM, first], [3]) == render(
        [HEADER, ["1", "a", "x"], ["1", "a", "x"]], "\n"
    )
