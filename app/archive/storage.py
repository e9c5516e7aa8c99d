"""Object storage behind one small async interface: ``file://`` and ``s3://`` alike.

``ObjectStorage`` is all the rest of the gateway knows of where archived files live:

* ``write(name, chunks)`` streams an async iterable of bytes into one object and returns its
  size and sha256. Large objects go up as a multipart upload in fixed parts, a few parts in
  flight at a time, so memory stays flat whatever the size. The object becomes visible only
  once it is complete: S3 shows a multipart upload only after ``CompleteMultipartUpload``, and
  the local store writes to a staging file that is renamed into place at the end. A writer
  killed mid-way therefore leaves no object under the name (S3 keeps the uploaded parts until
  an ``AbortIncompleteMultipartUpload`` lifecycle rule removes them; see the README).
* ``stat(name)`` the size and time of an object, or ``None`` when there is none;
* ``read(name, start, end)`` a byte range as a stream of chunks;
* ``delete(name)`` (a missing object is not an error);
* ``list(prefix)`` the objects under a prefix, and ``probe()`` the readiness check: it writes,
  reads back and deletes a small object, and raises ``StorageUnavailable`` with the reason.

The stores are obstore's (the Rust ``object_store`` crate): S3 and every S3-compatible store
with the standard ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for MinIO/Ceph/R2,
``AWS_ALLOW_HTTP=true`` for a plain-http endpoint), and local files. No request signing here.

Secrets: credentials come from the environment and are never part of the URL this module is
given, of a name, or of an error it raises; error text from the library is scrubbed of the
``AWS_*`` secret values anyway before it leaves (a message may quote a request). Names are
checked against a narrow alphabet: the callers derive them from the gateway's own ids.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, S3Store

# Parts of a multipart upload: S3's minimum part size (5 MiB, except the last part), and at
# most this many parts in flight: memory is about part size x (in flight + 1) per upload.
PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2
# Chunks handed out by ``read``: large enough to keep per-chunk overhead low.
READ_CHUNK_BYTES = 256 * 1024

_NAME = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
PROBE_PREFIX = "_probe"


class StorageError(Exception):
    """An object store operation failed; the message is safe to log and show."""


class StorageUnavailable(StorageError):
    """The store cannot be read or written (the readiness probe's answer)."""


class InvalidStorageUrl(ValueError):
    """The archive URL is not ``file:///path`` or ``s3://bucket[/prefix]``."""


@dataclass(frozen=True)
class Written:
    """What ``write`` stored: the object's name, size in bytes and sha256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    modified: datetime | None


class ObjectStorage(Protocol):
    """What the gateway needs of an object store (``open_storage`` builds one)."""

    @property
    def location(self) -> str:
        """Where the objects are, for logs and errors: the URL, never a credential."""
        ...

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> Written: ...

    async def stat(self, name: str) -> ObjectInfo | None: ...

    def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` up to (not including) ``end`` (None: the end of the object)."""
        ...

    async def delete(self, name: str) -> None: ...

    async def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    async def probe(self) -> None: ...


def open_storage(url: str) -> ObjectStorage:
    """The store for ``file:///path`` or ``s3://bucket[/prefix]`` (credentials, region and
    endpoint from the ``AWS_*`` variables). Raises ``InvalidStorageUrl``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidStorageUrl("a file archive URL is file:///absolute/path")
        root = Path(unquote(parts.path))
        return ObstoreStorage(lambda: LocalStore(root, mkdir=True), location=f"file://{root}")
    if parts.scheme == "s3":
        if not parts.netloc or parts.username or parts.password or parts.query:
            raise InvalidStorageUrl(
                "an S3 archive URL is s3://bucket/prefix (credentials go in AWS_* variables)"
            )
        prefix = parts.path.strip("/")
        bucket = parts.netloc
        location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return ObstoreStorage(
            lambda: S3Store(
                bucket,
                prefix=prefix or None,
                client_options=_client_options(),
                retry_config=_RETRY,
            ),
            location=location,
        )
    raise InvalidStorageUrl("the archive URL must start with file:/// or s3://")


# A store that does not answer fails an operation within about half a minute (the caller's own
# retry, with backoff, takes over) instead of the library's default of three minutes.
_RETRY: Any = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=20),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5)},
}


def _client_options() -> Any:
    options: dict[str, Any] = {
        "connect_timeout": "5s",
        "timeout": "120s",
        "default_content_type": "text/csv; charset=utf-8",
    }
    # Honoured here as well as by the library's own environment reading, so that giving
    # client options never drops it.
    if os.environ.get("AWS_ALLOW_HTTP", "").strip().lower() == "true":
        options["allow_http"] = True
    return options


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name.split("/"):
        raise ValueError(f"not an object name this gateway makes: {name!r}")
    return name


def scrub(text: str) -> str:
    """Library error text with any configured secret value blanked out, and bounded."""
    for variable in _SECRET_VARIABLES:
        value = os.environ.get(variable)
        if value and len(value) >= 4:
            text = text.replace(value, "[redacted]")
    text = " ".join(text.split())
    return text[:300]


def _failure(action: str, location: str, exc: Exception) -> StorageError:
    return StorageError(f"{action} at {location} failed: {type(exc).__name__}: {scrub(str(exc))}")


class ObstoreStorage:
    """``ObjectStorage`` over any obstore store, built on first use: a store that cannot even
    be opened (a directory that cannot be made, a bad configuration) fails its operations with
    ``StorageError`` (and the probe with the reason), not the process that holds it."""

    def __init__(self, build: Callable[[], Any], *, location: str) -> None:
        self._build = build
        self._built: Any = None
        self._location = location

    @property
    def _store(self) -> Any:
        if self._built is None:
            try:
                self._built = self._build()
            except Exception as exc:
                raise _failure("opening the store", self._location, exc) from None
        return self._built

    @property
    def location(self) -> str:
        return self._location

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> Written:
        check_name(name)
        digest = hashlib.sha256()
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                if chunk:
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

        store = self._store
        try:
            await obstore.put_async(
                store,
                name,
                counted(),
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except Exception as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, StorageError):  # our own source failed: say so as it is
                raise cause from None
            raise _failure(f"writing {name}", self._location, exc) from None
        return Written(name=name, size=size, sha256=digest.hexdigest())

    async def stat(self, name: str) -> ObjectInfo | None:
        check_name(name)
        store = self._store
        try:
            meta = await obstore.head_async(store, name)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:
            raise _failure(f"reading {name}", self._location, exc) from None
        return ObjectInfo(name=name, size=int(meta["size"]), modified=meta.get("last_modified"))

    async def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_name(name)
        options: Any = {}  # obstore.GetOptions
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        store = self._store
        try:
            result = await obstore.get_async(store, name, options=options or None)
            stream = result.stream(min_chunk_size=READ_CHUNK_BYTES)
            async for chunk in stream:
                yield bytes(chunk)
        except (NotFoundError, FileNotFoundError):
            raise StorageError(f"{name} is not at {self._location}") from None
        except Exception as exc:
            raise _failure(f"reading {name}", self._location, exc) from None

    async def delete(self, name: str) -> None:
        check_name(name)
        store = self._store
        try:
            await obstore.delete_async(store, name)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            raise _failure(f"deleting {name}", self._location, exc) from None

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        if prefix:
            check_name(prefix.rstrip("/"))
        store = self._store
        try:
            found: list[ObjectInfo] = []
            async for batch in obstore.list(store, prefix or None):
                for meta in batch:
                    found.append(
                        ObjectInfo(
                            name=str(meta["path"]),
                            size=int(meta["size"]),
                            modified=meta.get("last_modified"),
                        )
                    )
            return found
        except Exception as exc:
            raise _failure("listing", self._location, exc) from None

    async def probe(self) -> None:
        """Write, read back and delete a small object; raise ``StorageUnavailable`` with the
        reason when any of it fails."""
        payload = os.urandom(16).hex().encode()
        name = f"{PROBE_PREFIX}/{payload.decode()}"  # its own per probe: processes probe at once

        async def one() -> AsyncIterator[bytes]:
            yield payload

        try:
            await self.write(name, one())
            back = b"".join([chunk async for chunk in self.read(name)])
            if back != payload:
                raise StorageError(f"the probe object read back from {self._location} differs")
            await self.delete(name)
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from None
