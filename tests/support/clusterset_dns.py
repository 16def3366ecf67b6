"""kontinuum's own `clusterset.local` DNS server for tests, as the composition root runs it:
on 127.0.0.1, in a thread of its own with its own event loop (`DnsThread`), so that the
clients of a test can block. `with ClusterSetDns(lambda: plane) as served: ... served.port`."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from kontinuum.control.plane import ServicePlane
from kontinuum.dns import ClusterSetResponder, DnsServer, DnsThread, ZoneOptions
from kontinuum.dns.thread import LoopFactory, default_loop

LOOPBACK = "127.0.0.1"


class ClusterSetDns:
    """A started `DnsServer` (`limits`: its keyword arguments) until the `with` ends."""

    def __init__(
        self,
        plane: Callable[[], ServicePlane],
        options: ZoneOptions | None = None,
        loop_factory: LoopFactory = default_loop,
        **limits: Any,
    ) -> None:
        self.server = DnsServer(ClusterSetResponder(plane, options), **limits)
        self.thread = DnsThread(self.server, loop_factory)
        self.port = 0

    def __enter__(self) -> ClusterSetDns:
        self.port = self.thread.start(LOOPBACK, 0).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.thread.stop().result(10)
        self.thread.join(10)
