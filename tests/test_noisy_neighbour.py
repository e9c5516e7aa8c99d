"""The noisy neighbour: one client saturating downloads, submissions and redeliveries while
another client's exports complete, download and are delivered on time.

The real stack (API + worker processes, the sandbox upstream over HTTP, a real webhook
receiver), with the production default of 4 upstream tasks at once. The figures are printed
(``pytest -s``) and kept in docs/RELIABILITY.md ("Adversarial")."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import KEYS, Stack, wait_for
from tests.webhooks.receiver import Answer, Receiver

NOISE_SECONDS = 25
QUIET_EXPORTS = 8
ON_TIME_SECONDS = 8  # alone about 1-2 s; a receiver hanging 10 s must not show through


SHARED_STACK_ENV = {"GATEWAY_UPSTREAM_MAX_ACTIVE_TASKS": "4", "GATEWAY_UPSTREAM_MAX_RPS": "50"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(shared_stack: Stack) -> Stack:
    """The module's stack (``SHARED_STACK_ENV``), on a freshly flushed database."""
    return shared_stack


def client(stack: Stack, who: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.api_url,
        headers={"Authorization": f"Bearer {KEYS[who]}"},
        timeout=30,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
    )


async def test_a_noisy_client_never_delays_another_clients_exports_downloads_or_webhooks(
    gateway: Stack, receiver: Receiver, sandbox: httpx.Client
) -> None:
    sandbox.post(
        "/_sandbox/config", json={"task_seconds": 0.5, "rows": 20_000, "rows_per_file": 20_000}
    ).raise_for_status()
    receiver.script("/noisy", Answer(200, "slowly", delay=10))
    hook = f"http://127.0.0.1:{receiver.port}"
    counts: dict[str, int] = {}

    def count(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    async with client(gateway, "alice") as noisy, client(gateway, "bob") as quiet:
        # The noisy client's exports: each webhook is answered only after 10 s.
        made = [
            await noisy.post(
                "/v1/exports",
                json={"filter": f"batch==noisy{n}", "callback_url": f"{hook}/noisy"},
            )
            for n in range(20)
        ]
        noisy_ids = [m.json()["id"] for m in made]
        await asyncio.gather(*(wait_for(noisy, i, timeout=60) for i in noisy_ids))
        quiet_download = await quiet.post("/v1/exports", json={"filter": "batch==quietfile"})
        quiet_file_id = quiet_download.json()["id"]
        await wait_for(quiet, quiet_file_id, timeout=60)
        stop_at = time.monotonic() + NOISE_SECONDS

        async def downloads() -> None:
            while time.monotonic() < stop_at:
                async with noisy.stream("GET", f"/v1/exports/{noisy_ids[0]}/csv") as response:
                    count(f"download {response.status_code}")
                    if response.status_code == 200:
                        await response.aiter_raw().__anext__()
                        await asyncio.sleep(2)  # holding it open, unread
                    else:
                        await asyncio.sleep(0.05)

        async def submissions() -> None:
            while time.monotonic() < stop_at:
                response = await noisy.post(
                    "/v1/exports", json={"filter": f"batch=={uuid.uuid4().hex[:10]}"}
                )
                count(f"submit {response.status_code}")
                await asyncio.sleep(0.05)

        async def redeliveries() -> None:
            n = 0
            while time.monotonic() < stop_at:
                response = await noisy.post(f"/v1/exports/{noisy_ids[n % 20]}/redeliver")
                count(f"redeliver {response.status_code}")
                n += 1
                await asyncio.sleep(0.02)

        async def quiet_client() -> list[float]:
            latencies: list[float] = []
            for n in range(QUIET_EXPORTS):
                path = f"/quiet/{uuid.uuid4().hex[:8]}"
                started = time.monotonic()
                response = await quiet.post(
                    "/v1/exports",
                    json={"filter": f"batch==quiet{n}{path[-4:]}", "callback_url": hook + path},
                )
                assert response.status_code == 202, response.text
                while not receiver.requests(path):
                    assert time.monotonic() - started < 60, f"no webhook for quiet export {n}"
                    await asyncio.sleep(0.05)
                latencies.append(receiver.requests(path)[0].at - started)
                payload = json.loads(receiver.requests(path)[0].body)
                assert payload["type"] == "export.completed"
                await asyncio.sleep(max(0.0, 2 - (time.monotonic() - started)))
            return latencies

        async def quiet_downloads() -> list[float]:
            took: list[float] = []
            await asyncio.sleep(3)  # once the noise has built up
            for _ in range(3):
                started = time.monotonic()
                response = await quiet.get(f"/v1/exports/{quiet_file_id}/csv")
                assert response.status_code == 200, response.text[:300]
                took.append(time.monotonic() - started)
                await asyncio.sleep(4)
            return took

        noise = [
            *(downloads() for _ in range(12)),
            *(submissions() for _ in range(3)),
            *(redeliveries() for _ in range(3)),
        ]
        results: list[Any] = await asyncio.gather(quiet_client(), quiet_downloads(), *noise)
        latencies, download_seconds = results[0], results[1]

    figures = {
        "quiet webhook seconds (submit to receipt)": [round(x, 2) for x in latencies],
        "quiet download seconds": [round(x, 2) for x in download_seconds],
        "noisy requests": dict(sorted(counts.items())),
    }
    print("\nnoisy neighbour:", json.dumps(figures, indent=1))
    assert len(latencies) == QUIET_EXPORTS
    assert max(latencies) < ON_TIME_SECONDS, figures
    assert max(download_seconds) < 10, figures
    assert counts.get("download 429", 0) > 0 and counts.get("download 200", 0) > 0, figures
