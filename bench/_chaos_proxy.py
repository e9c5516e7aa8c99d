"""A TCP proxy that resets a share of connections: the "connection reset by peer" fault.

    with ChaosProxy(("127.0.0.1", 8090), reset_rate=0.1) as proxy:
        ...  # talk to proxy.url instead of the upstream

Each chunk a client sends is, with probability ``reset_rate``, not forwarded: both sides
of that connection are aborted instead (the client sees a reset while waiting for its
answer). A request that is reset never reaches the upstream, so it cannot create anything
there; every other byte is passed through unchanged. Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import random
import threading
from types import TracebackType


class ChaosProxy:
    def __init__(
        self, target: tuple[str, int], *, reset_rate: float, seed: int | None = None
    ) -> None:
        self.target = target
        self.reset_rate = reset_rate
        self.rng = random.Random(seed)
        self.resets = 0
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChaosProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("chaos proxy did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return

        async def client_to_upstream() -> None:
            while data := await reader.read(65536):
                if self.rng.random() < self.reset_rate:
                    self.resets += 1
                    writer.transport.abort()
                    up_writer.transport.abort()
                    return
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def upstream_to_client() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(client_to_upstream(), upstream_to_client())
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # CancelledError: the proxy is closing. Swallowed, because asyncio.start_server's
            # done-callback would otherwise log the cancelled handler as an error.
            writer.transport.abort()
            up_writer.transport.abort()
