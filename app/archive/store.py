"""Every object-store call of the archive: where a task's copy lives and how it is written,
read and deleted. Names come from the gateway's own task ids only, never from caller input.

The Redis side of the archive (the copy's state in the task record and the two indexes,
``gw:archive:pending`` and ``gw:archive:kept``) is written by ``app.exports.store``, in the same
transaction as the task it describes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator

from app.archive.storage import ObjectInfo, ObjectStorage, Written

PREFIX = "exports"


def object_name(task_id: str) -> str:
    """The object of a task's merged CSV: ``exports/<task id>.csv``."""
    return f"{PREFIX}/{task_id}.csv"


class ArchivedCopies:
    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    @property
    def location(self) -> str:
        return self.storage.location

    async def save(self, task_id: str, chunks: AsyncIterable[bytes]) -> Written:
        return await self.storage.write(object_name(task_id), chunks)

    async def stat(self, name: str) -> ObjectInfo | None:
        return await self.storage.stat(name)

    def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.storage.read(name, start, end)

    async def delete(self, name: str) -> None:
        await self.storage.delete(name)

    async def sha256(self, name: str) -> tuple[str, int]:
        """Re-read the whole object: its sha256 (hex) and size."""
        digest = hashlib.sha256()
        size = 0
        async for chunk in self.storage.read(name):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size

    async def probe(self) -> None:
        await self.storage.probe()
