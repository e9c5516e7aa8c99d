"""Shapes of the archive. The copy's state as callers see it (``Archive``) and as the task
records it (``TaskArchive``) live with the export (``app.exports.schemas``), whose view they
are part of; here is what the archive itself answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Outcome = Literal["ok", "mismatch", "missing", "error", "not_archived", "unknown"]


class Verification(BaseModel):
    """One re-read of an archived copy: what was recorded and what the store holds now."""

    export_id: str | None = None
    task_id: str | None = None
    object: str | None = None
    outcome: Outcome
    expected_sha256: str | None = None
    sha256: str | None = None
    expected_bytes: int | None = None
    bytes: int | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"
