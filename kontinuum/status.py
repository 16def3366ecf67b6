"""`kontinuum status`: every connected proxy's sync state, read over CSDS."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from rich.console import Console
from rich.table import Table

from kontinuum.bootstrap import declared
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
    kontinuum-system`)."""
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
            raise ConnectionError(
                f"cannot read client status from {xds_address}: {error.details()}"
            ) from error
    return [summarize(config) for config in response.config]


def render_status(proxies: list[ProxyStatus], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{len(proxies)} connected proxies")
    table.add_column("NODE")
    table.add_column("CLUSTER")
    table.add_column("WORKSPACE")
    table.add_column("ROLE")
    columns = [types.short_name(t) for t in types.PUSH_ORDER]
    for column in columns:
        table.add_column(column)
    for proxy in proxies:
        table.add_row(
            proxy.node_id,
            proxy.cluster,
            proxy.workspace or "-",
            proxy.role or "-",
            *(proxy.by_type[c].value if c in proxy.by_type else "-" for c in columns),
        )
    console.print(table)
    for proxy in proxies:
        for error in proxy.errors:
            console.print(f"[red]{proxy.node_id}[/red] NACK {error}")
