"""The mesh server: a fleet in, one view per (role, cluster, workspace) out.

The composition of the layers for `kontinuum serve --config`: the aggregator hands over the
fleet its sources see, `control.mcs` builds the service plane, `control.translate` turns what
a view may see into Envoy resources, and the xDS cache serves them. A proxy's view comes from
what it declares in its bootstrap (`kontinuum bootstrap`): its fleet cluster
(`node.cluster`), its namespace (its workspace) and role, and its outbound port (proxies that
share a view share every byte, so the port is part of the view).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace
from typing import Any

from kontinuum.bootstrap import declared
from kontinuum.control.mcs import build_plane, visible_services
from kontinuum.control.model import Fleet, ServiceRef
from kontinuum.control.objects import dns_label
from kontinuum.control.plane import ProxyView, ServicePlane
from kontinuum.control.routing_state import RoutingState
from kontinuum.control.translate import SidecarOptions, translate_sidecar
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.route_report import status_lines
from kontinuum.xds import Peer, Snapshot, SnapshotCache

log = logging.getLogger("kontinuum.mesh")


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
    """What decides a proxy's configuration."""

    view: ProxyView
    outbound_port: int
    inbound: Inbound | None = None

    def __str__(self) -> str:
        own = f"/{self.inbound}" if self.inbound else ""
        return f"{self.view}:{self.outbound_port}{own}"


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


def _own_service_port(
    plane: ServicePlane, cluster: str, ref: ServiceRef, listen_port: int
) -> int | str:
    """The port of the sidecar's own service that its inbound listener serves, or why not.

    Other proxies reach the workload at its endpoint port, so the service port whose
    endpoints use the listen port is the one; failing that, a service with one TCP port.
    """
    own = [
        s
        for s in plane.services
        if (s.namespace, s.name) == (ref.namespace, ref.name) and s.reachable_from(cluster)
    ]
    ports = [p for s in own for p in s.ports if p.protocol == "TCP"]
    for port in ports:
        if any(e.port == listen_port and e.locality.cluster == cluster for e in port.endpoints):
            return port.port
    numbers = sorted({p.port for p in ports})
    if len(numbers) == 1:
        return numbers[0]
    if not numbers:
        return f"no Service {ref} with a TCP port in cluster {cluster}"
    return (
        f"Service {ref} has ports {numbers} and none has endpoints on the inbound port "
        f"{listen_port} in cluster {cluster}: no inbound listener"
    )


def _declared(node: Any, key: str) -> str:
    try:
        return declared(node, key)
    except TypeError as error:
        raise PermissionError(str(error)) from None


class Mesh:
    """Keeps the cache's views in step with the fleet the aggregator applies."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache
        self.plane = ServicePlane()
        self.routing_state = RoutingState()
        self._routing = MeshRouting()
        self._views: dict[str, ViewKey] = {}
        self._problems: set[str] = set()

    def apply(self, fleet: Fleet) -> None:
        """Re-translate every view in use for `fleet`.

        Views of a cluster that left the fleet are dropped (their proxies get nothing more).
        """
        self.plane = build_plane(fleet)
        self._routing = self.routing_state.update(fleet, self.plane)
        self._report_status()
        for name, key in list(self._views.items()):
            if self.plane.site(key.view.cluster) is None:
                del self._views[name]
                continue
            self._translate(name, key)

    def _report_status(self) -> None:
        """Log each route, Gateway or policy condition that newly went wrong, once."""
        problems = {str(x) for x in status_lines(self.routing_state.binding) if not x.ok}
        for problem in sorted(problems - self._problems):
            log.warning("%s", problem)
        self._problems = problems

    def resolve_view(self, node: Any, peer: Peer) -> str:
        """The `ViewResolver` of the xDS server: refuses what the fleet cannot serve."""
        cluster = str(node.cluster)
        namespace = _declared(node, "namespace")
        role = _declared(node, "role") or "sidecar"
        if self.plane.site(cluster) is None:
            raise PermissionError(f"cluster {cluster!r} is not in the fleet")
        if not namespace or dns_label(namespace) is not None:
            raise PermissionError(
                f"the node declares no valid namespace ({namespace!r}; kontinuum bootstrap)"
            )
        if role != "sidecar":
            raise PermissionError(f"role {role!r} is not served yet (only sidecar)")
        outbound = _port(_declared(node, "outbound-port") or "15001", "outbound port")
        key = ViewKey(ProxyView(namespace, cluster, "sidecar"), outbound, _inbound(node))
        name = str(key)
        if name not in self._views:
            self._views[name] = key
            self._translate(name, key)
        return name

    def _options(self, name: str, key: ViewKey) -> SidecarOptions:
        options = SidecarOptions(outbound_port=key.outbound_port)
        if key.inbound is None:
            return options
        ref = ServiceRef(key.view.workspace, key.inbound.service)
        port = _own_service_port(self.plane, key.view.cluster, ref, key.inbound.listen_port)
        if isinstance(port, str):
            log.error("view %s: %s", name, port)
            return options
        return replace(
            options,
            inbound_service=(ref, port),
            inbound_port=key.inbound.workload_port,
            inbound_listen_address=key.inbound.listen_address,
            inbound_listen_port=key.inbound.listen_port,
        )

    def _translate(self, name: str, key: ViewKey) -> None:
        services = visible_services(self.plane, key.view.workspace, key.view.cluster)
        translation = translate_sidecar(
            services,
            key.view,
            self.plane.site(key.view.cluster),
            self._options(name, key),
            self._routing,
        )
        for error in translation.errors:
            log.error("view %s: %s", name, error)
        self.cache.set_snapshot(name, Snapshot.of(translation.resources))
