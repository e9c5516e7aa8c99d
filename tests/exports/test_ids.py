"""Export ids: the documented shape (URL-safe, at least 96 random bits), never repeated."""

from __future__ import annotations

from app.exports.service import EXPORT_ID, new_export_id


def test_ids_have_the_documented_shape_and_do_not_repeat() -> None:
    ids = [new_export_id() for _ in range(5000)]
    assert all(EXPORT_ID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
