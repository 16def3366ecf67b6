"""Workload mTLS and authorization (Istio's "auto mTLS", in kontinuum's names).

An endpoint whose EndpointSlice is labelled `kontinuum.io/tls-mode: mutual` is fronted by a
kontinuum sidecar that requires mTLS (`PlaneEndpoint.mutual_tls`). With `SidecarOptions.mtls`
set (None: no TLS anywhere, and the labels mean nothing):

- Outbound (sidecars and ingress gateways): a cluster given at least one such endpoint, ready
  or not (so that a readiness change never changes the Cluster), gets the transport socket
  match `mutual-tls`, selected by the endpoint metadata
  `envoy.transport_socket_match: {tlsMode: mutual}` that each such endpoint carries. Other
  endpoints stay plaintext: there is no default transport socket, and a cluster of plaintext
  endpoints only is not changed at all (proxyless gRPC clients share these clusters and do
  not speak SDS). The TLS: SNI `outbound_.<port>_._.<host>` (Istio's form, which an east-west
  gateway passes through by), the proxy's own certificate, and a peer that must hold an
  identity of the service's namespace: a URI SAN with prefix
  `spiffe://<trust domain>/ns/<namespace>/sa/`; ALPN `h2` for an HTTP/2 port.
- East-west gateways (`gateways`): they hold no certificate; a TLS connection is passed
  through by its SNI to the gateway's local mutual endpoints, so identity stays end to end.
- Inbound (the sidecar's own service): the listener requires a client certificate of the
  trust bundle, tells the workload the caller's SPIFFE ID (`x-forwarded-client-cert`,
  `URI=...`), and an RBAC filter admits only the own namespace's identities (policy
  `workspace`), the namespaces of `inbound_consumers` (`granted-workspaces`) and the exact
  SPIFFE IDs `inbound_principals` (`granted-identities`). Others get Envoy's 403, counted in
  `http.inbound.rbac.denied`.

Certificates come by SDS over ADS, with the secret names Istio users know: `default` (the
proxy's own certificate and key) and `ROOTCA` (the trust bundle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from kontinuum.control.naming import ClusterName
from kontinuum.control.translate import envoy
from kontinuum.control.translate.options import WorkloadTls

WORKLOAD_SECRET: Final = "default"  # SDS: the proxy's own certificate and key
ROOT_SECRET: Final = "ROOTCA"  # SDS: the trust bundle

TLS_SOCKET: Final = "envoy.transport_sockets.tls"
RBAC_FILTER: Final = "envoy.filters.http.rbac"
# The endpoint metadata that selects a cluster's transport socket match, and its value.
MATCH_METADATA: Final = "envoy.transport_socket_match"
TLS_MODE_KEY: Final = "tlsMode"
MUTUAL: Final = "mutual"
MUTUAL_TLS_MATCH: Final = "mutual-tls"
# The RBAC policies of the inbound listener.
WORKSPACE_POLICY: Final = "workspace"
GRANTED_WORKSPACES_POLICY: Final = "granted-workspaces"
GRANTED_IDENTITIES_POLICY: Final = "granted-identities"


def spiffe_prefix(trust_domain: str, namespace: str) -> str:
    """`spiffe://<trust domain>/ns/<namespace>/sa/`: every identity of a namespace."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/"


def _sds(name: str) -> Any:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=envoy.ads_source())


def _common_tls_context(alpn: Sequence[str]) -> Any:
    context = tls_pb2.CommonTlsContext(alpn_protocols=list(alpn))
    context.tls_certificate_sds_secret_configs.append(_sds(WORKLOAD_SECRET))
    return context


def upstream_tls_context(tls: WorkloadTls, destination: ClusterName, *, http2: bool) -> Any:
    """mTLS to an endpoint of `destination`'s service port, which must hold an identity of
    the service's namespace."""
    context = tls_pb2.UpstreamTlsContext(
        sni=destination.sni, common_tls_context=_common_tls_context(["h2"] if http2 else [])
    )
    combined = context.common_tls_context.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.append(
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(
                prefix=spiffe_prefix(tls.trust_domain, destination.namespace)
            ),
        )
    )
    combined.validation_context_sds_secret_config.CopyFrom(_sds(ROOT_SECRET))
    return context


def _transport_socket(context: Any) -> Any:
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=envoy.pack(context))


def mutual_tls_match(tls: WorkloadTls, destination: ClusterName, *, http2: bool) -> Any:
    """The Cluster's transport socket match for its endpoints that require mTLS."""
    match = cluster_pb2.Cluster.TransportSocketMatch(name=MUTUAL_TLS_MATCH)
    match.match.update({TLS_MODE_KEY: MUTUAL})
    match.transport_socket.CopyFrom(
        _transport_socket(upstream_tls_context(tls, destination, http2=http2))
    )
    return match


def mark_mutual(lb_endpoint: Any) -> None:
    """Select the `mutual-tls` transport socket match for an endpoint (an LbEndpoint)."""
    lb_endpoint.metadata.filter_metadata[MATCH_METADATA].update({TLS_MODE_KEY: MUTUAL})


def downstream_transport_socket() -> Any:
    """The inbound listener's TLS: a client certificate of the trust bundle is required."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_tls_context(["h2", "http/1.1"])
    )
    context.require_client_certificate.value = True
    context.common_tls_context.validation_context_sds_secret_config.CopyFrom(_sds(ROOT_SECRET))
    return _transport_socket(context)


def forward_client_identity(hcm: Any) -> None:
    """The workload sees the caller's SPIFFE ID, and only that (`x-forwarded-client-cert`,
    set by this proxy whatever the caller sent)."""
    hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
    hcm.set_current_client_cert_details.uri = True


def _principal(matcher: Any) -> Any:
    principal = rbac_pb2.Principal()
    principal.authenticated.principal_name.CopyFrom(matcher)
    return principal


def inbound_rbac(
    tls: WorkloadTls, namespace: str, consumers: Sequence[str], principals: Sequence[str]
) -> Any:
    """The RBAC HttpFilter of the inbound listener of a service of `namespace`: callers of
    its own namespace, of the `consumers` namespaces and the exact SPIFFE IDs `principals`
    are allowed; an empty policy is left out."""
    policies: dict[str, list[Any]] = {
        WORKSPACE_POLICY: [
            string_pb2.StringMatcher(prefix=spiffe_prefix(tls.trust_domain, namespace))
        ],
        GRANTED_WORKSPACES_POLICY: [
            string_pb2.StringMatcher(prefix=spiffe_prefix(tls.trust_domain, consumer))
            for consumer in sorted(set(consumers) - {namespace})
        ],
        GRANTED_IDENTITIES_POLICY: [
            string_pb2.StringMatcher(exact=principal) for principal in sorted(set(principals))
        ],
    }
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    for name, matchers in policies.items():
        if matchers:
            policy = rules.policies[name]
            policy.permissions.add(any=True)
            policy.principals.extend(_principal(m) for m in matchers)
    return hcm_pb2.HttpFilter(
        name=RBAC_FILTER, typed_config=envoy.pack(rbac_filter_pb2.RBAC(rules=rules))
    )
