"""The archive's two small parsers: counting a CSV's rows as its bytes pass (quoted values may
hold line breaks and quotes), and reading a ``Range`` header."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.archive.routes import byte_range
from app.archive.service import RowCounter
from app.platform.errors import RangeNotSatisfiable

cells = st.text(alphabet=st.sampled_from(list('ab,"\n\r é')), max_size=8)


@given(
    rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=20),
    cut=st.integers(min_value=1, max_value=50),
)
def test_rows_are_counted_as_a_csv_reader_counts_them_however_the_bytes_are_cut(
    rows: list[list[str]], cut: int
) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")  # quotes any value with \r or \n
    writer.writerow(["id", "signer_id"])
    writer.writerows(rows)
    data = text.getvalue().encode()
    counter = RowCounter()

    for start in range(0, len(data), cut):
        counter.feed(data[start : start + cut])

    assert counter.rows == len(list(csv.reader(io.StringIO(data.decode(), newline="")))) - 1


def test_an_empty_csv_has_no_rows() -> None:
    counter = RowCounter()
    counter.feed(b"")
    assert counter.rows == 0


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=90-1000", (90, 100)),
        ("bytes = 3 - 4", (3, 5)),
        (None, None),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-5", None),
        ("bytes=9-3", None),
        ("bytes=-", None),
    ],
)
def test_a_range_header_selects_those_bytes_or_the_whole_file(
    header: str | None, span: tuple[int, int] | None
) -> None:
    assert byte_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_a_range_outside_the_file_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        byte_range(header, 100)
    assert caught.value.headers["Content-Range"] == "bytes */100"
