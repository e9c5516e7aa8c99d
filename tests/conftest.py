"""Fixtures: the suite's own Redis server, the sandbox upstream and gateway stacks.

The Redis server is started here on a free port (never the machine's shared one), so flushing
its databases between tests is safe.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from app.platform.localredis import LocalRedis
from app.sandbox.config import SandboxConfig
from app.sandbox.server import create_app
from tests.support import SANDBOX_TOKEN, S3Server, ServerThread, Stack, running_stack

_databases = itertools.cycle(range(1, 16))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    """A freshly emptied database of the suite's private Redis server."""
    db = next(_databases)
    client = redis.Redis(port=redis_server.port, db=db)
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:{redis_server.port}/{db}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    client = AsyncRedis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[ServerThread]:
    server = ServerThread(create_app(SandboxConfig(token=SANDBOX_TOKEN, task_seconds=0.5)))
    yield server.start()
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: ServerThread) -> Iterator[httpx.Client]:
    """Control client of the sandbox, reset to its startup configuration for each test."""
    with httpx.Client(base_url=sandbox_server.url, timeout=10) as control:
        control.post("/_sandbox/reset").raise_for_status()
        yield control


@pytest.fixture
def upstream_url(sandbox_server: ServerThread) -> str:
    return f"{sandbox_server.url}/v1.1"


@pytest.fixture
def stack(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> Iterator[Stack]:
    """API + one worker with the suite's defaults (fast polling)."""
    with running_stack(redis_url, upstream_url, tmp_path) as gateway:
        yield gateway


SHARED_DB = 0


@pytest.fixture(scope="module")
def shared_stack(
    request: pytest.FixtureRequest,
    redis_server: LocalRedis,
    sandbox_server: ServerThread,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A stack shared by the tests of one module, for tests that only read or that submit
    queries of their own (starting the API and a worker costs seconds; a module pays once).

    It runs on a database of its own (0; the per-test ones are 1-15), flushed when it starts,
    with the settings of the module's ``SHARED_STACK_ENV`` (a dict), if any. Its tests must use
    site ids and filters no other test of the module uses, so that caches and coalescing cannot
    join them; the sandbox is still reset before each test by the ``sandbox`` fixture.
    """
    with redis.Redis(port=redis_server.port, db=SHARED_DB) as control:
        control.flushdb()
    with running_stack(
        f"redis://127.0.0.1:{redis_server.port}/{SHARED_DB}",
        f"{sandbox_server.url}/v1.1",
        tmp_path_factory.mktemp("shared-stack"),
        **getattr(request.module, "SHARED_STACK_ENV", {}),
    ) as stack:
        yield stack


@pytest.fixture
async def shared_redis(redis_server: LocalRedis) -> AsyncIterator[AsyncRedis]:
    """A client of the shared stack's database."""
    client = AsyncRedis(port=redis_server.port, db=SHARED_DB, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-protocol server (moto's) for the whole session; its ``AWS_*`` variables are
    set in this process's environment, so stores built here and processes started by the
    stacks (which inherit the environment) reach it."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.environment().items():
            patch.setenv(name, value)
        yield server
    server.stop()


_buckets = itertools.count()


@pytest.fixture(params=["file", "s3"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty object store, once as a ``file://`` directory and once as an S3 bucket on
    the suite's S3 server: tests taking it run against both."""
    if request.param == "file":
        return f"file://{tmp_path / 'objects'}"
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = f"archive-{next(_buckets)}"
    server.create_bucket(bucket)
    return f"s3://{bucket}/gateway"
