"""Where feed runs keep their windowed CSVs: the few object-store calls a feed needs.

STAND-IN, MEANT TO BE SWAPPED: this is the subset of the archive's object storage
(``write``/``read``/``delete`` with the same signatures and results) that feeds use, with one
local-directory backend, until the gateway's object storage is available to this room. Nothing
else in ``app/feeds`` knows how files are kept: swapping means building ``RunFiles`` from the
archive's store in ``app/wiring/runtime.py`` and deleting this module.

Writes are atomic: bytes go to a staging file in the same directory, which is renamed into
place once complete, so a reader never sees half a file and a writer killed mid-way leaves no
object under the name. Names are derived from the gateway's own ids, never from caller input,
and checked against a narrow alphabet anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

READ_CHUNK_BYTES = 256 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")


class RunFileError(Exception):
    """A stored file could not be written or read; the message is safe to show."""


@dataclass(frozen=True)
class Written:
    """What ``write`` stored: the object's name, size in bytes and sha256 (hex)."""

    name: str
    size: int
    sha256: str


class RunFiles(Protocol):
    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> Written: ...

    def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` up to (not including) ``end`` (None: the end of the object)."""
        ...

    async def delete(self, name: str) -> None: ...


def _check(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise RunFileError(f"not a storable name: {name!r}")
    return name


class LocalRunFiles:
    """``RunFiles`` in a local directory (made when missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        return self.root / _check(name)

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> Written:
        path = self._path(name)
        staging = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            with staging.open("wb") as out:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, path)
        except OSError as exc:
            raise RunFileError(f"could not write {name}: {exc.strerror or exc}") from None
        finally:
            staging.unlink(missing_ok=True)
        return Written(name, size, digest.hexdigest())

    async def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(name)
        try:
            with path.open("rb") as source:
                source.seek(start)
                left = None if end is None else max(0, end - start)
                while left is None or left > 0:
                    size = READ_CHUNK_BYTES if left is None else min(left, READ_CHUNK_BYTES)
                    chunk = source.read(size)
                    if not chunk:
                        return
                    if left is not None:
                        left -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise RunFileError(f"could not read {name}: {exc.strerror or exc}") from None

    async def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
