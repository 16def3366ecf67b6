"""Networks: which endpoints a sidecar reaches directly, and which through an east-west
gateway, in plaintext or by mTLS (see `gateways` for the whole design)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from kontinuum.control.plane import Locality, PlaneEndpoint
from kontinuum.control.translate import envoy

SERVICE_HEADER: Final = "x-kontinuum-service"


@dataclass(frozen=True, slots=True)
class NetworkGateway:
    """Where the sidecars of other networks reach a cluster, and the Gateway that says so
    (its namespace and name: the identity the gateway's proxy must hold)."""

    cluster: str
    address: str
    port: int
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Networks:
    """Which network each fleet cluster is on, and each cluster's east-west gateway."""

    of_cluster: Mapping[str, str] = field(default_factory=dict)
    gateways: Mapping[str, NetworkGateway] = field(default_factory=dict)

    def endpoints(
        self, endpoints: Sequence[PlaneEndpoint], view_cluster: str, *, mutual_tls: bool = False
    ) -> tuple[list[PlaneEndpoint], int]:
        """The endpoints a proxy of `view_cluster` can reach, remote networks replaced by
        their gateway; and how many endpoints are behind gateways reached by the
        `x-kontinuum-service` header (plaintext).

        A remote cluster's ready endpoints become one endpoint of its gateway, weighted by
        their number. With `mutual_tls` they are grouped by TLS mode: the mutual ones become
        a gateway endpoint that requires mTLS (the gateway passes it through by SNI), the
        others a plaintext one. Envoy keys an EDS cluster's hosts by address, so one Envoy
        cluster cannot hold both for one gateway: when a remote cluster has both, the mutual
        one is kept (as Istio reaches only mTLS endpoints across networks) and that
        cluster's plaintext endpoints are not reached from other networks.
        """
        here = self.of_cluster.get(view_cluster, "")
        reachable: list[PlaneEndpoint] = []
        behind: dict[tuple[str, bool], int] = {}
        localities: dict[str, Locality] = {}
        for endpoint in endpoints:
            cluster = endpoint.locality.cluster
            if self.of_cluster.get(cluster, "") == here:
                reachable.append(endpoint)
            elif cluster in self.gateways and endpoint.ready:
                key = (cluster, mutual_tls and endpoint.mutual_tls)
                behind[key] = behind.get(key, 0) + 1
                localities.setdefault(cluster, endpoint.locality)
        plaintext = 0
        for (cluster, mutual), count in sorted(behind.items()):
            if not mutual and (cluster, True) in behind:
                continue
            plaintext += 0 if mutual else count
            gateway = self.gateways[cluster]
            reachable.append(
                PlaneEndpoint(
                    gateway.address,
                    gateway.port,
                    localities[cluster],
                    weight=count,
                    mutual_tls=mutual,
                )
            )
        return reachable, plaintext


def service_header_options(authority: str, http2: bool) -> Any:
    """HttpProtocolOptions whose upstream filter names the service to an east-west gateway."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if http2:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    mutation = header_mutation_pb2.HeaderMutation()
    added = mutation.mutations.request_mutations.add()
    added.append.header.key = SERVICE_HEADER
    added.append.header.value = authority
    added.append.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    options.http_filters.add(
        name="envoy.filters.http.header_mutation", typed_config=envoy.pack(mutation)
    )
    options.http_filters.add(
        name="envoy.filters.http.upstream_codec",
        typed_config=envoy.pack(upstream_codec_pb2.UpstreamCodec()),
    )
    return envoy.pack(options)
