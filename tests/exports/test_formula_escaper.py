"""``FormulaEscaper`` streams: however the bytes are cut into chunks, the escaped CSV is the
same, and it is what a CSV reader sees with each dangerous cell prefixed by ``'``."""

from __future__ import annotations

import csv
import io

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.exports.csv import FormulaEscaper

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def escaped(data: bytes, cuts: list[int]) -> bytes:
    escaper = FormulaEscaper()
    out = b""
    start = 0
    for cut in sorted(set(cuts)):
        out += escaper.feed(data[start:cut])
        start = cut
    return out + escaper.feed(data[start:])


cells = st.text(alphabet=st.sampled_from(list('ab=+-@\t\r\n",é ')), max_size=8)
rows = st.lists(st.lists(cells, min_size=1, max_size=4), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows=rows, crlf=st.booleans(), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_every_dangerous_cell_is_prefixed_and_nothing_else_changes_however_chunked(
    rows: list[list[str]], crlf: bool, cuts: list[int]
) -> None:
    # (csv.writer quotes a lone CR only when its line terminator holds one)
    assume(crlf or not any("\r" in cell for row in rows for cell in row))
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n" if crlf else "\n").writerows(rows)
    data = text.getvalue().encode()
    out = escaped(data, cuts)
    assert out == escaped(data, [])
    parsed = list(csv.reader(io.StringIO(out.decode(), newline="")))
    expected = [["'" + c if c.startswith(DANGEROUS) else c for c in row] for row in rows]
    assert parsed == expected
