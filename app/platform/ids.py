"""Unguessable ids without a system call each: ``os.urandom`` read 4 KiB at a time.

Export and task ids carry 128 random bits. ``secrets.token_urlsafe`` asks the kernel for every
one of them, and on this VM that ``getrandom`` call was 3.8 % of the API's CPU for accepting an
export (docs/PERFORMANCE.md). The bytes here are the same kernel CSPRNG's, fetched once per
256 ids. A forked child drops the buffer it inherited: it must never hand out the ids its
parent is about to. The lock is for free-threaded Python: under the GIL nothing between
reading and moving the offset can switch threads, but without one two threads could take the
same bytes.
"""

from __future__ import annotations

import base64
import os
import threading

_CHUNK = 4096
_buffer = b""
_offset = 0
_lock = threading.Lock()


def _drop() -> None:
    global _buffer, _offset, _lock
    _buffer, _offset, _lock = b"", 0, threading.Lock()  # a lock held at fork stays held


os.register_at_fork(after_in_child=_drop)


def random_bytes(count: int) -> bytes:
    global _buffer, _offset
    if count > _CHUNK:
        return os.urandom(count)
    with _lock:
        end = _offset + count
        if end > len(_buffer):
            _buffer, _offset, end = os.urandom(_CHUNK), 0, count
        chunk = _buffer[_offset:end]
        _offset = end
    return chunk


def token_urlsafe(count: int) -> str:
    """Like ``secrets.token_urlsafe(count)``: ``count`` random bytes, base64url, unpadded."""
    return base64.urlsafe_b64encode(random_bytes(count)).rstrip(b"=").decode("ascii")
