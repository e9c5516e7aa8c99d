"""The object-storage layer against a real ``file://`` directory and a real S3-protocol server
(moto's, started by the suite): every test runs against both (``storage_url``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.archive.storage import (
    PART_BYTES,
    InvalidStorageUrl,
    StorageError,
    StorageUnavailable,
    open_storage,
)
from tests.support import S3_CREDENTIALS, S3Server


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_a_written_object_reads_back_with_its_size_and_sha256(storage_url: str) -> None:
    storage = open_storage(storage_url)
    data = os.urandom(2 * PART_BYTES + 12345)  # three parts of a multipart upload

    written = await storage.write("exports/exp_1/data.csv", chunks_of(data))

    assert written.size == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    info = await storage.stat("exports/exp_1/data.csv")
    assert info is not None and info.size == len(data)
    assert await read_all(storage.read("exports/exp_1/data.csv")) == data


async def test_an_empty_object_can_be_written(storage_url: str) -> None:
    storage = open_storage(storage_url)

    written = await storage.write("empty.csv", chunks_of(b""))

    assert (written.size, written.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await read_all(storage.read("empty.csv")) == b""


async def test_a_byte_range_reads_only_those_bytes(storage_url: str) -> None:
    storage = open_storage(storage_url)
    data = bytes(range(256)) * 4000
    await storage.write("ranged.csv", chunks_of(data))

    assert await read_all(storage.read("ranged.csv", 1000, 1010)) == data[1000:1010]
    assert await read_all(storage.read("ranged.csv", len(data) - 7)) == data[-7:]
    assert await read_all(storage.read("ranged.csv", 0, 1)) == data[:1]


async def test_stat_of_a_missing_object_is_none_and_deleting_it_is_no_error(
    storage_url: str,
) -> None:
    storage = open_storage(storage_url)

    assert await storage.stat("nothing/here.csv") is None
    await storage.delete("nothing/here.csv")
    with pytest.raises(StorageError):
        await read_all(storage.read("nothing/here.csv"))


async def test_a_deleted_object_is_gone(storage_url: str) -> None:
    storage = open_storage(storage_url)
    await storage.write("doomed.csv", chunks_of(b"a,b\n1,2\n"))

    await storage.delete("doomed.csv")

    assert await storage.stat("doomed.csv") is None
    assert [o.name for o in await storage.list()] == []


async def test_list_finds_the_objects_under_a_prefix(storage_url: str) -> None:
    storage = open_storage(storage_url)
    for name in ("a/1.csv", "a/2.csv", "b/1.csv"):
        await storage.write(name, chunks_of(name.encode()))

    listed = await storage.list("a")

    assert sorted((o.name, o.size) for o in listed) == [("a/1.csv", 7), ("a/2.csv", 7)]


async def test_a_write_that_breaks_off_leaves_no_object(storage_url: str) -> None:
    storage = open_storage(storage_url)

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART_BYTES)  # a whole part has gone up
        yield os.urandom(PART_BYTES // 2)
        raise StorageError("the source broke off")

    with pytest.raises(StorageError, match="the source broke off"):
        await storage.write("partial.csv", broken())

    assert await storage.stat("partial.csv") is None
    assert [o.name for o in await storage.list()] == []


async def test_a_rewrite_replaces_the_object_whole(storage_url: str) -> None:
    storage = open_storage(storage_url)
    await storage.write("again.csv", chunks_of(b"first version, longer\n"))

    await storage.write("again.csv", chunks_of(b"second\n"))

    assert await read_all(storage.read("again.csv")) == b"second\n"


async def test_the_probe_passes_on_a_working_store_and_leaves_nothing(storage_url: str) -> None:
    storage = open_storage(storage_url)

    await storage.probe()

    assert [o.name for o in await storage.list()] == []


async def test_the_probe_reports_a_directory_that_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(StorageUnavailable, match="Not a directory"):
        await open_storage(f"file://{blocker}/archive").probe()


async def test_the_probe_reports_a_missing_bucket_without_credentials(
    s3_server: S3Server,
) -> None:
    storage = open_storage("s3://no-such-bucket/prefix")

    with pytest.raises(StorageUnavailable) as caught:
        await storage.probe()

    message = str(caught.value)
    assert "s3://no-such-bucket/prefix" in message
    assert S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in message
    assert S3_CREDENTIALS["AWS_ACCESS_KEY_ID"] not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/archive",
        "file://host/path",
        "s3://key:secret@bucket/prefix",
        "s3:///prefix",
        "relative/path",
    ],
)
def test_an_archive_url_other_than_file_or_s3_is_refused(url: str) -> None:
    with pytest.raises(InvalidStorageUrl) as caught:
        open_storage(url)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("name", ["../escape.csv", "a/../../b", "/absolute", "a b", "", "a//b"])
async def test_names_outside_the_gateways_own_alphabet_are_refused(
    tmp_path: Path, name: str
) -> None:
    storage = open_storage(f"file://{tmp_path}")

    with pytest.raises(ValueError, match="not an object name"):
        await storage.write(name, chunks_of(b"x"))
