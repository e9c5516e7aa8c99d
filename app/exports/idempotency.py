"""``Idempotency-Key`` for ``POST /v1/exports`` (draft-ietf-httpapi-idempotency-key-header).

Per client, a key names one request for 24 hours (``gw:idem:{client_id}:{sha256(key)}``):

* the first request reserves the key atomically (``SET NX`` of an in-flight marker that holds
  a random token and the hash of the request), so two API processes racing on one key let
  exactly one of them through;
* when it succeeds, its answer (status, ``Location``, body) replaces the marker, but only if
  the marker is still ours (a compare-and-set script), and is kept 24 hours;
* when it fails (any error: a 4xx, Redis trouble), the marker is removed, so the caller may
  fix the request and try again with the same key; nothing was created;
* a later request with the key and the same body gets the stored answer again; with another
  body, 422; while the first is still in flight, 409 (with ``Retry-After``).

The in-flight marker expires by itself after ``IN_FLIGHT_SECONDS``, so a process that dies
mid-request does not lock a key for a day.

Bodies are compared by the SHA-256 of the canonical JSON (sorted keys, no spaces) of the
parsed request, so member order and whitespace do not make two requests different.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.platform import keys
from app.platform.errors import BadRequest, Conflict, InvalidRequest, MemberProblem

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEEP_SECONDS = 24 * 3600
IN_FLIGHT_SECONDS = 60

# Replace / delete the in-flight marker only while it is still the one this request wrote.
_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A response worth answering again: status, headers and JSON body (its text)."""

    status: int
    headers: dict[str, str]
    body: str
    replayed: bool = False


def request_hash(parsed: Any) -> str:
    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters long (got {len(key)})",
            errors=[MemberProblem(HEADER, f"must be 1 to {MAX_KEY_LENGTH} characters long")],
        )
    return key


class IdempotencyKeys:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)

    async def run(
        self,
        client_id: str,
        key: str | None,
        body_hash: str,
        action: Callable[[], Awaitable[StoredAnswer]],
    ) -> StoredAnswer:
        """Answer ``action()`` once per (client, key, body): first time for real, later from
        the store."""
        if key is None:
            return await action()
        redis_key = keys.idempotency(client_id, hashlib.sha256(check_key(key).encode()).hexdigest())
        marker = json.dumps(
            {"state": "in_flight", "request": body_hash, "token": secrets.token_urlsafe(16)}
        )
        for _ in range(5):  # the key may vanish between SET NX and GET (released, expired)
            if await self.redis.set(redis_key, marker, nx=True, ex=IN_FLIGHT_SECONDS):
                break
            raw = await self.redis.get(redis_key)
            if raw is not None:
                return self._earlier(json.loads(raw), body_hash)
        else:
            raise Conflict(f"the {HEADER} is busy; try again", headers={"Retry-After": "1"})
        try:
            answer = await action()
        except BaseException:
            await self._release_quietly(redis_key, marker)
            raise
        stored = json.dumps(
            {
                "state": "done",
                "request": body_hash,
                "status": answer.status,
                "headers": answer.headers,
                "body": answer.body,
            }
        )
        await self._complete(keys=[redis_key], args=[marker, stored, KEEP_SECONDS])
        return answer

    @staticmethod
    def _earlier(stored: dict[str, Any], body_hash: str) -> StoredAnswer:
        if stored.get("request") != body_hash:
            detail = f"this {HEADER} was already used with a different request body"
            raise InvalidRequest(detail, errors=[MemberProblem(HEADER, detail)])
        if stored.get("state") != "done":
            raise Conflict(
                f"a request with this {HEADER} is still being handled; retry shortly",
                headers={"Retry-After": "1"},
            )
        body = stored["body"]
        if not isinstance(body, str):  # stored as an object by versions before 2026-11-27
            body = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return StoredAnswer(
            status=int(stored["status"]),
            headers=dict(stored["headers"]),
            body=body,
            replayed=True,
        )

    async def _release_quietly(self, redis_key: str, marker: str) -> None:
        # Bounded: when Redis is in trouble the caller should hear so now; the marker then
        # expires on its own.
        with suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1):
                await self._release(keys=[redis_key], args=[marker])
