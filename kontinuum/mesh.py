"""The mesh server: a fleet in, one view per (role, cluster, workspace) out.

The composition of the layers for `kontinuum serve --config`: the aggregator hands over the
fleet its sources see, `control.mcs` builds the service plane, `control.translate` turns what
a view may see into Envoy resources, and the xDS cache serves them. A proxy's view comes from
what it declares in its bootstrap (`kontinuum bootstrap`): its fleet cluster
(`node.cluster`), its namespace (its workspace) and role, and its outbound port (proxies that
share a view share every byte, so the port is part of the view).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kontinuum.bootstrap import declared
from kontinuum.control.mcs import build_plane, visible_services
from kontinuum.control.model import Fleet
from kontinuum.control.objects import dns_label
from kontinuum.control.plane import ProxyView, ServicePlane
from kontinuum.control.translate import SidecarOptions, translate_sidecar
from kontinuum.xds import Peer, Snapshot, SnapshotCache

log = logging.getLogger("kontinuum.mesh")


@dataclass(frozen=True, slots=True)
class ViewKey:
    """What decides a proxy's configuration."""

    view: ProxyView
    outbound_port: int

    def __str__(self) -> str:
        return f"{self.view}:{self.outbound_port}"


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
        self._views: dict[str, ViewKey] = {}

    def apply(self, fleet: Fleet) -> None:
        """Re-translate every view in use for `fleet`.

        Views of a cluster that left the fleet are dropped (their proxies get nothing more).
        """
        self.plane = build_plane(fleet)
        for name, key in list(self._views.items()):
            if self.plane.site(key.view.cluster) is None:
                del self._views[name]
                continue
            self._translate(name, key)

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
        port_text = _declared(node, "outbound-port") or "15001"
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise PermissionError(f"outbound port {port_text!r} is not a port")
        key = ViewKey(ProxyView(namespace, cluster, "sidecar"), int(port_text))
        name = str(key)
        if name not in self._views:
            self._views[name] = key
            self._translate(name, key)
        return name

    def _translate(self, name: str, key: ViewKey) -> None:
        services = visible_services(self.plane, key.view.workspace, key.view.cluster)
        translation = translate_sidecar(
            services,
            key.view,
            self.plane.site(key.view.cluster),
            SidecarOptions(outbound_port=key.outbound_port),
        )
        for error in translation.errors:
            log.error("view %s: %s", name, error)
        self.cache.set_snapshot(name, Snapshot.of(translation.resources))
