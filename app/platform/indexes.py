"""Walking a time index newest first: a sorted set of ids scored by creation (ms).

Pages of exports, feeds and feed runs all read their indexes this way. A position is the last
shown (ms, id); the next page holds what sorts strictly after it (ms descending, then id
descending: the order Redis gives equal scores in reverse), so members added meanwhile, being
newer, never shift what comes after a position already handed out.
"""

from __future__ import annotations

from redis.asyncio import Redis


async def newest_before(
    redis: Redis, key: str, before: tuple[int, str] | None, count: int
) -> list[tuple[str, int]]:
    """Up to ``count`` (member, ms) of the index ``key``, newest first, strictly after the
    position ``before``."""
    high: float | str = "+inf" if before is None else before[0]
    found: list[tuple[str, int]] = []
    offset = 0
    while len(found) < count:
        chunk = await redis.zrevrangebyscore(
            key, high, "-inf", start=offset, num=count, withscores=True
        )
        for member, score in chunk:
            ms = int(score)
            # Equal scores at the position's millisecond: only ids that sort below it.
            if before is None or ms < before[0] or member < before[1]:
                found.append((member, ms))
        if len(chunk) < count:
            break
        offset += len(chunk)
    return found[:count]
