"""`kontinuum status`: every connected proxy's sync state, read over CSDS."""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kontinuum.bootstrap import declared, split_address
from kontinuum.cli_output import fitting
from kontinuum.control.wording import plural
from kontinuum.errors import OperatorError
from kontinuum.xds import types
from kontinuum.xds.state import SyncStatus

_FROM_CONFIG_STATUS = {
    csds_pb2.SYNCED: SyncStatus.SYNCED,
    csds_pb2.STALE: SyncStatus.STALE,
    csds_pb2.ERROR: SyncStatus.NACKED,
    csds_pb2.NOT_SENT: SyncStatus.NOT_SENT,
}
# When resources of one type disagree, the type shows the most urgent state.
_URGENCY = (SyncStatus.NACKED, SyncStatus.STALE, SyncStatus.NOT_SENT, SyncStatus.SYNCED)


@dataclass
class ProxyStatus:
    node_id: str
    cluster: str
    workspace: str = ""  # as the proxy declared it (kontinuum bootstrap --namespace)
    role: str = ""
    by_type: dict[str, SyncStatus] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def summarize(config: Any) -> ProxyStatus:
    """Fold one CSDS ClientConfig into a per-type status."""
    proxy = ProxyStatus(
        node_id=config.node.id,
        cluster=config.node.cluster,
        workspace=_declared(config.node, "namespace"),
        role=_declared(config.node, "role"),
    )
    seen: dict[str, set[SyncStatus]] = {}
    for entry in config.generic_xds_configs:
        status = _FROM_CONFIG_STATUS.get(entry.config_status, SyncStatus.NOT_SENT)
        seen.setdefault(types.short_name(entry.type_url), set()).add(status)
        if status is SyncStatus.NACKED:
            proxy.errors.append(
                f"{types.short_name(entry.type_url)} {entry.name}: {entry.error_state.details}"
            )
    for short, statuses in seen.items():
        proxy.by_type[short] = next(s for s in _URGENCY if s in statuses)
    return proxy


def _declared(node: Any, key: str) -> str:
    with contextlib.suppress(TypeError):
        return declared(node, key)
    return ""


MAX_STATUS_BYTES = 256 * 1024 * 1024


def fetch_status(
    xds_address: str, timeout: float = 5.0, credentials: grpc.ChannelCredentials | None = None
) -> list[ProxyStatus]:
    """Ask the control plane's CSDS for every connected client (over TLS with
    `credentials`: an operator's certificate, `kontinuum ca issue --namespace
    kontinuum-system`). An OperatorError says why it cannot."""
    # The status of a large fleet is larger than gRPC's default 4 MiB: take what the
    # server may send.
    options = [("grpc.max_receive_message_length", MAX_STATUS_BYTES)]
    channel = (
        grpc.insecure_channel(xds_address, options)
        if credentials is None
        else grpc.secure_channel(xds_address, credentials, options)
    )
    with channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        try:
            response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=timeout)
        except grpc.RpcError as error:
            raise _unreadable(xds_address, error, tls=credentials is not None) from error
    return [summarize(config) for config in response.config]


def _unreadable(address: str, error: grpc.RpcError, tls: bool) -> OperatorError:
    """Why the status could not be read, and what to do: a plaintext request to a TLS
    server only sees the connection close, so the server is asked which it speaks."""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        speaks = speaks_tls(address)
        if speaks and not tls:
            return OperatorError(
                f"{address} serves xDS over TLS: pass --credentials DIR, a directory of an "
                "operator's cert.pem, key.pem and ca.pem (`kontinuum ca issue ... --namespace "
                "kontinuum-system --service-account operator --out DIR`)"
            )
        if speaks is False and tls:
            return OperatorError(
                f"{address} serves xDS without TLS (a --plaintext-xds server): leave out "
                "--credentials"
            )
    return OperatorError(f"cannot read client status from {address}: {error.details()}")


def speaks_tls(address: str, timeout: float = 2.0) -> bool | None:
    """Whether the server at `address` answers a TLS ClientHello with TLS (None: it
    cannot be reached). Nothing is verified: this only tells which protocol it speaks."""
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    hello = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):
        hello.do_handshake()  # writes the ClientHello, then wants the server's answer
    try:
        with socket.create_connection((host, port), timeout) as connection:
            connection.sendall(outgoing.read())
            answer = connection.recv(3)
    except OSError:
        return None
    # A TLS record: handshake (22) or alert (21), protocol version 3.x.
    return len(answer) == 3 and answer[0] in (21, 22) and answer[1] == 3


def _sync_states(proxy: ProxyStatus, columns: list[str]) -> str:
    """A proxy's states in one cell: `SYNCED` when every type it has is, else the types
    that are not (`EDS STALE, RDS NACKED`)."""
    if not proxy.by_type:
        return "-"
    behind = [
        f"{c} {proxy.by_type[c].value}"
        for c in columns
        if c in proxy.by_type and proxy.by_type[c] is not SyncStatus.SYNCED
    ]
    return ", ".join(behind) if behind else SyncStatus.SYNCED.value


def render_status(proxies: list[ProxyStatus], console: Console | None = None) -> None:
    """A table of the proxies: one column per xDS type where that fits the terminal, else
    one column of what is not in sync, with the names stacked if need be; names wrap
    between words, and are folded only where no layout fits them."""
    console = console or Console()
    title = plural(len(proxies), "connected proxy", "connected proxies")
    columns = [types.short_name(t) for t in types.PUSH_ORDER]
    names = ("NODE", "CLUSTER", "WORKSPACE", "ROLE")
    wide = Table(*names, *columns, title=title)
    narrow, stacked = Table(title=title), Table(title=title)
    for name in names:
        narrow.add_column(name, overflow="fold")
    stacked.add_column("NODE / CLUSTER, WORKSPACE, ROLE", overflow="fold")
    for table in (narrow, stacked):
        table.add_column("SYNC", overflow="fold")
    for proxy in proxies:
        who = (proxy.node_id, proxy.cluster, proxy.workspace or "-", proxy.role or "-")
        wide.add_row(
            *who, *(proxy.by_type[c].value if c in proxy.by_type else "-" for c in columns)
        )
        states = _sync_states(proxy, columns)
        narrow.add_row(*who, states)
        stacked.add_row(f"{who[0]}\n{', '.join(who[1:])}", states)
    console.print(fitting(console, wide, narrow, stacked))
    for proxy in proxies:
        for error in proxy.errors:
            console.print(Text.assemble((proxy.node_id, "red"), f" NACK {error}"))
