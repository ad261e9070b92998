"""A throttling TCP proxy on the loopback interface, for the slow-link sync benchmark.

Real WRDS is remote: a ``COPY`` stream is bound by the round trip and by what one TCP connection
carries, not by CPU. `ThrottledProxy` listens on ``127.0.0.1`` and forwards each connection to the
replica's Unix socket, with, per connection and per direction:

* a bandwidth cap (`rate_bytes_s`, default 8 MB/s): each chunk leaves no earlier than the link
  is free again after the previous one (``len / rate_bytes_s`` after it started);
* added latency (`latency_s`, default 40 ms): each chunk leaves ``latency_s`` after it arrived,
  in both directions, so a round trip costs ``2 x latency_s`` more than on the loopback.

Each direction of each connection is two plain threads, one receiving chunks of at most
`CHUNK_BYTES` into a bounded queue (a full queue stops reading, so TCP backpressure reaches the
sender) and one sending them on time; the socket calls and sleeps release the GIL, so the proxy
costs little CPU (`cpu_seconds`: the CPU time its threads used) and does not compete with the
benchmark process's other threads. An asyncio proxy in one thread cost about three times the
CPU and, on a loaded two-core machine, fell behind its own schedule. The sync under test runs in
a subprocess and connects to ``127.0.0.1:<port>`` with ``sslmode=disable``.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Final

#: Per-connection bandwidth cap and one-way latency of the slow-link profile.
RATE_BYTES_S: Final = 8_000_000
LATENCY_S: Final = 0.040
#: Largest chunk read at once (8 ms of link time at 8 MB/s).
CHUNK_BYTES: Final = 64 * 1024
#: Chunks held per direction (about 4 MB: more than the 320 KB in flight at 8 MB/s x 40 ms).
_QUEUE_CHUNKS: Final = 64


class ThrottledProxy:
    """``127.0.0.1:<port>`` -> the Unix socket ``target``, throttled per connection.

    ``connections`` counts accepted connections, ``peak_connections`` the most open at once,
    ``bytes_down`` the bytes sent from the server to the clients, ``cpu_seconds`` the CPU time
    of the proxy's threads so far.
    """

    def __init__(
        self, target: str, *, rate_bytes_s: float = RATE_BYTES_S, latency_s: float = LATENCY_S
    ) -> None:
        self.target = target
        self.rate_bytes_s = rate_bytes_s
        self.latency_s = latency_s
        self.connections = 0
        self.peak_connections = 0
        self.bytes_down = 0
        self._open = 0
        self._cpu = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="throttle-accept", daemon=True)

    @property
    def cpu_seconds(self) -> float:
        """CPU time used by the proxy's finished threads (all of them once `stop` returned)."""
        with self._lock:
            return self._cpu

    def start(self) -> ThrottledProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(10)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(10)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> ThrottledProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._cpu += time.thread_time()

        thread = threading.Thread(target=run, name="throttle-pipe", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    return  # the listener was closed by stop()
                try:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    upstream.connect(self.target)
                except OSError:
                    client.close()
                    continue
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self.connections += 1
                    self._open += 1
                    self.peak_connections = max(self.peak_connections, self._open)
                    self._sockets += [client, upstream]
                self._spawn(self._connection, client, upstream)
        finally:
            with self._lock:
                self._cpu += time.thread_time()

    def _connection(self, client: socket.socket, upstream: socket.socket) -> None:
        done = threading.Event()
        left = [2]

        def finished() -> None:
            with self._lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        self._direction(client, upstream, finished, down=False)
        self._direction(upstream, client, finished, down=True)
        done.wait()
        with self._lock:
            self._open -= 1
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def _direction(
        self,
        src: socket.socket,
        dst: socket.socket,
        finished: Callable[[], None],
        *,
        down: bool,
    ) -> None:
        """Copy ``src`` to ``dst``: each chunk leaves ``latency_s`` after it arrived and the
        direction carries no more than ``rate_bytes_s``."""
        chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)

        def receive() -> None:
            try:
                while data := src.recv(CHUNK_BYTES):
                    chunks.put((time.monotonic() + self.latency_s, data))
            except OSError:
                pass
            finally:
                chunks.put(None)

        def send() -> None:
            free = time.monotonic()  # when this direction of the link is next idle
            try:
                while (item := chunks.get()) is not None:
                    due, data = item
                    start = max(due, free)
                    delay = start - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    dst.sendall(data)
                    if down:
                        with self._lock:
                            self.bytes_down += len(data)
                    free = start + len(data) / self.rate_bytes_s
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
            except OSError:
                with contextlib.suppress(OSError):
                    src.shutdown(socket.SHUT_RDWR)  # the other side is gone: stop reading too
                while chunks.get() is not None:  # let the receiver finish
                    pass
            finally:
                finished()

        self._spawn(receive)
        self._spawn(send)
