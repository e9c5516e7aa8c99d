"""The worker's chores stop on shutdown even when a cancellation is swallowed on the way."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from redis.asyncio import Redis

from tests.support import Stack, wait_until
from worker.chores import cancel_and_wait


async def test_a_chore_that_swallows_its_first_cancellation_is_still_stopped() -> None:
    # What asyncio.wait_for does on Python 3.11 when the cancel races the write it wraps
    # (redis-py sends every command through it): the CancelledError never reaches the chore.
    swallowed = 0

    async def chore() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(chore())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await cancel_and_wait([task], patience=60)
    assert task.cancelled()
    assert swallowed == 1
    assert time.monotonic() - started < 20  # ended by a second cancel, not by running out


async def test_sigterm_right_after_start_up_always_ends_the_worker(
    stack: Stack, redis_client: Redis, tmp_path: Path
) -> None:
    # The first sweep and heartbeat run the moment the worker is up: a SIGTERM then lands
    # inside their Redis commands, which is where a cancellation can be swallowed.
    stack.stop(stack.processes[1])
    for round_ in range(8):
        await redis_client.delete("gw:workers")
        worker = stack.start_worker(f"worker-{round_}")
        await wait_until(lambda: _registered(redis_client), timeout=20, interval=0.01)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)
        assert worker.returncode == 0, stack.log_text()[-2000:]


async def _registered(redis_client: Redis) -> bool:
    return bool(await redis_client.zcard("gw:workers"))
