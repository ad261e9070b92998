"""A throttling TCP proxy on the loopback interface, for the slow-link sync benchmark.

Real WRDS is remote: a ``COPY`` stream is bound by the round trip and by what one TCP connection
carries, not by CPU. `ThrottledProxy` listens on ``127.0.0.1`` and forwards each connection to the
replica's Unix socket, with, per connection and per direction:

* a bandwidth cap (`rate_bytes_s`, default 8 MB/s): a token bucket, bytes are held back until
  the bucket allows them;
* added latency (`latency_s`, default 40 ms): each chunk leaves ``latency_s`` after it arrived,
  in both directions, so a round trip costs ``2 x latency_s`` more than on the loopback.

It runs an asyncio loop in a daemon thread of the benchmark process (`start`/`stop`); the sync
under test runs in a subprocess and connects to ``127.0.0.1:<port>`` with ``sslmode=disable``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Final

#: Per-connection bandwidth cap and one-way latency of the slow-link profile.
RATE_BYTES_S: Final = 8_000_000
LATENCY_S: Final = 0.040
_CHUNK: Final = 64 * 1024


class ThrottledProxy:
    """``127.0.0.1:<port>`` -> the Unix socket ``target``, throttled per connection."""

    def __init__(
        self, target: str, *, rate_bytes_s: float = RATE_BYTES_S, latency_s: float = LATENCY_S
    ) -> None:
        self.target = target
        self.rate_bytes_s = rate_bytes_s
        self.latency_s = latency_s
        self.port = 0
        self.connections = 0
        self.peak_connections = 0
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="throttle-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> ThrottledProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ThrottledProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open += 1
        self.peak_connections = max(self.peak_connections, self._open)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            self._open -= 1
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._open -= 1
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy ``src`` to ``dst``: each chunk leaves ``latency_s`` after it arrived, and the
        direction carries no more than ``rate_bytes_s`` (one chunk at a time, paced)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=64)

        async def receive() -> None:
            while data := await src.read(_CHUNK):
                await queue.put((time.monotonic() + self.latency_s, data))
            await queue.put(None)

        async def send() -> None:
            free = time.monotonic()  # when this direction of the link is next idle
            while (item := await queue.get()) is not None:
                due, data = item
                start = max(due, free)
                delay = start - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                dst.write(data)
                await dst.drain()
                free = start + len(data) / self.rate_bytes_s
            if dst.can_write_eof():
                dst.write_eof()

        await asyncio.gather(receive(), send(), return_exceptions=True)
