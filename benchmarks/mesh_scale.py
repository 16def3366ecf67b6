"""Fleet-scale benchmark of the whole pipeline, measured through the public contract.

    python -m benchmarks.mesh_scale --services 200 --namespaces 20 --clusters 3
    python -m benchmarks.mesh_scale --services 200 --namespaces 20 --clusters 3 --in-process

Server mode (the default), all bound to 127.0.0.1:

1. a generated fleet (`benchmarks.fleet_gen`) is written to a temporary directory and
   `kontinuum serve --config DIR --plaintext-xds` is started on it as a subprocess; `load`
   is the time from starting the process to `/readyz` answering 200;
2. `--client-procs` client processes (multiprocessing `spawn`) open one Delta ADS stream per
   (service, cluster): a sidecar of that service in that cluster, whose node is the one
   `kontinuum bootstrap` prints (ids, cluster, namespace and service substituted). Each
   stream behaves like Envoy: wildcard CDS and LDS, EDS for the clusters named, RDS for the
   routes the listeners name, SDS for the secrets either names (subscribed before the
   ACK of the response that named them), and an ACK for every response. `initial sync`
   runs from telling the clients to connect until every stream holds a response for every
   name it subscribed to;
3. endpoint changes: one service file of cluster c0 is replaced atomically with one endpoint
   address changed; the affected streams are those holding a ClusterLoadAssignment with the
   old address, and the sample is the time from the write until the last of them has
   received an EDS response with the new one. Server CPU (utime+stime from /proc) is read
   before the write and after a short idle settle;
4. route changes: an HTTPRoute (GAMMA, parentRef a Service) is added, then modified; the
   affected streams are those holding a RouteConfiguration with the service's host, and
   the sample ends when the last of them has received RDS with the route's header name.

`--in-process` starts no server and no clients: it reads the fleet with a
`kontinuum.discovery.static.FleetReader` (as the server does), applies it to a
`kontinuum.mesh.Mesh`, resolves the same views with `Mesh.resolve_view` and times the
reader's re-read and `Mesh.apply` for each change.

One JSON line goes to stdout; progress goes to stderr. Every wait is bounded (`--timeout`,
`--change-timeout`); the server and the clients are stopped at the end and on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import gc
import http.client
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from benchmarks.fleet_gen import (
    FleetShape,
    http_route,
    route_header,
    route_path,
    service_file,
    service_path,
    write_atomically,
    write_fleet,
)
from kontinuum.xds.wire import varint

# The method of `ads_pb2_grpc.AggregatedDiscoveryServiceStub.DeltaAggregatedResources`,
# called without (de)serializers: requests are pre-encoded bytes, responses raw bytes.
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
_PREFIX = "type.googleapis.com/"
CDS = _PREFIX + "envoy.config.cluster.v3.Cluster"
EDS = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = _PREFIX + "envoy.config.listener.v3.Listener"
RDS = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SDS = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
SHORT = {CDS: "CDS", EDS: "EDS", LDS: "LDS", RDS: "RDS", SDS: "SDS"}
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

# Placeholders of the template bootstrap, replaced per simulated sidecar.
_T_NODE, _T_CLUSTER, _T_NAMESPACE, _T_SERVICE = "kbnodeid", "kbcluster", "kbnamespace", "kbservice"
INBOUND_PORT = 8080  # the EndpointSlices' port: the workload's port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchmarkError(RuntimeError):
    pass


class WaitTimeoutError(BenchmarkError):
    def __init__(self, message: str, got: dict[int, Any]) -> None:
        super().__init__(message)
        self.got = got


def progress(message: str) -> None:
    print(f"mesh_scale: {message}", file=sys.stderr, flush=True)


# -- small helpers ------------------------------------------------------------------------


def pb_field(number: int, payload: bytes | str) -> bytes:
    """One length-delimited protobuf field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def pb_string(text: str) -> bytes:
    """A string as protobuf frames it (length, bytes), whatever its field: searching for
    this in a message finds the whole string, not a longer one that starts or ends with it."""
    data = text.encode()
    return varint(len(data)) + data


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    return None


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _die_with_parent() -> None:
    """In a child: be killed when the orchestrator dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)


# -- the simulated sidecars' nodes ------------------------------------------------------------


def template_node() -> dict[str, Any]:
    """The node `kontinuum bootstrap` writes for a sidecar, with placeholders."""
    command = [
        *kontinuum_command(),
        "bootstrap",
        "--node-id",
        _T_NODE,
        "--cluster",
        _T_CLUSTER,
        "--namespace",
        _T_NAMESPACE,
        "--service",
        _T_SERVICE,
        "--inbound-port",
        str(INBOUND_PORT),
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        node: dict[str, Any] = json.loads(out.stdout)["node"]
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
        raise BenchmarkError(f"`kontinuum bootstrap` failed: {error!r}") from None
    return node


def sidecar_nodes(shape: FleetShape, template: dict[str, Any]) -> list[dict[str, Any]]:
    """One node per (service, cluster), in the order service-major."""
    text = json.dumps(template)
    nodes = []
    for s in range(shape.services):
        for c in range(shape.clusters):
            cluster = shape.cluster(c)
            filled = (
                text.replace(_T_NODE, f"sidecar-{shape.service(s)}-{cluster}")
                .replace(_T_CLUSTER, cluster)
                .replace(_T_NAMESPACE, shape.namespace(s))
                .replace(_T_SERVICE, shape.service(s))
            )
            nodes.append(json.loads(filled))
    return nodes


def node_message(node: dict[str, Any]) -> Any:
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import json_format

    return json_format.ParseDict(node, base_pb2.Node())


# -- the client processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientPlan:
    index: int
    port: int
    nodes: list[bytes]  # serialized envoy.config.core.v3.Node, one per stream
    streams_per_channel: int
    connect_batch: int
    hard_timeout: float


class StreamFailedError(Exception):
    pass


class StreamState:
    """What one simulated Envoy holds and waits for."""

    __slots__ = (
        "answered",
        "cds",
        "eds_of",
        "held",
        "index",
        "lds",
        "node",
        "pending",
        "rds_of",
        "subscribed",
        "synced",
    )

    def __init__(self, index: int, node: bytes) -> None:
        self.index = index
        self.node = node
        self.answered = False
        self.cds = False
        self.lds = False
        self.synced = False
        self.eds_of: dict[str, str] = {}  # cluster -> the EDS name it takes endpoints from
        self.rds_of: dict[str, tuple[str, ...]] = {}  # listener -> the RDS names it uses
        self.subscribed: dict[str, set[str]] = {EDS: set(), RDS: set(), SDS: set()}
        self.pending: set[tuple[str, str]] = set()  # (type, name) subscribed, not received
        # The bytes of the endpoints and routes held, by name: what a change is checked in.
        self.held: dict[str, dict[str, bytes]] = {EDS: {}, RDS: {}}


class Watch:
    """One change being followed: which streams hold `holds`, which have seen `needle`."""

    def __init__(self, token: int, type_url: str, needle: bytes, affected: set[int]) -> None:
        self.token = token
        self.type_url = type_url
        self.needle = needle
        self.remaining = set(affected)
        self.affected = len(affected)
        self.seen_at: list[float] = []
        self.responses: dict[str, int] = {}
        self.touched: set[int] = set()
        self.reported = False


def _tls_secrets(any_config: Any, tls_pb2: Any) -> set[str]:
    """The SDS secret names a transport socket's TLS context uses."""
    type_name = any_config.type_url.rsplit("/", 1)[-1]
    if type_name == _UPSTREAM_TLS:
        context = tls_pb2.UpstreamTlsContext.FromString(any_config.value).common_tls_context
    elif type_name == _DOWNSTREAM_TLS:
        context = tls_pb2.DownstreamTlsContext.FromString(any_config.value).common_tls_context
    else:
        return set()
    names = {c.name for c in context.tls_certificate_sds_secret_configs}
    if context.HasField("validation_context_sds_secret_config"):
        names.add(context.validation_context_sds_secret_config.name)
    if context.HasField("combined_validation_context"):
        combined = context.combined_validation_context
        if combined.HasField("validation_context_sds_secret_config"):
            names.add(combined.validation_context_sds_secret_config.name)
    return names


class Client:
    """One client process: its share of the streams on grpc.aio channels."""

    def __init__(self, conn: Connection, plan: ClientPlan) -> None:
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.extensions.filters.network.http_connection_manager.v3 import (
            http_connection_manager_pb2 as hcm_pb2,
        )
        from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
        from envoy.service.discovery.v3 import discovery_pb2

        self.cluster_pb2, self.listener_pb2, self.hcm_pb2 = cluster_pb2, listener_pb2, hcm_pb2
        self.tls_pb2 = tls_pb2
        self.parse = discovery_pb2.DeltaDiscoveryResponse.FromString
        self.conn = conn
        self.plan = plan
        self.streams = [StreamState(i, node) for i, node in enumerate(plan.nodes)]
        self.answered = 0
        self.synced = 0
        self.synced_at = 0.0
        self.responses: dict[str, int] = {}
        self.watch: Watch | None = None
        self.failed = False
        self.tasks: list[asyncio.Task[None]] = []
        self.batch_target = 0  # streams opened so far: the batch ends once all answered
        self.batch_answered = asyncio.Event()
        self.type_field = {t: pb_field(2, t) for t in SHORT}
        self.send_lock = threading.Lock()

    def send(self, kind: str, payload: Any) -> None:
        with self.send_lock:
            self.conn.send((kind, payload))

    def fail(self, message: str) -> None:
        if not self.failed:
            self.failed = True
            self.batch_answered.set()
            with contextlib.suppress(Exception):
                self.send("error", f"client {self.plan.index}: {message}")

    # -- protocol -----------------------------------------------------------------------------

    async def stream(self, channel: Any, st: StreamState) -> None:
        import grpc

        call = channel.stream_stream(DELTA_METHOD)()
        write = call.write
        # Envoy's first requests: legacy wildcard CDS (with the node) and LDS.
        await write(pb_field(1, st.node) + self.type_field[CDS])
        await write(self.type_field[LDS])
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as error:
                raise StreamFailedError(
                    f"stream {st.index}: {error.code().name}: {error.details()}"
                ) from None
            if not isinstance(message, bytes):
                code = await call.code()
                details = await call.details()
                raise StreamFailedError(
                    f"stream {st.index}: the server ended it ({code.name}: {details})"
                )
            for request in self.on_response(st, message, time.monotonic()):
                await write(request)

    def on_response(self, st: StreamState, message: bytes, now: float) -> list[bytes]:
        response = self.parse(message)
        type_url = response.type_url
        if not st.answered:
            st.answered = True
            self.answered += 1
            if self.answered >= self.batch_target:
                self.batch_answered.set()
        self.responses[type_url] = self.responses.get(type_url, 0) + 1
        watch = self.watch
        if watch is not None:
            watch.responses[type_url] = watch.responses.get(type_url, 0) + 1
            watch.touched.add(st.index)
            if (
                type_url == watch.type_url
                and st.index in watch.remaining
                and watch.needle in message
            ):
                watch.remaining.discard(st.index)
                watch.seen_at.append(now)
                if not watch.remaining and not watch.reported:
                    watch.reported = True
                    self.send("seen", (watch.token, watch.seen_at))
        requests: list[bytes] = []
        if type_url == CDS:
            requests += self.on_clusters(st, response)
            st.cds = True
        elif type_url == LDS:
            requests += self.on_listeners(st, response)
            st.lds = True
        else:
            held = st.held.get(type_url)
            for r in response.resources:
                st.pending.discard((type_url, r.name))
                if held is not None:
                    held[r.name] = r.resource.value
            for name in response.removed_resources:
                st.pending.discard((type_url, name))
                if held is not None:
                    held.pop(name, None)
        requests.append(self.type_field[type_url] + pb_field(6, response.nonce))
        if not st.synced and st.cds and st.lds and not st.pending:
            st.synced = True
            self.synced += 1
            self.synced_at = now
            if self.synced == len(self.streams):
                self.send("synced", {"at": now, "responses": dict(self.responses)})
        return requests

    def on_clusters(self, st: StreamState, response: Any) -> list[bytes]:
        secrets: set[str] = set()
        eds_type = self.cluster_pb2.Cluster.EDS
        for r in response.resources:
            cluster = self.cluster_pb2.Cluster.FromString(r.resource.value)
            if cluster.type == eds_type:
                st.eds_of[r.name] = cluster.eds_cluster_config.service_name or cluster.name
            else:
                st.eds_of.pop(r.name, None)
            sockets = [m.transport_socket for m in cluster.transport_socket_matches]
            if cluster.HasField("transport_socket"):
                sockets.append(cluster.transport_socket)
            for socket_ in sockets:
                secrets |= _tls_secrets(socket_.typed_config, self.tls_pb2)
        for name in response.removed_resources:
            st.eds_of.pop(name, None)
        requests = self.subscription(st, EDS, set(st.eds_of.values()))
        return requests + self.subscription(st, SDS, st.subscribed[SDS] | secrets)

    def on_listeners(self, st: StreamState, response: Any) -> list[bytes]:
        secrets: set[str] = set()
        for r in response.resources:
            listener = self.listener_pb2.Listener.FromString(r.resource.value)
            chains = list(listener.filter_chains)
            if listener.HasField("default_filter_chain"):
                chains.append(listener.default_filter_chain)
            routes: list[str] = []
            for chain in chains:
                if chain.HasField("transport_socket"):
                    secrets |= _tls_secrets(chain.transport_socket.typed_config, self.tls_pb2)
                for f in chain.filters:
                    if f.typed_config.type_url.rsplit("/", 1)[-1] != _HCM:
                        continue
                    hcm = self.hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                    if hcm.HasField("rds"):
                        routes.append(hcm.rds.route_config_name)
            # Envoy takes no api_listener from LDS (only one, from its bootstrap), so the
            # routes those name are not fetched here either.
            st.rds_of[r.name] = tuple(routes)
        for name in response.removed_resources:
            st.rds_of.pop(name, None)
        wanted = {n for names in st.rds_of.values() for n in names}
        requests = self.subscription(st, RDS, wanted)
        return requests + self.subscription(st, SDS, st.subscribed[SDS] | secrets)

    def subscription(self, st: StreamState, type_url: str, wanted: set[str]) -> list[bytes]:
        """Subscribe to what is newly wanted, unsubscribe from what no longer is."""
        subscribed = st.subscribed[type_url]
        add = sorted(wanted - subscribed)
        drop = sorted(subscribed - wanted)
        if not add and not drop:
            return []
        held = st.held.get(type_url)
        for name in add:
            subscribed.add(name)
            st.pending.add((type_url, name))
        for name in drop:
            subscribed.discard(name)
            st.pending.discard((type_url, name))
            if held is not None:
                held.pop(name, None)
        return [
            self.type_field[type_url]
            + b"".join(pb_field(3, n) for n in add)
            + b"".join(pb_field(4, n) for n in drop)
        ]

    # -- commands -----------------------------------------------------------------------------

    async def connect(self, channels: list[Any]) -> None:
        plan = self.plan
        for start in range(0, len(self.streams), plan.connect_batch):
            # A batch at a time, each waiting for its first responses: a burst of new calls
            # beyond grpc's pending-call limit would be refused.
            for st in self.streams[start : start + plan.connect_batch]:
                channel = channels[st.index // plan.streams_per_channel]
                task = asyncio.create_task(self.stream(channel, st))
                task.add_done_callback(self.stream_done)
                self.tasks.append(task)
            self.batch_target = len(self.tasks)
            self.batch_answered.clear()
            if self.answered < self.batch_target and not self.failed:
                await self.batch_answered.wait()

    def stream_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, StreamFailedError):
            self.fail(str(error))
        elif error is not None:
            self.fail("".join(traceback.format_exception(error)))
        else:
            self.fail("a stream ended")

    async def report_progress(self) -> None:
        while self.synced < len(self.streams):
            await asyncio.sleep(2.0)
            self.send("progress", (self.answered, self.synced, len(self.streams)))

    def arm(self, token: int, type_url: str, holds: bytes, needle: bytes) -> None:
        affected = {
            st.index
            for st in self.streams
            if any(holds in value for value in st.held[type_url].values())
        }
        self.watch = Watch(token, type_url, needle, affected)
        self.send("armed", (token, len(affected)))

    def disarm(self, token: int) -> None:
        watch = self.watch
        self.watch = None
        if watch is None or watch.token != token:
            self.send("counts", (token, {}))
            return
        self.send(
            "counts",
            (
                token,
                {
                    "responses": {SHORT.get(t, t): n for t, n in watch.responses.items()},
                    "streams_touched": len(watch.touched),
                    "affected": watch.affected,
                    "missing": len(watch.remaining),
                    "seen_at": watch.seen_at,
                },
            ),
        )

    async def run(self) -> None:
        import grpc

        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def pump() -> None:
            # A daemon thread: a pipe read in the default executor would keep the loop
            # from closing after an error.
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    message = None
                try:
                    loop.call_soon_threadsafe(inbox.put_nowait, message)
                except RuntimeError:
                    return
                if message is None:
                    return

        threading.Thread(target=pump, name="orchestrator-pipe", daemon=True).start()
        target = f"127.0.0.1:{self.plan.port}"
        channels = [
            grpc.aio.insecure_channel(
                target,
                options=[
                    # One TCP connection per channel (channels with equal arguments would
                    # share a subchannel otherwise).
                    ("grpc.use_local_subchannel_pool", 1),
                    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
                    ("bench.channel", f"{self.plan.index}-{i}"),
                ],
            )
            for i in range(0, len(self.streams), self.plan.streams_per_channel)
        ]
        self.send("ready", None)
        cpu0 = own_cpu_s()
        background: list[asyncio.Task[None]] = []
        try:
            while True:
                message = await inbox.get()
                if message is None or message[0] == "stop":
                    break
                kind, payload = message
                if kind == "go":
                    background.append(asyncio.create_task(self.connect(channels)))
                    background.append(asyncio.create_task(self.report_progress()))
                elif kind == "arm":
                    self.arm(*payload)
                elif kind == "disarm":
                    self.disarm(payload)
        finally:
            for task in [*self.tasks, *background]:
                task.cancel()
            await asyncio.gather(*self.tasks, *background, return_exceptions=True)
            for channel in channels:
                await channel.close(None)
        self.send("done", {"cpu_s": own_cpu_s() - cpu0, "responses": self.responses})


def client_main(conn: Connection, plan: ClientPlan) -> None:
    _die_with_parent()
    signal.alarm(max(1, int(plan.hard_timeout)))  # SIGALRM's default action ends the process
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # GOAWAYs of closing channels
    try:
        client = Client(conn, plan)
        try:
            import uvloop
        except ImportError:
            asyncio.run(client.run())
        else:
            uvloop.run(client.run())
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", f"client {plan.index}: {traceback.format_exc()}"))
        raise


class ClientPool:
    """The client processes, and the orchestrator's side of their pipes."""

    def __init__(
        self,
        cfg: Config,
        port: int,
        nodes: list[bytes],
        alive: Callable[[], None],
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.alive = alive
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self.progress: dict[int, tuple[int, int, int]] = {}
        self.done: dict[int, Any] = {}
        self.total = len(nodes)
        count = max(1, min(cfg.client_procs, len(nodes)))
        share, extra = divmod(len(nodes), count)
        first = 0
        for p in range(count):
            size = share + (1 if p < extra else 0)
            plan = ClientPlan(
                index=p,
                port=port,
                nodes=nodes[first : first + size],
                streams_per_channel=cfg.streams_per_channel,
                connect_batch=cfg.connect_batch,
                hard_timeout=cfg.timeout + 60,
            )
            first += size
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child_end, plan), name=f"mesh-client-{p}")
            proc.start()
            child_end.close()
            self.conns.append(parent_end)
            self.procs.append(proc)

    def send_all(self, message: Any) -> None:
        for conn in self.conns:
            conn.send(message)

    def expect(
        self,
        kind: str,
        deadline: float,
        token: int | None = None,
        which: Iterable[int] | None = None,
    ) -> dict[int, Any]:
        """The `kind` message of each client in `which` (default all): payloads by client."""
        want = set(range(len(self.conns)) if which is None else which)
        got: dict[int, Any] = {}
        while want - got.keys():
            self.alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(f"timed out waiting for {kind!r} from the clients", got)
            for conn in wait(self.conns, timeout=min(remaining, 0.5)):
                assert isinstance(conn, Connection)
                index = self.conns.index(conn)
                try:
                    got_kind, payload = conn.recv()
                except EOFError:
                    raise BenchmarkError(f"client process {index} died") from None
                if got_kind == "error":
                    raise BenchmarkError(payload)
                if got_kind == "progress":
                    self.progress[index] = payload
                    if kind == "synced":
                        answered = sum(p[0] for p in self.progress.values())
                        synced = sum(p[1] for p in self.progress.values())
                        progress(f"streams answered {answered}, synced {synced} of {self.total}")
                    continue
                if got_kind == "done":
                    self.done[index] = payload
                    continue
                if got_kind != kind:
                    if got_kind == "seen":  # late, for a change already given up on
                        continue
                    raise BenchmarkError(f"expected {kind!r} from client {index}, got {got_kind!r}")
                if token is not None:
                    got_token, payload = payload
                    if got_token != token:
                        continue
                got[index] = payload
        return got

    def close(self, deadline: float) -> float:
        """Stop the clients; returns their CPU seconds (of those that said)."""
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(("stop", None))
        until = min(deadline, time.monotonic() + 10)
        for i, conn in enumerate(self.conns):
            # What is left in the pipe up to its "done" (or its end: the client is gone).
            with contextlib.suppress(EOFError, OSError):
                while i not in self.done and conn.poll(max(0.0, until - time.monotonic())):
                    got_kind, payload = conn.recv()
                    if got_kind == "done":
                        self.done[i] = payload
        for proc in self.procs:
            proc.join(max(0.1, min(5.0, deadline - time.monotonic())))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        return float(sum(d.get("cpu_s", 0.0) for d in self.done.values()))


# -- server mode -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    services: int
    namespaces: int
    clusters: int
    endpoints: int
    changes: int
    route_changes: int
    streams_per_channel: int
    client_procs: int
    connect_batch: int
    timeout: float
    change_timeout: float
    settle: float
    jitter: float
    seed: int
    idle_sample: float
    in_process: bool
    keep: bool
    server_args: tuple[str, ...]

    @property
    def shape(self) -> FleetShape:
        return FleetShape(self.services, self.namespaces, self.clusters, self.endpoints)


def kontinuum_command() -> list[str]:
    script = Path(sys.executable).parent / "kontinuum"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kontinuum"]


def _pdeathsig() -> None:  # preexec_fn of the server: dies with the orchestrator
    _die_with_parent()


@dataclass
class ChangePlan:
    """One change: how to make it, and how a client recognizes it."""

    kind: str  # "eds" or "route"
    label: dict[str, Any]
    type_url: str
    holds: bytes  # a stream holding this (in resources of type_url) is affected
    needle: bytes  # an affected stream has the change once a response carries this
    write: Callable[[], None]
    path: Path  # the file `write` replaces (what inotify names to the server)


def eds_changes(root: Path, shape: FleetShape, count: int) -> Iterator[ChangePlan]:
    """`count` endpoint changes, each on another service of cluster c0 (services repeat,
    with a new generation, only when `count` exceeds them)."""
    generations: dict[int, int] = {}
    step = max(1, shape.services // max(1, count))
    last = shape.endpoints - 1
    for i in range(count):
        s = (1 + i * step) % shape.services if shape.services > 1 else 0
        old_generation = generations.get(s, 0)
        generation = i + 1
        generations[s] = generation
        old = (
            shape.address(s, 0, last)
            if not old_generation
            else f"10.255.{old_generation >> 8 & 255}.{old_generation & 255}"
        )
        new = f"10.255.{generation >> 8 & 255}.{generation & 255}"
        path = service_path(root, shape, s, 0)
        text = service_file(shape, s, 0, generation=generation)
        if new not in text:
            raise BenchmarkError(f"fleet_gen wrote no address {new} for generation {generation}")
        yield ChangePlan(
            kind="eds",
            label={"service": f"{shape.namespace(s)}/{shape.service(s)}", "old": old, "new": new},
            type_url=EDS,
            holds=pb_string(old),
            needle=pb_string(new),
            write=functools.partial(write_atomically, path, text),
            path=path,
        )


def route_changes(root: Path, shape: FleetShape, count: int) -> Iterator[ChangePlan]:
    """`count` route changes on one service: the first adds its HTTPRoute, the next ones
    change it (another header name)."""
    s = shape.services // 2
    host = f"{shape.service(s)}.{shape.namespace(s)}.svc.clusterset.local"
    for i in range(count):
        generation = i + 1
        text = http_route(shape, s, generation)
        yield ChangePlan(
            kind="route",
            label={
                "service": f"{shape.namespace(s)}/{shape.service(s)}",
                "header": route_header(generation),
                "action": "add" if i == 0 else "modify",
            },
            type_url=RDS,
            holds=pb_string(host),
            needle=pb_string(route_header(generation)),
            write=functools.partial(write_atomically, route_path(root), text),
            path=route_path(root),
        )


def scan_log(path: Path) -> dict[str, Any]:
    """How many ERROR and WARNING lines (and tracebacks) the server logged; the first few."""
    counts = {"errors": 0, "warnings": 0, "tracebacks": 0}
    first: list[str] = []
    warnings: list[str] = []
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        for line in f:
            if " ERROR " in line or " CRITICAL " in line:
                counts["errors"] += 1
                if len(first) < 5:
                    first.append(line.strip()[:400])
            elif " WARNING " in line:
                counts["warnings"] += 1
                if len(warnings) < 5:
                    warnings.append(line.strip()[:400])
            elif line.startswith("Traceback"):
                counts["tracebacks"] += 1
    return {**counts, "first_errors": first, "first_warnings": warnings, "log": str(path)}


class ServerRun:
    """The server-mode run: its state, so that a failure still reports what was measured."""

    def __init__(self, cfg: Config, result: dict[str, Any]) -> None:
        self.cfg = cfg
        self.result = result
        self.deadline = time.monotonic() + cfg.timeout
        self.root = Path(tempfile.mkdtemp(prefix="mesh-scale-"))
        self.fleet = self.root / "fleet"
        self.log = self.root / "server.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.clients: ClientPool | None = None
        self.token = 0
        self.idle_rate = 0.0
        self.random = random.Random(cfg.seed)

    def alive(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            raise BenchmarkError(f"the server exited with status {self.server.returncode}")

    def cpu(self) -> float:
        assert self.server is not None
        try:
            return proc_cpu_s(self.server.pid)
        except OSError:
            self.alive()
            raise

    def execute(self) -> None:
        cfg, shape, result = self.cfg, self.cfg.shape, self.result
        started = time.monotonic()
        write_fleet(self.fleet, shape)
        result["fleet_write_s"] = round(time.monotonic() - started, 3)
        template = template_node()
        nodes = [node_message(n).SerializeToString() for n in sidecar_nodes(shape, template)]
        result["node_metadata"] = sorted(template.get("metadata", {}))
        progress(f"fleet of {shape.documents} documents in {self.fleet}; {len(nodes)} streams")

        xds_port, admin_port = free_port(), free_port()
        command = [
            *kontinuum_command(),
            "serve",
            "--config",
            str(self.fleet),
            "--plaintext-xds",
            "--xds-address",
            f"127.0.0.1:{xds_port}",
            "--admin-address",
            f"127.0.0.1:{admin_port}",
            *cfg.server_args,
        ]
        with open(self.log, "wb") as log:
            started = time.monotonic()
            self.server = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_pdeathsig,
            )
        pid = self.server.pid
        self.wait_ready(admin_port)
        result["load_s"] = round(time.monotonic() - started, 3)
        result["server_cpu_s_load"] = round(self.cpu(), 3)
        result["rss_mb_loaded"] = proc_rss_mb(pid)
        progress(f"server ready in {result['load_s']} s (pid {pid}, xDS port {xds_port})")

        self.clients = ClientPool(cfg, xds_port, nodes, self.alive)
        self.clients.expect("ready", self.deadline)
        cpu0 = self.cpu()
        go = time.monotonic()
        self.clients.send_all(("go", None))
        try:
            synced = self.clients.expect("synced", self.deadline)
        except WaitTimeoutError as error:
            done = sum(p[1] for p in self.clients.progress.values())
            raise BenchmarkError(
                f"initial sync: about {done} of {len(nodes)} streams synced in time"
            ) from error
        result["initial_sync_s"] = round(max(s["at"] for s in synced.values()) - go, 3)
        result["server_cpu_s_initial_sync"] = round(self.cpu() - cpu0, 3)
        responses: dict[str, int] = {}
        for s in synced.values():
            for type_url, n in s["responses"].items():
                short = SHORT.get(type_url, type_url)
                responses[short] = responses.get(short, 0) + n
        result["initial_sync_responses"] = responses
        time.sleep(1.0)  # the last ACKs' bookkeeping
        result["rss_mb_synced"] = proc_rss_mb(pid)
        progress(f"initial sync in {result['initial_sync_s']} s")

        cpu0, t0 = self.cpu(), time.monotonic()
        time.sleep(cfg.idle_sample)
        self.idle_rate = (self.cpu() - cpu0) / (time.monotonic() - t0)
        result["server_idle_cpu_s_per_s"] = round(self.idle_rate, 4)

        for name, plans in (
            ("eds", eds_changes(self.fleet, shape, cfg.changes)),
            ("route", route_changes(self.fleet, shape, cfg.route_changes)),
        ):
            samples: list[dict[str, Any]] = []
            result[f"{name}_changes"] = samples
            for plan in plans:
                sample = self.measure(plan)
                samples.append(sample)
                self.summarize(name, samples)
                progress(
                    f"{name} change {len(samples)}: {sample['all_ms']} ms to "
                    f"{sample['affected_streams']} streams, server CPU {sample['server_cpu_s']} s"
                )
                if not sample["complete"]:
                    raise BenchmarkError(
                        f"{name} change {len(samples)}: {sample['missing']} of "
                        f"{sample['affected_streams']} affected streams never got it"
                    )
        result["rss_mb_end"] = proc_rss_mb(pid)

    def wait_ready(self, admin_port: int) -> None:
        while True:
            self.alive()
            if time.monotonic() > self.deadline:
                raise BenchmarkError("timed out waiting for the server's /readyz")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
                try:
                    conn.request("GET", "/readyz")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.02)

    def measure(self, plan: ChangePlan) -> dict[str, Any]:
        assert self.clients is not None
        cfg = self.cfg
        # The server polls the directory: a write at a random phase of the poll, so that
        # samples are not locked to one phase by the benchmark's own rhythm.
        time.sleep(self.random.uniform(0.0, cfg.jitter))
        self.token += 1
        token = self.token
        self.clients.send_all(("arm", (token, plan.type_url, plan.holds, plan.needle)))
        armed = self.clients.expect("armed", self.deadline, token)
        affected = sum(armed.values())
        if not affected:
            raise BenchmarkError(f"{plan.kind} change {plan.label}: no stream holds it")
        which = [i for i, n in armed.items() if n]
        cpu0 = self.cpu()
        written = time.monotonic()
        plan.write()
        complete = True
        try:
            self.clients.expect(
                "seen", min(self.deadline, written + cfg.change_timeout), token, which
            )
        except WaitTimeoutError:
            complete = False
        time.sleep(cfg.settle)
        cpu = self.cpu() - cpu0
        window = time.monotonic() - written
        self.clients.send_all(("disarm", token))
        counts = self.clients.expect("counts", self.deadline, token)
        # What every client saw, also those that had not seen all when the wait ended.
        times = sorted(t for c in counts.values() for t in c.get("seen_at", ()))
        latencies = [(t - written) * 1000.0 for t in times]
        responses: dict[str, int] = {}
        for c in counts.values():
            for short, n in c.get("responses", {}).items():
                responses[short] = responses.get(short, 0) + n
        return {
            **plan.label,
            "affected_streams": affected,
            "complete": complete,
            "missing": sum(c.get("missing", 0) for c in counts.values()) if not complete else 0,
            "first_ms": rounded(latencies[0] if latencies else None),
            "p50_ms": rounded(percentile(latencies, 50)),
            "all_ms": rounded(latencies[-1] if latencies and complete else None),
            "server_cpu_s": round(cpu, 3),
            "server_cpu_s_net_of_idle": round(cpu - self.idle_rate * window, 3),
            "cpu_window_s": round(window, 3),
            "responses_in_window": responses,
            "streams_receiving": sum(c.get("streams_touched", 0) for c in counts.values()),
        }

    def summarize(self, name: str, samples: list[dict[str, Any]]) -> None:
        done = [s for s in samples if s["complete"]]
        all_ms = [s["all_ms"] for s in done]
        cpu = [s["server_cpu_s"] for s in samples]
        self.result[f"{name}_change_ms_p50"] = rounded(median(all_ms))
        self.result[f"{name}_change_ms_samples"] = all_ms
        self.result[f"{name}_change_affected_streams"] = [s["affected_streams"] for s in samples]
        self.result[f"{name}_change_server_cpu_s_p50"] = rounded(median(cpu), 3)
        self.result[f"{name}_change_server_cpu_s_samples"] = cpu

    def cleanup(self) -> None:
        deadline = time.monotonic() + 30
        if self.clients is not None:
            cpu = self.clients.close(deadline)
            self.result["client_cpu_s_total"] = round(cpu, 3)
        if self.server is not None:
            if self.server.poll() is None:
                self.result.setdefault("rss_mb_end", proc_rss_mb(self.server.pid))
                self.server.terminate()  # SIGTERM: kontinuum stops cleanly
                try:
                    self.server.wait(15)
                except subprocess.TimeoutExpired:
                    self.server.kill()
                    self.server.wait(5)
            self.result["server_exit_status"] = self.server.returncode
            self.result["server_log"] = scan_log(self.log)
        if self.cfg.keep:
            self.result["kept"] = str(self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
            self.result.get("server_log", {}).pop("log", None)


def run_server(cfg: Config, result: dict[str, Any]) -> None:
    # grpc logs every GOAWAY of a channel closed at the end; keep stderr for real errors.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    run = ServerRun(cfg, result)
    try:
        run.execute()
    finally:
        run.cleanup()


# -- in-process mode ---------------------------------------------------------------------------


class Recorder:
    """A cache watcher on every view (the xDS server's own seam): what each apply told."""

    def __init__(self) -> None:
        self.views: set[str] = set()
        self.changed: dict[str, int] = {}

    def reset(self) -> None:
        self.views = set()
        self.changed = {}

    def watcher(self, view: str) -> Any:
        recorder = self

        class _Watcher:
            def on_snapshot(self, snapshot: Any, changes: Any, push: Any = None) -> None:
                if changes:
                    recorder.views.add(view)
                for type_url, names in changes.items():
                    short = SHORT.get(type_url, type_url)
                    recorder.changed[short] = recorder.changed.get(short, 0) + len(names)

        return _Watcher()


def _serialized(resource: Any) -> bytes:
    """A cached resource's bytes (the wire entry when it keeps one, else its message)."""
    entry = getattr(resource, "sotw_entry", None)
    return entry if isinstance(entry, bytes) else bytes(resource.message.SerializeToString())


def _holding(cache: Any, views: Iterable[str], type_url: str, needle: bytes) -> set[str]:
    """The views whose snapshot has a resource of `type_url` containing `needle`."""
    found = set()
    for view in views:
        snapshot = cache.snapshot(view)
        if snapshot is not None and any(
            needle in _serialized(r) for r in snapshot.resources(type_url).values()
        ):
            found.add(view)
    return found


def run_in_process(cfg: Config, result: dict[str, Any]) -> None:
    from kontinuum.discovery.static import FleetReader
    from kontinuum.mesh import Mesh
    from kontinuum.xds import Peer, SnapshotCache

    shape = cfg.shape
    root = Path(tempfile.mkdtemp(prefix="mesh-scale-"))
    fleet_dir = root / "fleet"
    deadline = time.monotonic() + cfg.timeout
    try:
        write_fleet(fleet_dir, shape)
        template = template_node()
        nodes = [node_message(n) for n in sidecar_nodes(shape, template)]
        progress(f"fleet of {shape.documents} documents; {len(nodes)} views")

        started = time.perf_counter()
        reader = FleetReader(fleet_dir)  # as the server's static source reads the directory
        fleet, errors = reader.read()
        result["load_fleet_s"] = round(time.perf_counter() - started, 3)
        if errors:
            raise BenchmarkError(f"the generated fleet has errors: {errors[:3]}")
        cache = SnapshotCache()
        mesh = Mesh(cache)
        started = time.perf_counter()
        mesh.apply(fleet)
        result["first_apply_s"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        peer = Peer(address="127.0.0.1:0")  # as the plaintext server's: an address, no identity
        views = [mesh.resolve_view(node, peer) for node in nodes]
        result["resolve_views_s"] = round(time.perf_counter() - started, 3)
        result["views"] = len(set(views))
        recorder = Recorder()
        for view in set(views):
            cache.watch(view, recorder.watcher(view))
        result["rss_mb_loaded"] = proc_rss_mb(os.getpid())
        gc.collect()
        started = time.perf_counter()
        mesh.apply(fleet)
        result["apply_unchanged_s"] = round(time.perf_counter() - started, 3)
        progress(
            f"load_fleet {result['load_fleet_s']} s, views resolved in "
            f"{result['resolve_views_s']} s, unchanged apply {result['apply_unchanged_s']} s"
        )

        for name, plans in (
            ("eds", eds_changes(fleet_dir, shape, cfg.changes)),
            ("route", route_changes(fleet_dir, shape, cfg.route_changes)),
        ):
            samples: list[dict[str, Any]] = []
            result[f"{name}_changes"] = samples
            for plan in plans:
                if time.monotonic() > deadline:
                    raise BenchmarkError("timed out (--timeout)")
                holders = _holding(cache, set(views), plan.type_url, plan.holds)
                plan.write()
                started = time.perf_counter()
                # as the server reads after an inotify batch: the named file only
                fleet, errors = reader.read({str(plan.path)})
                read_s = time.perf_counter() - started
                if errors:
                    raise BenchmarkError(f"{name} change {plan.label}: fleet errors {errors[:3]}")
                recorder.reset()
                gc.collect()
                cpu0 = time.process_time()
                started = time.perf_counter()
                mesh.apply(fleet)
                apply_s = time.perf_counter() - started
                cpu = time.process_time() - cpu0
                have = _holding(cache, holders, plan.type_url, plan.needle)
                sample = {
                    **plan.label,
                    "affected_views": len(holders),
                    "affected_views_updated": len(have),
                    "read_fleet_ms": round(read_s * 1000.0, 2),
                    "apply_ms": round(apply_s * 1000.0, 2),
                    "apply_cpu_s": round(cpu, 3),
                    "views_notified": len(recorder.views),
                    "resources_changed": dict(recorder.changed),
                }
                samples.append(sample)
                progress(
                    f"{name} change {len(samples)}: read {sample['read_fleet_ms']} ms, "
                    f"apply {sample['apply_ms']} ms, {len(recorder.views)} views notified"
                )
                if len(have) != len(holders):
                    raise BenchmarkError(
                        f"{name} change {len(samples)}: {len(holders) - len(have)} of "
                        f"{len(holders)} affected views did not get it"
                    )
            result[f"{name}_apply_ms_p50"] = rounded(median([s["apply_ms"] for s in samples]))
            result[f"{name}_apply_ms_samples"] = [s["apply_ms"] for s in samples]
            result[f"{name}_apply_cpu_s_p50"] = rounded(
                median([s["apply_cpu_s"] for s in samples]), 3
            )
            result[f"{name}_read_fleet_ms_p50"] = rounded(
                median([s["read_fleet_ms"] for s in samples])
            )
            result[f"{name}_affected_views"] = [s["affected_views"] for s in samples]
        result["rss_mb_end"] = proc_rss_mb(os.getpid())
    finally:
        if cfg.keep:
            result["kept"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mesh_scale",
        description="The whole pipeline (files -> kontinuum serve -> Delta ADS sidecars) at "
        "fleet scale: load, initial sync, endpoint and route changes.",
    )
    parser.add_argument("--services", type=int, default=200, help="services (S)")
    parser.add_argument("--namespaces", type=int, default=20, help="namespaces (W)")
    parser.add_argument("--clusters", type=int, default=3, help="clusters (C)")
    parser.add_argument(
        "--endpoints", type=int, default=2, help="endpoints per service per cluster"
    )
    parser.add_argument("--changes", type=int, default=5, help="endpoint changes")
    parser.add_argument(
        "--route-changes", type=int, default=2, help="route changes (add, then modify)"
    )
    parser.add_argument("--streams-per-channel", type=int, default=100)
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument(
        "--connect-batch",
        type=int,
        default=500,
        help="each client process opens its streams this many at a time (0: all at once)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="whole run, seconds")
    parser.add_argument("--change-timeout", type=float, default=120.0, help="one change, seconds")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.3,
        help="idle time after a change before its server CPU is read, seconds",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.5,
        help="random wait before each change, up to this many seconds (the server polls "
        "its directory every 0.5 s; 0: no wait)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the jitter")
    parser.add_argument(
        "--idle-sample",
        type=float,
        default=2.0,
        help="seconds of the server's idle CPU measured after the initial sync",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="no server, no clients: time FleetReader.read and Mesh.apply in this process",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary fleet and server log"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `kontinuum serve` (repeatable), e.g. --server-arg=-v",
    )
    args = parser.parse_args(argv)
    if min(args.services, args.namespaces, args.clusters, args.endpoints) < 1:
        parser.error("--services, --namespaces, --clusters and --endpoints must be positive")
    if args.changes < 0 or args.route_changes < 0:
        parser.error("--changes and --route-changes cannot be negative")
    if args.services * args.clusters * args.endpoints >= 1 << 24:
        parser.error("too many endpoints for the generator's 10.x.y.z addresses")
    return Config(
        services=args.services,
        namespaces=args.namespaces,
        clusters=args.clusters,
        endpoints=args.endpoints,
        changes=args.changes,
        route_changes=args.route_changes,
        streams_per_channel=max(1, args.streams_per_channel),
        client_procs=max(1, args.client_procs),
        connect_batch=args.connect_batch if args.connect_batch > 0 else 1 << 30,
        timeout=args.timeout,
        change_timeout=args.change_timeout,
        settle=max(0.0, args.settle),
        jitter=max(0.0, args.jitter),
        seed=args.seed,
        idle_sample=max(0.1, args.idle_sample),
        in_process=args.in_process,
        keep=args.keep,
        server_args=tuple(args.server_arg),
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    shape = cfg.shape
    result: dict[str, Any] = {
        "mode": "in-process" if cfg.in_process else "server",
        "ok": True,
        "services": shape.services,
        "namespaces": shape.namespaces,
        "clusters": shape.clusters,
        "endpoints": shape.endpoints,
        "documents": shape.documents,
    }
    result["views" if cfg.in_process else "streams"] = shape.services * shape.clusters
    if not cfg.in_process:
        result["client_procs"] = cfg.client_procs
        result["streams_per_channel"] = cfg.streams_per_channel
    started = time.monotonic()
    code = 0
    try:
        if cfg.in_process:
            run_in_process(cfg, result)
        else:
            run_server(cfg, result)
    except (BenchmarkError, KeyboardInterrupt) as error:
        result["ok"] = False
        result["error"] = str(error) or type(error).__name__
        progress(f"error: {result['error']}")
        code = 1
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
