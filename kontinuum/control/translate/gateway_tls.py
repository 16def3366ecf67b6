"""TLS termination on an ingress gateway's HTTPS listeners.

A listener port whose Gateway listeners are HTTPS gets a TLS inspector (it reads the SNI)
and one filter chain per distinct listener hostname, matching that name as the SNI
(`server_names`; a wildcard hostname matches as Envoy's wildcard server names do); a
listener without a hostname is the chain without `server_names`, which takes every other
name and clients that send none. Each chain terminates TLS with the certificates of its
listener (ALPN h2 and http/1.1) and hands the requests to the same HTTP connection manager
and routes as a plain HTTP port would.

Certificates come by SDS over ADS, one secret per Secret, named as Istio names a Gateway's
(`kubernetes-gateway://<namespace>/<name>`): a renewed Secret changes that secret only,
and Envoy serves the new certificate on new connections without a restart or a listener
drain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from kontinuum.control.gateway_binding import BoundGateway
from kontinuum.control.routing import GatewayListener, TlsSecret
from kontinuum.control.translate import envoy
from kontinuum.control.translate.tls import TLS_SOCKET

SECRET_PREFIX: Final = "kubernetes-gateway://"
TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"
ALPN: Final = ("h2", "http/1.1")


def secret_name(secret: TlsSecret) -> str:
    return f"{SECRET_PREFIX}{secret.namespace}/{secret.name}"


def gateway_secret(secret: TlsSecret) -> Any:
    """The SDS secret of a Secret: its certificate chain and private key."""
    message = secret_pb2.Secret(name=secret_name(secret))
    message.tls_certificate.certificate_chain.inline_bytes = secret.certificate
    message.tls_certificate.private_key.inline_bytes = secret.key
    return message


def gateway_secrets(bound: BoundGateway) -> list[Any]:
    """The SDS secrets of every programmed HTTPS listener, once each, by name."""
    secrets = {secret_name(s): s for _, found in bound.certificates for s in found}
    return [gateway_secret(secrets[name]) for name in sorted(secrets)]


def _downstream_tls(secrets: Iterable[TlsSecret]) -> Any:
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    common.alpn_protocols.extend(ALPN)
    for secret in secrets:
        common.tls_certificate_sds_secret_configs.add(
            name=secret_name(secret), sds_config=envoy.ads_source()
        )
    return context


def terminate_tls(
    listener: Any, hcm: Any, listeners: list[GatewayListener], bound: BoundGateway
) -> None:
    """Give an Envoy `listener` one TLS filter chain per hostname of its HTTPS Gateway
    `listeners` (one port's), each running `hcm`."""
    listener.listener_filters.add(name=TLS_INSPECTOR).typed_config.CopyFrom(
        envoy.pack(tls_inspector_pb2.TlsInspector())
    )
    # A wildcard and an exact name: Envoy prefers the exact one, as the Gateway API does.
    for gateway_listener in sorted(listeners, key=lambda li: (li.hostname is None, li.name)):
        host = gateway_listener.hostname
        chain = listener.filter_chains.add(name=f"{bound.gateway.name}/{gateway_listener.name}")
        match = listener_components_pb2.FilterChainMatch(transport_protocol="tls")
        if host is not None:
            match.server_names.append(host)
        chain.filter_chain_match.CopyFrom(match)
        context = _downstream_tls(bound.certificates_of(gateway_listener))
        chain.transport_socket.name = TLS_SOCKET
        chain.transport_socket.typed_config.CopyFrom(envoy.pack(context))
        chain.filters.add(name=envoy.HCM_FILTER).typed_config.CopyFrom(envoy.pack(hcm))
