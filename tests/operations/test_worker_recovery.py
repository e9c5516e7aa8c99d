"""A worker killed mid-job costs seconds: a live worker hands its jobs back as soon as its
heartbeat has lapsed for GATEWAY_WORKER_RECOVERY_SECONDS, and never the jobs of a worker that is
alive. Real processes: the API, arq workers (SIGKILLed), the sandbox upstream, Redis."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
from redis.asyncio import Redis

from tests.support import Stack, running_stack, wait_for, wait_until

EXPORTS = 30


async def _submit(stack: Stack, count: int, tag: str) -> list[str]:
    async with stack.client() as client:
        answers = await asyncio.gather(
            *(
                client.post("/v1/exports", json={"filter": f"signer_id=={tag}-{n}"})
                for n in range(count)
            )
        )
    for answer in answers:
        assert answer.status_code == 202, answer.text
    return [answer.json()["id"] for answer in answers]


async def _all_running(stack: Stack, ids: list[str]) -> bool:
    """Every export's upstream task exists and its id is saved (a kill now cannot make a
    second upstream task)."""
    async with stack.client() as client:
        bodies = [(await client.get(f"/v1/exports/{i}")).json() for i in ids]
    return all(body["status"] == "running" for body in bodies)


async def _held(redis: Redis) -> dict[str, int]:
    """Jobs each worker holds now, by worker id."""
    held = {}
    async for key in redis.scan_iter("gw:worker:*:jobs"):
        held[key] = int(await redis.hlen(key))  # type: ignore[misc]
    return held


async def _kill_holding(stack: Stack, redis: Redis, worker: subprocess.Popen[bytes]) -> float:
    """SIGKILL ``worker`` once it holds jobs (slow upstream polls keep them held)."""
    await wait_until(lambda: _holds_some(redis), timeout=20, interval=0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    return time.monotonic()


async def _holds_some(redis: Redis) -> bool:
    return sum((await _held(redis)).values()) >= 3


async def _complete_all(stack: Stack, ids: list[str], timeout: float) -> None:
    async with stack.client() as client:
        bodies = await asyncio.gather(*(wait_for(client, i, timeout=timeout) for i in ids))
    assert [body["status"] for body in bodies] == ["completed"] * len(ids)


def _slow_polls(sandbox: httpx.Client, seconds: float) -> None:
    patch = {"slow_rate": 1.0 if seconds else 0.0, "slow_seconds": seconds}
    sandbox.post("/_sandbox/config", json=patch).raise_for_status()


async def test_the_only_worker_killed_mid_run_has_its_exports_finished_by_a_new_one_within_30_s(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, redis_client: Redis, tmp_path: Path
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 6}).raise_for_status()
    with running_stack(
        redis_url, upstream_url, tmp_path, GATEWAY_WORKER_RECOVERY_SECONDS="5"
    ) as stack:
        stack.wait_ready()
        ids = await _submit(stack, EXPORTS, "recover-one")
        await wait_until(lambda: _all_running(stack, ids), timeout=30, interval=0.2)
        _slow_polls(sandbox, 3)  # polls take 3 s: the worker is killed holding them
        killed_at = await _kill_holding(stack, redis_client, stack.processes[1])
        held_by_the_dead = sum((await _held(redis_client)).values())
        _slow_polls(sandbox, 0)
        stack.start_worker("worker-new")

        await _complete_all(stack, ids, timeout=30 - (time.monotonic() - killed_at))

        assert held_by_the_dead >= 3
        assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == EXPORTS
        logs = stack.log_text()
        handed = [int(n) for n in re.findall(r'"worker presumed dead[^\n]*"jobs": (\d+)', logs)]
        assert handed and sum(handed) >= 1, logs[-3000:]


async def test_when_one_of_two_workers_dies_the_survivor_takes_over_without_a_restart(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, redis_client: Redis, tmp_path: Path
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 6}).raise_for_status()
    with running_stack(
        redis_url, upstream_url, tmp_path, workers=2, GATEWAY_WORKER_RECOVERY_SECONDS="5"
    ) as stack:
        stack.wait_ready()
        ids = await _submit(stack, EXPORTS, "recover-two")
        await wait_until(lambda: _all_running(stack, ids), timeout=30, interval=0.2)
        _slow_polls(sandbox, 3)
        doomed, survivor = stack.processes[1], stack.processes[2]
        killed_at = await _kill_holding(stack, redis_client, doomed)
        _slow_polls(sandbox, 0)

        await _complete_all(stack, ids, timeout=30 - (time.monotonic() - killed_at))

        assert survivor.poll() is None  # the same process throughout
        assert len(stack.processes) == 3  # nothing was started after the kill
        assert sandbox.get("/_sandbox/stats").json()["tasks_created"] == EXPORTS
        survivor_log = (tmp_path / "worker-1.log").read_text()
        assert "worker presumed dead" in survivor_log


async def test_a_job_held_by_a_live_but_slow_worker_is_never_handed_to_another(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, redis_client: Redis, tmp_path: Path
) -> None:
    # Each poll takes 6 s, twice the recovery window; two workers could both run it.
    sandbox.post("/_sandbox/config", json={"task_seconds": 1}).raise_for_status()
    with running_stack(
        redis_url, upstream_url, tmp_path, workers=2, GATEWAY_WORKER_RECOVERY_SECONDS="3"
    ) as stack:
        stack.wait_ready()
        ids = await _submit(stack, 4, "slow-holder")
        await wait_until(lambda: _all_running(stack, ids), timeout=30, interval=0.2)
        _slow_polls(sandbox, 6)
        await wait_until(lambda: _holds_some(redis_client), timeout=20, interval=0.05)
        await asyncio.sleep(8)  # every held job outlives the recovery window, its worker beats
        _slow_polls(sandbox, 0)
        await _complete_all(stack, ids, timeout=40)

        logs = stack.log_text()
        assert "presumed dead" not in logs
        starts = re.findall(r"→ (poll:[^\s(:]+:\d+):poll_task", logs)
        assert starts, logs[-3000:]
        assert len(starts) == len(set(starts)), "a poll step was started twice"
