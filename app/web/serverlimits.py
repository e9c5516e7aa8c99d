"""What one client may hold of the HTTP server, however the API is started.

The process command is plain ``uvicorn app.main:app``: no flag of ours reaches uvicorn, and
its protocols on their own bound none of this (httptools, its default, keeps every header
byte it is sent; neither protocol times out a client that never finishes its headers; idle
connections are kept until the process runs out of file descriptors). So the app bounds
them itself, at the one place that sees bytes before they are parsed: the connection.

uvicorn builds its ``Config`` before it imports the app, and creates each connection's
protocol from ``config.http_protocol_class`` when the connection is made (after the app's
lifespan has started). At lifespan start ``install`` finds the running server's ``Config``
(the one among live objects whose app is ours) and wraps its protocol class in
``LimitedProtocol``, which, for every connection:

* refuses request headers over ``MAX_HEADER_BYTES`` (16 KiB) with a 431 problem and closes
  the connection; at most the limit plus one network read is ever buffered;
* closes a connection whose request headers are not complete within
  ``HEADER_TIMEOUT_SECONDS`` (10 s) of its first byte or of the connection itself
  (slow-loris), checked each second; between requests uvicorn's own keep-alive timeout (5 s)
  closes idle ones;
* caps open connections at ``max_connections()`` (at most 4,096, fewer when the process may
  open fewer files): past the cap the *oldest idle* connections are closed, never the new
  one, so ``/healthz`` and real requests keep being answered while idle connections pile up.
  At start the soft open-files limit is raised to the hard one, as servers do.

Anything else that runs the app (another ASGI server) gets none of this: run it behind a
reverse proxy that enforces the same (README, "Security and limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import resource
from typing import Any, ClassVar

from app.platform.errors import PROBLEM_JSON, GatewayError

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 4096
# Files the process keeps for everything else (Redis, upstream, file hosts, logs).
RESERVED_FILES = 512


class HeadersTooLarge(GatewayError):
    status = 431
    title = "Request Header Fields Too Large"
    slug = "headers-too-large"


def max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(64, min(MAX_CONNECTIONS, soft - RESERVED_FILES))


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # else keep what we have: max_connections() adapts to it
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _refusal_bytes() -> bytes:
    detail = f"request headers may be at most {MAX_HEADER_BYTES} bytes"
    body = json.dumps(HeadersTooLarge(detail).problem()).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedProtocol(asyncio.Protocol):
    """Wraps one connection's uvicorn protocol (h11 or httptools) with the limits above.

    A request's headers are complete when the inner protocol starts a new request/response
    cycle (``.cycle``, as both of uvicorn's HTTP/1.1 protocols name it); a new request starts
    with the first byte after the previous cycle's response is complete."""

    inner_class: ClassVar[type[asyncio.Protocol]]
    live: ClassVar[dict[LimitedProtocol, None]] = {}  # oldest first
    cap: ClassVar[int] = MAX_CONNECTIONS
    # One timer for every connection, each second: a timer per request (armed and cancelled
    # around every request's headers) cut status reads from 1,955 to 879 req/s
    # (bench/status_reads.py); with the one sweep they were back at 2,316 (ratio 0.93).
    sweeping: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        self.inner: Any = self.inner_class(**kwargs)
        self.loop = kwargs.get("_loop") or asyncio.get_event_loop()
        self.transport: Any = None
        self.awaiting_headers = True
        self.header_bytes = 0
        self.cycle: object = None
        self.headers_since = 0.0  # loop time the awaited headers began (or the connection)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport instances
        self.inner.connection_made(transport)
        self.live[self] = None
        self.headers_since = self.loop.time()
        if not type(self).sweeping:
            type(self).sweeping = True
            self.loop.call_later(1.0, type(self)._sweep, self.loop)
        if len(self.live) > self.cap:
            self._shed()

    def data_received(self, data: bytes) -> None:
        if not self.awaiting_headers:
            cycle = self.inner.cycle
            if cycle is not None and getattr(cycle, "response_complete", False):
                self.awaiting_headers, self.header_bytes = True, 0
                self.headers_since = self.loop.time()
        if self.awaiting_headers and self.header_bytes > MAX_HEADER_BYTES:
            self._refuse()
            return
        self.inner.data_received(data)
        if not self.awaiting_headers:
            return
        if self.inner.cycle is not self.cycle:
            self.cycle = self.inner.cycle
            self.awaiting_headers = False
            return
        self.header_bytes += len(data)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._refuse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.pop(self, None)
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the limits --------------------------------------------------------------------------

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        """Close every connection whose awaited headers are overdue; again in a second while
        any connection is open."""
        too_old = loop.time() - HEADER_TIMEOUT_SECONDS
        for protocol in list(cls.live):
            if protocol.awaiting_headers and protocol.headers_since < too_old:
                if protocol.transport is not None:
                    protocol.transport.close()
                cls.live.pop(protocol, None)
        if cls.live:
            loop.call_later(1.0, cls._sweep, loop)
        else:
            cls.sweeping = False

    def _refuse(self) -> None:
        self.awaiting_headers = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_refusal_bytes())
            self.transport.close()

    def _idle(self) -> bool:
        if self.awaiting_headers:
            return self.header_bytes == 0
        cycle = self.inner.cycle
        return cycle is None or bool(getattr(cycle, "response_complete", False))

    def _shed(self) -> None:
        """Close the oldest idle connections until the count is back under the cap."""
        excess = len(self.live) - self.cap
        for protocol in list(self.live):
            if excess <= 0:
                break
            if protocol is self or not protocol._idle() or protocol.transport is None:
                continue
            protocol.transport.close()
            self.live.pop(protocol, None)
            excess -= 1


def limited(protocol_class: type[asyncio.Protocol]) -> type[LimitedProtocol]:
    """``protocol_class`` (uvicorn's h11 or httptools protocol) with the limits."""
    name = f"Limited{protocol_class.__name__}"
    return type(name, (LimitedProtocol,), {"inner_class": protocol_class, "live": {}})


def _serves(config: Any, app: object) -> bool:
    current = getattr(config, "loaded_app", None)
    for _ in range(8):  # uvicorn's own wrappers (proxy headers, message logger) around ours
        if current is None:
            return False
        if current is app:
            return True
        current = getattr(current, "app", None)
    return False


def install(app: object) -> bool:
    """Wrap the protocol of the uvicorn server running ``app`` (once); False if there is none
    (the app is run by something else, or by a uvicorn without HTTP/1.1 protocol classes)."""
    try:
        from uvicorn import Config
    except ImportError:  # pragma: no cover (uvicorn is a dependency)
        return False
    configs = [o for o in gc.get_objects() if isinstance(o, Config) and _serves(o, app)]
    if len(configs) != 1:
        log.warning("server limits not installed: no uvicorn server of this app was found")
        return False
    config = configs[0]
    current = getattr(config, "http_protocol_class", None)
    if not isinstance(current, type) or not issubclass(current, asyncio.Protocol):
        return False
    if issubclass(current, LimitedProtocol):
        return True
    if current.__name__ not in ("HttpToolsProtocol", "H11Protocol"):
        log.warning(
            "server limits not installed: unknown HTTP protocol", extra={"protocol": str(current)}
        )
        return False
    raise_open_files_limit()
    wrapped = limited(current)
    wrapped.cap = max_connections()
    config.http_protocol_class = wrapped
    log.info(
        "server limits installed",
        extra={
            "max_header_bytes": MAX_HEADER_BYTES,
            "header_timeout_seconds": HEADER_TIMEOUT_SECONDS,
            "max_connections": wrapped.cap,
        },
    )
    return True
