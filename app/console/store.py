"""Every Redis read and write of the operator console (key names: ``app.platform.keys``).

* ``gw:console:secret``: the key that signs session cookies and CSRF tokens, made once with
  ``SET NX`` by whichever API process needs it first, so every process signs alike and a
  restart signs nobody out. Redis holds every record of the gateway already; whoever reads
  it needs no cookie.
* ``gw:console:session:{sid}``: one session (who, and the digest of the key used), expiring
  with the session, so that signing out ends it for good.
* the sign-in window per client address (``app.platform.ratelimit.SlidingWindow``).
* the job queue's depth (its sorted sets, named by the queue adapter), for the health strip.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from redis.asyncio import Redis

from app.console.schemas import Session
from app.platform import keys
from app.platform.ratelimit import SlidingWindow


class ConsoleStore:
    def __init__(self, redis: Redis, *, signin_per_minute: int) -> None:
        self.redis = redis
        self._secret: bytes | None = None
        self._signin = SlidingWindow(redis, signin_per_minute)

    async def secret(self) -> bytes:
        if self._secret is None:
            await self.redis.set(keys.CONSOLE_SECRET, secrets.token_hex(32), nx=True)
            value: str | bytes | None = await self.redis.get(keys.CONSOLE_SECRET)
            if not value:  # deleted between the two commands: try once more
                await self.redis.set(keys.CONSOLE_SECRET, secrets.token_hex(32), nx=True)
                value = await self.redis.get(keys.CONSOLE_SECRET)
            assert value, "the console secret could not be stored"
            self._secret = value.encode() if isinstance(value, str) else value
        return self._secret

    async def save_session(self, session: Session, seconds: float) -> None:
        await self.redis.set(
            keys.console_session(session.id), session.model_dump_json(), ex=max(1, int(seconds))
        )

    async def get_session(self, session_id: str) -> Session | None:
        raw = await self.redis.get(keys.console_session(session_id))
        return Session.model_validate_json(raw) if raw else None

    async def delete_session(self, session_id: str) -> None:
        await self.redis.delete(keys.console_session(session_id))

    async def signin_wait_seconds(self, address: str) -> int:
        """Count a sign-in attempt from ``address`` (0), or say how long it must wait."""
        return await self._signin.wait_seconds(keys.console_signin_window(address))

    async def queue_depth(self, queue_keys: Sequence[str]) -> int:
        if not queue_keys:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in queue_keys:
                pipe.zcard(key)
            counts = await pipe.execute()
        return sum(int(c) for c in counts)
