"""A `DnsServer` in a thread of its own, on an event loop of its own.

DNS is served to every workload and its queries come from anyone who can reach the port:
on the control plane's event loop, a flood of them delays xDS pushes and health probes.
On its own loop, what the DNS thread does competes with the rest only for the
interpreter lock, which Python hands over every few milliseconds.

What the thread shares with the rest is the plane callable of its responder, which it calls
for each query: it must only read a reference to an immutable plane (an attribute read is
atomic), as `lambda: mesh.plane` does. The zone is built from it on the DNS thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future

from kontinuum.dns.server import DnsServer

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def default_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (as the control plane runs), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _settled_future() -> Future[None]:
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()
    return future


class DnsThread:
    """Runs `server` in a thread named `name`; `start` and `stop` return futures, which an
    event loop awaits with `asyncio.wrap_future` and other code with `.result(timeout)`."""

    def __init__(
        self,
        server: DnsServer,
        loop_factory: LoopFactory = default_loop,
        name: str = "clusterset-dns",
    ) -> None:
        self.server = server
        self._loop_factory = loop_factory
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the three below, set from both threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._stopped = _settled_future()  # done once the thread's loop is closed

    def start(self, host: str, port: int) -> Future[int]:
        """Start serving on `host`, UDP and TCP on `port` (0: a free one); the future holds
        the port once the server listens, or what kept it from listening."""
        if self._thread is not None:
            raise RuntimeError("the DNS thread was started already")
        started: Future[int] = Future()
        started.set_running_or_notify_cancel()  # not cancellable: the thread sets it
        self._thread = threading.Thread(
            target=self._run, args=(host, port, started), name=self._name, daemon=True
        )
        self._thread.start()
        return started

    def stop(self) -> Future[None]:
        """Stop serving (also while still starting); the future is done when the thread's
        loop is closed, with no task or transport of the server left."""
        with self._lock:
            self._stop_requested = True
            loop, stopping = self._loop, self._stopping
            self._loop = self._stopping = None
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        elif self._thread is None and not self._stopped.done():
            self._stopped.set_result(None)
        return self._stopped

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (once `stop`'s future is done it is about to)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, host: str, port: int, started: Future[int]) -> None:
        try:
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(self._serve(host, port, started))
        except Exception as error:  # handed to whoever waits, never lost in the thread
            if not started.done():
                started.set_exception(error)
            self._stopped.set_exception(error)
        else:
            self._stopped.set_result(None)

    async def _serve(self, host: str, port: int, started: Future[int]) -> None:
        try:
            bound = await self.server.start(host, port)
        except Exception as error:
            started.set_exception(error)
            return
        stopping = asyncio.Event()
        with self._lock:
            if self._stop_requested:
                stopping.set()
            else:
                self._loop, self._stopping = asyncio.get_running_loop(), stopping
        started.set_result(bound)
        try:
            await stopping.wait()
        finally:
            await self.server.stop()
