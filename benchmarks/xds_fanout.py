"""xDS fan-out benchmark: one kontinuum ADS server, N simulated Envoy-like ADS clients.

    python -m benchmarks.xds_fanout --streams 1000 --clusters 100 --updates 20 --mode sotw

Processes (all started with `spawn`, all bound to 127.0.0.1):

- this process, the orchestrator: starts the others, relays "go"/"stop", enforces the
  global timeout, prints one JSON line;
- the server process: a `SnapshotCache` with M EDS clusters and M ClusterLoadAssignments
  served by `XdsServer`; after the initial sync it changes one CLA U times and, each time,
  waits until every stream has ACKed the new version. Everything it reports (latencies,
  CPU, RSS) is measured inside it, so the clients' CPU is not counted;
- `--client-procs` client processes, each running its share of the N streams on grpc.aio
  channels of `--streams-per-channel` streams (one TCP connection per channel).

A client stream behaves like Envoy with `set_node_on_first_message_only`: its first
request carries a node (unique id, cluster "bench") and a wildcard CDS subscription; on the
CDS response it subscribes to EDS for every cluster named (before ACKing CDS, as Envoy
does) and it ACKs every response (SotW: version_info + response_nonce + the same
resource_names; Delta: response_nonce). Requests are pre-encoded bytes and responses are
decoded only as far as needed (version, nonce, type URL; cluster names on CDS), to leave
the CPU to the server.

"All ACKed" is observed on the server: `Stream.settle` is wrapped (in the server process
only, nothing in kontinuum is changed) so the ACK that completes an update is seen when
the server processes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from kontinuum.xds.push import Push
from kontinuum.xds.snapshot import Snapshot
from kontinuum.xds.wire import varint

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_METHOD = ADS + "StreamAggregatedResources"
DELTA_METHOD = ADS + "DeltaAggregatedResources"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
VIEW = "bench"


@dataclass(frozen=True)
class Config:
    mode: str
    streams: int
    clusters: int
    updates: int
    client_procs: int
    streams_per_channel: int
    timeout: float
    profile: str | None
    profiler: str
    perf: str | None
    py_spy: str | None
    server: str
    gc: str
    attach: str | None
    connect_batch: int
    loop: str
    pushes: bool = False


# -- process plumbing ----------------------------------------------------------------------


def _die_with_parent(hard_timeout: float) -> None:
    """In a child: be killed when the orchestrator dies, and never outlive the budget."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.alarm(max(1, int(hard_timeout)))  # SIGALRM's default action ends the process


def _listen(conn: Connection) -> asyncio.Queue[Any]:
    """Messages from the orchestrator, read by a daemon thread (None once the pipe closes).

    Not `run_in_executor`: a thread of the default executor blocked in `recv` would keep
    `asyncio.run` from returning after an error, and the error from being reported.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def pump() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # the loop is closed
                return
            if message is None:
                return

    threading.Thread(target=pump, name="orchestrator-pipe", daemon=True).start()
    return queue


def _cpu_seconds() -> float:
    """User + system CPU of this whole process (every thread, grpc's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- protobuf framing for the clients' requests ------------------------------------------


def _field(number: int, payload: bytes | str) -> bytes:
    """One length-delimited field."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _node(node_id: str) -> bytes:
    """envoy.config.core.v3.Node{id=1, cluster=2}."""
    return _field(1, node_id) + _field(2, VIEW)


# DiscoveryRequest: version_info=1 node=2 resource_names=3 type_url=4 response_nonce=5
# DeltaDiscoveryRequest: node=1 type_url=2 resource_names_subscribe=3 response_nonce=6

# -- the clients ---------------------------------------------------------------------------


class ClientStats:
    __slots__ = ("acks", "answered", "responses", "synced")

    def __init__(self) -> None:
        self.answered = 0  # streams that have received their first response
        self.responses = 0
        self.acks = 0
        self.synced = 0


async def _sotw_stream(channel: Any, node_id: str, stats: ClientStats) -> None:
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    parse = discovery_pb2.DiscoveryResponse.FromString
    call = channel.stream_stream(SOTW_METHOD)()  # no (de)serializers: raw bytes both ways
    await call.write(_field(2, _node(node_id)) + _field(4, CDS))
    eds_names: bytes | None = None  # the encoded resource_names of the EDS subscription
    eds_type = _field(4, EDS)
    cds_type = _field(4, CDS)
    cds_acked = eds_acked = answered = False
    while True:
        message = await call.read()
        if not isinstance(message, bytes):  # grpc.aio.EOF
            return
        stats.responses += 1
        if not answered:
            answered = True
            stats.answered += 1
        response = parse(message)
        ack_tail = _field(5, response.nonce)
        version = _field(1, response.version_info)
        if response.type_url == CDS:
            names = b"".join(
                _field(3, cluster_pb2.Cluster.FromString(r.value).name) for r in response.resources
            )
            if names != eds_names:
                # Envoy subscribes to the new clusters' endpoints before it ACKs CDS.
                eds_names = names
                await call.write(names + eds_type)
            await call.write(version + cds_type + ack_tail)
            cds_acked = True
        elif response.type_url == EDS:
            await call.write(version + (eds_names or b"") + eds_type + ack_tail)
            if not eds_acked and cds_acked:
                eds_acked = True
                stats.synced += 1
        else:
            raise RuntimeError(f"unexpected type {response.type_url}")
        stats.acks += 1


async def _delta_stream(channel: Any, node_id: str, stats: ClientStats) -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    parse = discovery_pb2.DeltaDiscoveryResponse.FromString
    call = channel.stream_stream(DELTA_METHOD)()
    cds_type = _field(2, CDS)
    eds_type = _field(2, EDS)
    await call.write(_field(1, _node(node_id)) + cds_type)  # legacy wildcard CDS
    subscribed: set[str] = set()
    eds_acked = answered = False
    while True:
        message = await call.read()
        if not isinstance(message, bytes):
            return
        stats.responses += 1
        if not answered:
            answered = True
            stats.answered += 1
        response = parse(message)
        ack = _field(6, response.nonce)
        if response.type_url == CDS:
            new = [r.name for r in response.resources if r.name not in subscribed]
            if new:
                subscribed.update(new)
                await call.write(eds_type + b"".join(_field(3, n) for n in new))
            await call.write(cds_type + ack)
        elif response.type_url == EDS:
            await call.write(eds_type + ack)
            if not eds_acked:
                eds_acked = True
                stats.synced += 1
        else:
            raise RuntimeError(f"unexpected type {response.type_url}")
        stats.acks += 1


def client_main(conn: Connection, cfg: Config, port: int, first: int, count: int) -> None:
    _die_with_parent(cfg.timeout + 60)
    try:
        asyncio.run(_client(conn, cfg, port, first, count))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", f"client {first}: {traceback.format_exc()}"))
        raise


async def _client(conn: Connection, cfg: Config, port: int, first: int, count: int) -> None:
    import grpc

    target = f"127.0.0.1:{port}"
    channels = []
    for i in range(0, count, cfg.streams_per_channel):
        options = [
            # One TCP connection per channel: channels with equal arguments would
            # otherwise share a subchannel from the global pool.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("bench.channel", f"{first + i}"),
        ]
        channels.append(grpc.aio.insecure_channel(target, options=options))
    stats = ClientStats()
    inbox = _listen(conn)
    conn.send(("ready", None))
    command = await inbox.get()
    if command != "go":
        return
    cpu0 = _cpu_seconds()
    run = _sotw_stream if cfg.mode == "sotw" else _delta_stream
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, count, cfg.connect_batch):
        # Open streams a batch at a time: a burst of more new calls than grpc's
        # `grpc.server.max_pending_requests` (1000 by default; XdsServer raises it) is refused.
        for i in range(start, min(start + cfg.connect_batch, count)):
            channel = channels[i // cfg.streams_per_channel]
            tasks.append(asyncio.create_task(run(channel, f"bench-node-{first + i}", stats)))
        while stats.answered < len(tasks):
            await asyncio.sleep(0.005)
            for task in tasks:
                if task.done():
                    task.result()
                    raise RuntimeError("a client stream ended before the benchmark did")
    stop = asyncio.ensure_future(inbox.get())
    pending: set[asyncio.Future[Any]] = {*tasks, stop}
    while not stop.done():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for finished in done:
            if finished is not stop:
                finished.result()  # a stream that failed fails the run
                raise RuntimeError("a client stream ended before the benchmark did")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)
    conn.send(
        (
            "done",
            {
                "cpu_s": _cpu_seconds() - cpu0,
                "responses": stats.responses,
                "acks": stats.acks,
                "synced": stats.synced,
            },
        )
    )


# -- the server ------------------------------------------------------------------------------


def _builders() -> tuple[Callable[[str], Any], Callable[..., Any]]:
    """Small copies of tests/support/resources.py builders."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.core.v3 import config_source_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from google.protobuf import duration_pb2

    def cluster(name: str) -> Any:
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        c.connect_timeout.CopyFrom(duration_pb2.Duration(seconds=1))
        source = c.eds_cluster_config.eds_config
        source.resource_api_version = config_source_pb2.V3
        source.ads.SetInParent()
        return c

    def load_assignment(name: str, *ports: int) -> Any:
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        locality = cla.endpoints.add()
        for port in ports:
            socket_address = locality.lb_endpoints.add().endpoint.address.socket_address
            socket_address.address = "127.0.0.1"
            socket_address.port_value = port
        return cla

    return cluster, load_assignment


class Resources:
    """The benchmark's resources: M EDS clusters and their CLAs; update u changes CLA 0."""

    BASE_PORT = 10_000

    def __init__(self, clusters: int) -> None:
        self.cluster, self.load_assignment = _builders()
        self.names = [f"service-{i:05d}" for i in range(clusters)]
        self.clusters = [self.cluster(n) for n in self.names]
        self.assignments = [
            self.load_assignment(n, self.BASE_PORT + i, self.BASE_PORT + 5000 + i)
            for i, n in enumerate(self.names)
        ]

    @property
    def changed_name(self) -> str:
        return self.names[0]

    def changed(self, update: int) -> Any:
        # Update u moves one endpoint of the first cluster to a port it never had before,
        # so the changed CLA has a version no earlier update produced.
        return self.load_assignment(self.names[0], self.BASE_PORT, 40_000 + update)

    def initial(self) -> list[Any]:
        return [*self.clusters, *self.assignments]

    def messages(self, update: int) -> list[Any]:
        return [*self.clusters, self.changed(update), *self.assignments[1:]]


class AckTracker:
    """Told of every ACK the server processes; tells when every stream has one state."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.synced: set[int] = set()
        self.synced_at = 0.0
        self.sync_event = asyncio.Event()
        self.updating = False
        self.acked: set[int] = set()
        self.acked_at = 0.0
        self.event = asyncio.Event()

    def next_update(self) -> None:
        self.updating = True
        self.acked = set()
        self.acked_at = 0.0
        self.event = asyncio.Event()

    def stream_synced(self, stream_id: int) -> None:
        self.synced.add(stream_id)
        if len(self.synced) == self.streams and not self.sync_event.is_set():
            self.synced_at = time.monotonic()
            self.sync_event.set()

    def stream_acked(self, stream_id: int) -> None:
        self.acked.add(stream_id)
        if len(self.acked) == self.streams and not self.event.is_set():
            self.acked_at = time.monotonic()
            self.event.set()


class PushCounts:
    """The least a push observer does (`--pushes`): count."""

    def __init__(self) -> None:
        self.settled = 0
        self.done = 0

    def stream_settled(
        self, push: Any, connection: Any, outcome: str, sent: float, now: float
    ) -> None:
        self.settled += 1

    def push_done(self, push: Any, now: float) -> None:
        self.done += 1


class KontinuumBackend:
    """kontinuum's SnapshotCache + XdsServer, with `Stream.settle` wrapped to see ACKs."""

    def __init__(self, cfg: Config, tracker: AckTracker) -> None:
        from kontinuum.xds import SnapshotCache, XdsServer
        from kontinuum.xds.stream import Stream

        self.cfg = cfg
        self.tracker = tracker
        self.resources = Resources(cfg.clusters)
        self.cache = SnapshotCache()
        self.server = XdsServer(self.cache)
        self.planned: list[list[Any]] = []
        self.target: tuple[str, str] | None = None
        self.push_counts = PushCounts()
        settle = Stream.settle
        clusters = cfg.clusters

        def tracked_settle(stream: Any, state: Any, nonce: str, error: Any) -> bool:
            settled: bool = settle(stream, state, nonce, error)
            if not settled or error is not None:
                return settled
            target = self.target
            if target is not None:
                if state.type_url == EDS and state.acked.get(target[0]) == target[1]:
                    tracker.stream_acked(stream.id)
            else:
                cds = stream.types.get(CDS)
                eds = stream.types.get(EDS)
                if (
                    cds is not None
                    and eds is not None
                    and len(cds.acked) == clusters
                    and len(eds.acked) == clusters
                ):
                    tracker.stream_synced(stream.id)
            return settled

        Stream.settle = tracked_settle  # type: ignore[method-assign,assignment]

    async def start(self) -> int:
        self.cache.set_resources(VIEW, self.resources.initial())
        return await self.server.start("127.0.0.1:0")

    def prepare(self) -> None:
        # Every update's messages are built before measuring: building them is the
        # translator's work. set_resources (serializing, hashing, diffing) is the
        # server's and is measured.
        self.planned = [self.resources.messages(u) for u in range(self.cfg.updates)]

    def update(self, u: int) -> None:
        name = self.resources.changed_name
        if self.cfg.pushes:  # followed to every stream's ACK, as `kontinuum serve` does
            push = Push(observer=self.push_counts)
            changes = self.cache.set_snapshot(VIEW, Snapshot.of(self.planned[u]), push)
            push.seal()
        else:
            changes = self.cache.set_resources(VIEW, self.planned[u])
        snapshot = self.cache.snapshot(VIEW)
        if snapshot is None or changes != {EDS: frozenset({name})}:
            raise RuntimeError(f"update {u} changed {changes}, expected only EDS {name}")
        self.target = (name, snapshot.resources(EDS)[name].version)
        # No ACK of the new version can have been processed yet: no stream has run since.

    def counts(self) -> dict[str, int]:
        stats = self.server.stats
        return {
            "server_acks": sum(stats.acks.values()),
            "server_responses": sum(stats.responses.values()),
            **({"pushes_done": self.push_counts.done} if self.cfg.pushes else {}),
        }

    async def stop(self) -> None:
        await self.server.stop(grace=None)


class FloorBackend:
    """The least an ADS server on grpc.aio can do: a reference point, not kontinuum.

    Same process shape as kontinuum's streams (a reader task and a writer coroutine per
    stream woken by an asyncio.Event, `DiscoveryRequest.FromString` as the request
    deserializer, pre-encoded response bytes with only the nonce appended), but no
    per-resource bookkeeping: a request with a nonce is an ACK, any other subscribes to
    its type, and every update sends the same prepared EDS body to every stream.
    """

    def __init__(self, cfg: Config, tracker: AckTracker) -> None:
        self.cfg = cfg
        self.tracker = tracker
        self.resources = Resources(cfg.clusters)
        self.delta = cfg.mode == "delta"
        self.streams: dict[int, FloorStream] = {}
        self.server: Any = None
        self.bodies: dict[str, bytes] = {}
        self.planned: list[bytes] = []
        self.acks = 0
        self.responses = 0
        self._ids = 0

    def _body(self, type_url: str, messages: list[Any], version: str) -> bytes:
        entries = []
        for m in messages:
            any_bytes = _field(1, type_url) + _field(2, m.SerializeToString(deterministic=True))
            if self.delta:
                name = m.name if type_url == CDS else m.cluster_name
                resource = _field(1, version) + _field(2, any_bytes) + _field(3, name)
                entries.append(_field(2, resource))
            else:
                entries.append(_field(2, any_bytes))
        head = b"" if self.delta else _field(1, version)
        return head + b"".join(entries) + _field(4, type_url)

    async def start(self) -> int:
        import grpc
        from envoy.service.discovery.v3 import discovery_pb2

        r = self.resources
        self.bodies = {
            CDS: self._body(CDS, r.clusters, "v0"),
            EDS: self._body(EDS, r.assignments, "v0"),
        }
        method = DELTA_METHOD if self.delta else SOTW_METHOD
        request_type = (
            discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        )
        handler = grpc.method_handlers_generic_handler(
            method.split("/")[1],
            {
                method.split("/")[2]: grpc.stream_stream_rpc_method_handler(
                    self._serve,
                    request_deserializer=request_type.FromString,
                    response_serializer=None,
                )
            },
        )
        self.server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1_000_000)])
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return int(port)

    def prepare(self) -> None:
        r = self.resources
        if self.delta:
            self.planned = [
                self._body(EDS, [r.changed(u)], f"u{u}") for u in range(self.cfg.updates)
            ]
        else:
            self.planned = [
                self._body(EDS, [r.changed(u), *r.assignments[1:]], f"u{u}")
                for u in range(self.cfg.updates)
            ]

    def update(self, u: int) -> None:
        self.bodies[EDS] = self.planned[u]
        for stream in self.streams.values():
            stream.due.append(EDS)
            stream.wake.set()

    async def _serve(self, requests: Any, context: Any) -> None:
        self._ids += 1
        stream = FloorStream(self._ids, self, requests)
        self.streams[stream.id] = stream
        try:
            await stream.run(context.write)
        finally:
            del self.streams[stream.id]

    def counts(self) -> dict[str, int]:
        return {"server_acks": self.acks, "server_responses": self.responses}

    async def stop(self) -> None:
        await self.server.stop(grace=None)


class FloorStream:
    def __init__(self, stream_id: int, backend: FloorBackend, requests: Any) -> None:
        self.id = stream_id
        self.backend = backend
        self.requests = requests
        self.due: list[str] = []
        self.wake = asyncio.Event()
        self.nonce = 0
        self.in_flight: dict[str, str] = {}  # type URL -> nonce
        self.acked_types: set[str] = set()

    async def run(self, write: Callable[[bytes], Any]) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if reader.done():
                    reader.result()
                    return
                while self.due:
                    type_url = self.due.pop(0)
                    self.nonce += 1
                    nonce = str(self.nonce)
                    self.in_flight[type_url] = nonce
                    self.backend.responses += 1
                    await write(self.backend.bodies[type_url] + _field(5, nonce))
        finally:
            reader.cancel()

    async def _read(self) -> None:
        backend = self.backend
        tracker = backend.tracker
        try:
            async for request in self.requests:
                type_url = request.type_url
                nonce = request.response_nonce
                if nonce:
                    if self.in_flight.get(type_url) == nonce:
                        del self.in_flight[type_url]
                        backend.acks += 1
                        if tracker.updating:
                            if type_url == EDS:
                                tracker.stream_acked(self.id)
                        else:
                            self.acked_types.add(type_url)
                            if len(self.acked_types) == 2:
                                tracker.stream_synced(self.id)
                    if not backend.delta:
                        continue
                if backend.delta and not (
                    request.resource_names_subscribe or (type_url == CDS and not nonce)
                ):
                    continue
                if type_url not in self.acked_types and type_url not in self.in_flight:
                    self.due.append(type_url)
                    self.wake.set()
        finally:
            self.wake.set()


def server_main(conn: Connection, cfg: Config) -> None:
    _die_with_parent(cfg.timeout + 60)
    try:
        if cfg.loop == "kontinuum":
            from kontinuum.app import run_event_loop

            run_event_loop(_server(conn, cfg))
        elif cfg.loop == "uvloop":
            import uvloop

            uvloop.run(_server(conn, cfg))
        else:
            asyncio.run(_server(conn, cfg))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", f"server: {traceback.format_exc()}"))
        raise


def _start_sampler(cfg: Config) -> Any:
    """perf, py-spy or an --attach command attached to this process, or None."""
    import shlex
    import subprocess

    if cfg.attach:
        command = shlex.split(cfg.attach.replace("{pid}", str(os.getpid())))
    elif cfg.perf:
        command = ["perf", "record", "-q", "-F", "499", "-g", "-p", str(os.getpid())]
        command += ["-o", cfg.perf]
    elif cfg.py_spy:
        command = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record"]
        command += ["--native", "--threads", "--rate", "250", "--format", "raw"]
        command += ["--pid", str(os.getpid()), "--output", cfg.py_spy]
    else:
        return None
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _start_profiler(cfg: Config) -> Any:
    if not cfg.profile:
        return None
    if cfg.profiler == "yappi":
        import yappi  # type: ignore[import-untyped,unused-ignore]

        yappi.set_clock_type("cpu")
        yappi.start()
        return yappi
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _stop_profiler(cfg: Config, profiler: Any) -> None:
    if profiler is None:
        return
    if cfg.profiler == "yappi":
        profiler.stop()
        profiler.get_func_stats().save(cfg.profile, type="pstat")
    else:
        profiler.disable()
        profiler.dump_stats(cfg.profile)


async def _server(conn: Connection, cfg: Config) -> None:
    # A little inside the orchestrator's limit, so a stuck update is reported from here.
    deadline = time.monotonic() + max(cfg.timeout * 0.9, cfg.timeout - 10)
    tracker = AckTracker(cfg.streams)
    backend: KontinuumBackend | FloorBackend = (
        FloorBackend(cfg, tracker) if cfg.server == "floor" else KontinuumBackend(cfg, tracker)
    )
    inbox = _listen(conn)
    port = await backend.start()
    conn.send(("port", port))

    command, sync_started = await inbox.get()
    assert command == "sync"
    cpu_sync0 = _cpu_seconds()
    try:
        await asyncio.wait_for(tracker.sync_event.wait(), deadline - time.monotonic())
    except TimeoutError:
        raise TimeoutError(
            f"initial sync: {len(tracker.synced)} of {cfg.streams} streams synced in time"
        ) from None
    initial_sync_s = tracker.synced_at - sync_started
    sync_cpu_s = _cpu_seconds() - cpu_sync0
    await asyncio.sleep(0.2)  # let the last ACKs' bookkeeping finish

    backend.prepare()
    if cfg.gc == "kontinuum":
        from kontinuum.app import settle_garbage_collector

        settle_garbage_collector()
    elif cfg.gc != "python":
        import gc

        gc.collect()
        if cfg.gc == "freeze":
            gc.freeze()
        else:
            gc.disable()
    sampler = _start_sampler(cfg)
    if sampler is not None:
        await asyncio.sleep(1.0)  # samplers attach asynchronously
    profiler = _start_profiler(cfg)
    latencies_ms: list[float] = []
    update_call_ms: list[float] = []
    cpu0 = _cpu_seconds()
    wall0 = time.monotonic()
    for u in range(cfg.updates):
        tracker.next_update()
        started = time.monotonic()
        backend.update(u)
        update_call_ms.append((time.monotonic() - started) * 1000.0)
        try:
            await asyncio.wait_for(tracker.event.wait(), deadline - time.monotonic())
        except TimeoutError:
            raise TimeoutError(
                f"update {u}: {len(tracker.acked)} of {cfg.streams} streams ACKed in time"
            ) from None
        latencies_ms.append((tracker.acked_at - started) * 1000.0)
    await asyncio.sleep(0.05)  # the tail of the last update (writers waking to no work)
    update_cpu_s = _cpu_seconds() - cpu0
    update_wall_s = time.monotonic() - wall0
    _stop_profiler(cfg, profiler)
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        await asyncio.get_running_loop().run_in_executor(None, sampler.wait, 60)
    conn.send(
        (
            "result",
            {
                "all_acked_p50_ms": round(_percentile(latencies_ms, 50), 2),
                "all_acked_p99_ms": round(_percentile(latencies_ms, 99), 2),
                "server_cpu_s_per_update": round(update_cpu_s / cfg.updates, 5),
                "stream_updates_per_core_s": round(
                    cfg.streams * cfg.updates / update_cpu_s if update_cpu_s else 0.0, 1
                ),
                "initial_sync_s": round(initial_sync_s, 3),
                "rss_mb": round(_max_rss_mb(), 1),
                # extras
                "all_acked_max_ms": round(max(latencies_ms), 2),
                "set_resources_p50_ms": round(_percentile(update_call_ms, 50), 2),
                "server_cpu_share_update_phase": round(update_cpu_s / update_wall_s, 3),
                "server_cpu_s_initial_sync": round(sync_cpu_s, 3),
                **backend.counts(),
            },
        )
    )
    await inbox.get()
    await backend.stop()


# -- the orchestrator ------------------------------------------------------------------------


class BenchmarkError(RuntimeError):
    pass


def _expect(conn: Connection, deadline: float, what: str) -> Any:
    """Wait for one message on `conn`; errors reported by a child abort the run."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not conn.poll(remaining):
        raise BenchmarkError(f"timed out waiting for {what}")
    try:
        kind, payload = conn.recv()
    except EOFError:
        raise BenchmarkError(f"a child process died while waiting for {what}") from None
    if kind == "error":
        raise BenchmarkError(payload)
    if kind != what:
        raise BenchmarkError(f"expected {what!r}, got {kind!r}: {payload!r}")
    return payload


def _watch(conns: list[Connection], deadline: float, main: Connection, what: str) -> Any:
    """Wait for `what` on `main` while watching every other child for errors."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchmarkError(f"timed out waiting for {what}")
        for ready in wait([main, *conns], timeout=remaining):
            if ready is main:
                return _expect(main, deadline, what)
            assert isinstance(ready, Connection)
            try:
                kind, payload = ready.recv()
            except EOFError:
                raise BenchmarkError(f"a client process died while waiting for {what}") from None
            raise BenchmarkError(payload if kind == "error" else f"unexpected {kind!r}")


def run(cfg: Config) -> dict[str, Any]:
    # grpc logs every GOAWAY of a channel closed at the end; keep stderr for real errors.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    ctx = multiprocessing.get_context("spawn")
    deadline = time.monotonic() + cfg.timeout
    children: list[Any] = []
    try:
        server_conn, child_end = ctx.Pipe()
        server = ctx.Process(target=server_main, args=(child_end, cfg), name="xds-server")
        server.start()
        children.append(server)
        port = _expect(server_conn, deadline, "port")

        procs = max(1, min(cfg.client_procs, cfg.streams))
        share, extra = divmod(cfg.streams, procs)
        client_conns: list[Connection] = []
        first = 0
        for p in range(procs):
            count = share + (1 if p < extra else 0)
            parent_end, child_end = ctx.Pipe()
            client = ctx.Process(
                target=client_main,
                args=(child_end, cfg, port, first, count),
                name=f"xds-clients-{p}",
            )
            client.start()
            children.append(client)
            client_conns.append(parent_end)
            first += count
        for conn in client_conns:
            _expect(conn, deadline, "ready")

        server_conn.send(("sync", time.monotonic()))
        for conn in client_conns:
            conn.send("go")
        result = _watch(client_conns, deadline, server_conn, "result")

        for conn in client_conns:
            conn.send("stop")
        client_cpu = 0.0
        for conn in client_conns:
            client_cpu += _expect(conn, deadline, "done")["cpu_s"]
        server_conn.send("stop")
        server.join(max(1.0, deadline - time.monotonic()))
        return {
            "mode": cfg.mode,
            "server": cfg.server,
            "streams": cfg.streams,
            "clusters": cfg.clusters,
            "updates": cfg.updates,
            **result,
            "client_procs": procs,
            "streams_per_channel": cfg.streams_per_channel,
            "connect_batch": cfg.connect_batch,
            "client_cpu_s_total": round(client_cpu, 3),
            "profiled": bool(cfg.profile or cfg.perf or cfg.py_spy or cfg.attach),
            "gc": cfg.gc,
            "loop": cfg.loop,
        }
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join(5)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.xds_fanout",
        description="Fan-out of one EDS change to N ADS streams of a kontinuum XdsServer.",
    )
    parser.add_argument("--streams", type=int, default=200, help="ADS streams (simulated Envoys)")
    parser.add_argument("--clusters", type=int, default=100, help="clusters (and CLAs)")
    parser.add_argument("--updates", type=int, default=20, help="one-endpoint EDS changes")
    parser.add_argument("--mode", choices=("sotw", "delta"), default="sotw")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument("--streams-per-channel", type=int, default=100)
    parser.add_argument(
        "--connect-batch",
        type=int,
        default=500,
        help="each client process opens its streams this many at a time (0: all at once)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="global limit, seconds")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="profile the server's update phase into PATH (pstats format)",
    )
    parser.add_argument(
        "--profiler",
        choices=("cprofile", "yappi"),
        default="cprofile",
        help="yappi (CPU clock) must be pip-installed into the venv",
    )
    parser.add_argument(
        "--perf",
        metavar="PATH",
        help="record the server's update phase with `perf record -g` into PATH",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="sample the server's update phase with py-spy (pip install py-spy) into PATH "
        "(collapsed stacks)",
    )
    parser.add_argument(
        "--server",
        choices=("kontinuum", "floor"),
        default="kontinuum",
        help="floor: a minimal grpc.aio ADS server, the reference point for what grpc.aio "
        "and asyncio cost by themselves",
    )
    parser.add_argument(
        "--loop",
        choices=("kontinuum", "asyncio", "uvloop"),
        default="kontinuum",
        help="the server's event loop: the one `kontinuum serve-resources` runs on "
        "(default), or plain asyncio / uvloop",
    )
    parser.add_argument(
        "--gc",
        choices=("kontinuum", "python", "freeze", "off"),
        default="kontinuum",
        help="the server's garbage collector after the initial sync: as `kontinuum "
        "serve-resources` sets it (default), Python's defaults, or experiments: "
        "gc.freeze() only, gc.disable()",
    )
    parser.add_argument(
        "--pushes",
        action="store_true",
        help="follow every update as a push to each stream's ACK (as `kontinuum serve` "
        "does), to measure what the following costs",
    )
    parser.add_argument(
        "--attach",
        metavar="CMD",
        help="run CMD ({pid} = the server's pid) during the update phase, stop it with SIGINT; "
        "e.g. 'perf stat -e syscalls:sys_enter_sendmsg -p {pid} -o stat.txt'",
    )
    args = parser.parse_args(argv)
    if args.streams < 1 or args.clusters < 1 or args.updates < 1:
        parser.error("--streams, --clusters and --updates must be positive")
    return Config(
        mode=args.mode,
        streams=args.streams,
        clusters=args.clusters,
        updates=args.updates,
        client_procs=args.client_procs,
        streams_per_channel=max(1, args.streams_per_channel),
        timeout=args.timeout,
        profile=args.profile,
        profiler=args.profiler,
        perf=args.perf,
        py_spy=args.py_spy,
        server=args.server,
        gc=args.gc,
        attach=args.attach,
        connect_batch=args.connect_batch if args.connect_batch > 0 else args.streams,
        loop=args.loop,
        pushes=args.pushes,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        result = run(cfg)
    except BenchmarkError as error:
        print(f"xds_fanout: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
