"""What a proxy claims in its bootstrap (`kontinuum bootstrap`), checked: its view key.

The node's `cluster` is its fleet cluster; `metadata` declares under `kontinuum.io/` its
namespace (its workspace), role (`sidecar`, `gateway` or `ingress`), ports, own service and,
for an ingress gateway, the Gateway it runs. A claim that cannot be served is refused with
a PermissionError naming why (the xDS server answers PERMISSION_DENIED).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from kontinuum.bootstrap import declared
from kontinuum.control.objects import dns_label, dns_subdomain
from kontinuum.control.plane import ProxyView

ROLES = ("sidecar", "gateway", "ingress")
DEFAULT_SERVICE_ACCOUNT = "default"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A sidecar's own service: where it accepts traffic and where its workload listens."""

    service: str
    workload_port: int  # on 127.0.0.1
    listen_address: str = "0.0.0.0"
    listen_port: int = 15006

    def __str__(self) -> str:
        return f"{self.service}@{self.listen_address}:{self.listen_port}>{self.workload_port}"


@dataclass(frozen=True, slots=True)
class ViewKey:
    """What decides a proxy's configuration; its string names the view.

    sidecar/<cluster>/<workspace>:<outbound port>[/<inbound>][@<service account>][+grpc]
    gateway/<cluster>[@<service account>]   the cluster's east-west gateway
    ingress/<cluster>/<namespace>/<gateway>[@<service account>]  an ingress gateway
    """

    view: ProxyView
    outbound_port: int = 0
    inbound: Inbound | None = None
    gateway: str = ""  # ingress: the Gateway's name, in the view's workspace (namespace)
    # The proxy's identity's service account: its certificate is part of its view, so
    # proxies of different service accounts never share one. Shown unless "default".
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    # A proxyless gRPC client (`+grpc`): only it is given the `api_listener` Listeners it
    # asks for by name; an Envoy sidecar cannot use them (it refuses all but one).
    proxyless: bool = False

    def __str__(self) -> str:
        account = (
            "" if self.service_account == DEFAULT_SERVICE_ACCOUNT else f"@{self.service_account}"
        )
        if self.view.role == "gateway":
            return f"gateway/{self.view.cluster}{account}"
        if self.view.role == "ingress":
            return f"ingress/{self.view.cluster}/{self.view.workspace}/{self.gateway}{account}"
        own = f"/{self.inbound}" if self.inbound else ""
        client = "+grpc" if self.proxyless else ""
        return f"{self.view}:{self.outbound_port}{own}{account}{client}"


def _port(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise PermissionError(f"{what} {text!r} is not a port")
    return int(text)


def _inbound(node: Any) -> Inbound | None:
    """The node's own service, if it declares one (`kontinuum bootstrap --service`)."""
    service = _declared(node, "service")
    workload = _declared(node, "inbound-port")
    listen = _declared(node, "inbound-address")
    if not service:
        if workload or listen:
            raise PermissionError("inbound-port and inbound-address need a service")
        return None
    if dns_label(service) is not None:
        raise PermissionError(f"service {service!r} is not a DNS label")
    if not workload:
        raise PermissionError(f"service {service!r} is declared without its inbound-port")
    inbound = Inbound(service, _port(workload, "inbound port"))
    if listen:
        host, _, port = listen.rpartition(":")
        try:
            address = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            raise PermissionError(f"inbound address {listen!r} is not IP:PORT") from None
        inbound = replace(inbound, listen_address=address, listen_port=_port(port, "port"))
    return inbound


def _declared(node: Any, key: str) -> str:
    try:
        return declared(node, key)
    except TypeError as error:
        raise PermissionError(str(error)) from None


def declared_service_account(node: Any) -> str:
    """The service account a node declares (`kontinuum.io/service-account`): believed only
    without authentication (local development); else the identity's own is used."""
    account = _declared(node, "service-account") or DEFAULT_SERVICE_ACCOUNT
    if dns_label(account) is not None:
        raise PermissionError(f"service account {account!r} is not a DNS label")
    return account


def claim(node: Any) -> ViewKey:
    """The view key a node claims, refused (PermissionError) when malformed."""
    cluster = str(node.cluster)
    namespace = _declared(node, "namespace")
    role = _declared(node, "role") or "sidecar"
    if role not in ROLES:
        raise PermissionError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role == "gateway":
        return ViewKey(ProxyView("", cluster, "gateway"))
    if not namespace or dns_label(namespace) is not None:
        raise PermissionError(
            f"the node declares no valid namespace ({namespace!r}; kontinuum bootstrap)"
        )
    if role == "ingress":
        gateway = _declared(node, "gateway")
        if not gateway or dns_subdomain(gateway) is not None:
            raise PermissionError(f"an ingress gateway declares the Gateway it runs ({gateway!r})")
        return ViewKey(ProxyView(namespace, cluster, "ingress"), gateway=gateway)
    outbound = _port(_declared(node, "outbound-port") or "15001", "outbound port")
    return ViewKey(
        ProxyView(namespace, cluster, "sidecar"),
        outbound,
        _inbound(node),
        proxyless=is_proxyless_grpc(node),
    )


def is_proxyless_grpc(node: Any) -> bool:
    """Whether the node is gRPC's own xDS client: every gRPC implementation names itself
    `gRPC ...` in `user_agent_name` (`gRPC C-core linux Python`, `gRPC Go`, `gRPC Java`);
    Envoy says `envoy`."""
    return str(node.user_agent_name).startswith("gRPC")
