"""The mesh server: a fleet in, one view per proxy role, cluster and workspace out.

The composition of the layers for `kontinuum serve --config`: the aggregator hands over the
fleet its sources see, `control.mcs` builds the service plane, `control.routing_state` binds
the fleet's routes, Gateways and policies to it, `control.translate` turns what a view may
see into Envoy resources, and the xDS cache serves them. A proxy's view comes from what it
claims in its bootstrap (`kontinuum.claims`): a sidecar of a workspace in a cluster (with
its ports and own service), the cluster's east-west gateway, or an ingress gateway running
a Gateway. Proxies that share a view share every byte.

With workload certificates (`WorkloadCertificates`), a proxy's identity must agree with
what it claims (`kontinuum.security.admission`), every view carries its identity's SDS
secrets, sidecars originate mTLS to the endpoints that require it, and inbound listeners
require client certificates of the own workspace or of a workspace granted access.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kontinuum.claims import ViewKey, claim
from kontinuum.control.gateway_binding import BoundGateway
from kontinuum.control.mcs import build_plane, visible_services
from kontinuum.control.model import Fleet, Grant, ServiceRef
from kontinuum.control.plane import ServicePlane
from kontinuum.control.routing_state import RoutingState
from kontinuum.control.translate import SidecarOptions, Translation, translate_sidecar
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.control.translate.gateways import east_west_gateway, ingress_gateway
from kontinuum.control.translate.options import WorkloadTls
from kontinuum.route_report import status_lines
from kontinuum.security.admission import admit
from kontinuum.security.ca import CaError
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.workload import WorkloadCertificates, WorkloadIdentity
from kontinuum.xds import Peer, Snapshot, SnapshotCache
from kontinuum.xds.push import Push

log = logging.getLogger("kontinuum.mesh")


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


class Mesh:
    """Keeps the cache's views in step with the fleet the aggregator applies."""

    def __init__(
        self, cache: SnapshotCache, certificates: WorkloadCertificates | None = None
    ) -> None:
        self.cache = cache
        self.certificates = certificates
        self.plane = ServicePlane()
        self.routing_state = RoutingState()
        self._routing = MeshRouting()
        self._grants: tuple[Grant, ...] = ()
        self._views: dict[str, ViewKey] = {}
        self._identities: dict[str, WorkloadIdentity] = {}  # view -> whose secrets it holds
        self._translated: dict[str, tuple[Any, ...]] = {}  # view -> resources, secrets aside
        self._idle_since: dict[str, float] = {}  # view -> since when no stream uses it
        self._problems: set[str] = set()
        # Told how long each `apply` took to translate (seconds) and how many views.
        self.translated: Callable[[float, int], None] | None = None

    def apply(self, fleet: Fleet, push: Push | None = None) -> None:
        """Re-translate every view in use for `fleet`; what changes is part of `push`.

        Views of a cluster that left the fleet are dropped (their proxies get nothing more).
        """
        started = time.perf_counter()
        self.plane = build_plane(fleet)
        self._grants = fleet.grants
        self._routing = self.routing_state.update(fleet, self.plane)
        self._report_status()
        for name, key in list(self._views.items()):
            if self.plane.site(key.view.cluster) is None:
                self._forget(name)
                continue
            self._translate(name, key, push)
        if self.translated is not None:
            self.translated(time.perf_counter() - started, len(self._views))

    def view_key(self, view: str) -> ViewKey | None:
        """What a view in use was resolved from (its role, cluster and workspace)."""
        return self._views.get(view)

    def _report_status(self) -> None:
        """Log each route, Gateway or policy condition that newly went wrong, once."""
        problems = {str(x) for x in status_lines(self.routing_state.binding) if not x.ok}
        for problem in sorted(problems - self._problems):
            log.warning("%s", problem)
        self._problems = problems

    def resolve_view(self, node: Any, peer: Peer) -> str:
        """The `ViewResolver` of the xDS server: refuses what the fleet cannot serve."""
        key = claim(node)
        identity: WorkloadIdentity | None = None
        cluster = key.view.cluster
        if self.plane.site(cluster) is None:
            raise PermissionError(f"cluster {cluster!r} is not in the fleet")
        if key.view.role == "ingress" and self._ingress(key) is None:
            raise PermissionError(
                f"no accepted Gateway {key.view.workspace}/{key.gateway} in cluster {cluster}"
            )
        if self.certificates is not None:
            gateway = self.gateway_identity(cluster) if key.view.role == "gateway" else None
            key, identity = admit(key, node, peer, self.certificates.trust_domain, gateway)
        name = str(key)
        held = self._identities.get(name)
        if held is not None and held != identity:  # a view holds one identity's secrets
            raise PermissionError(f"view {name} is of {held}, not of {identity}")
        self._idle_since.pop(name, None)  # in use again
        if name not in self._views:
            self._views[name] = key
            if identity is not None:
                self._identities[name] = identity
            if not self._translate(name, key):
                self._forget(name)
                raise PermissionError(f"no workload certificate for {identity} can be issued")
        return name

    def renew_certificates(self, push: Push | None = None) -> int:
        """Renew the workload certificates that are due and send them to their proxies
        (an SDS update, part of `push`); returns how many views got a new one."""
        if self.certificates is None:
            return 0
        renewed = self.certificates.renew_due(set(self._identities.values()))
        views = [name for name, who in self._identities.items() if who in renewed]
        for name in views:
            self._snapshot(name, self._translated.get(name, ()), push)
        return len(views)

    def forget_idle(self, in_use: set[str], idle_for: float, now: float | None = None) -> int:
        """Drop the views no stream has used for `idle_for` seconds, with their snapshots
        and their identities' certificates (a proxy that comes back gets its view anew);
        `in_use`: the views of the connected streams. Returns how many were dropped."""
        now = time.monotonic() if now is None else now
        for name in in_use:
            self._idle_since.pop(name, None)
        dropped = 0
        for name in [n for n in self._views if n not in in_use]:
            since = self._idle_since.setdefault(name, now)
            if now - since >= idle_for:
                self._forget(name)
                self.cache.remove_view(name)
                dropped += 1
        return dropped

    def _forget(self, name: str) -> None:
        del self._views[name]
        self._identities.pop(name, None)
        self._translated.pop(name, None)
        self._idle_since.pop(name, None)

    def gateway_identity(self, cluster: str) -> tuple[str, str] | None:
        """The (namespace, name) of the east-west Gateway in force for `cluster`, if any:
        the namespace and service account of the identity its proxy must hold."""
        gateway = self.routing_state.networks.gateways.get(cluster)
        return (gateway.namespace, gateway.name) if gateway is not None else None

    def _inbound_grants(self, ref: ServiceRef) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Who the workspace grants (ReferenceGrants from a Namespace) let call `ref`: the
        workspaces granted whole, and the SPIFFE IDs granted one by one."""
        assert self.certificates is not None
        workspaces: set[str] = set()
        identities: set[str] = set()
        for g in self._grants:
            if not (
                g.from_kind == "Namespace"
                and g.provider == ref.namespace
                and g.service in (None, ref.name)
                and g.consumer != ref.namespace
            ):
                continue
            if not g.service_accounts:
                workspaces.add(g.consumer)
            for account in g.service_accounts:
                identities.add(str(SpiffeId(self.certificates.trust_domain, g.consumer, account)))
        return tuple(sorted(workspaces)), tuple(sorted(identities))

    def _ingress(self, key: ViewKey) -> BoundGateway | None:
        return next(
            (
                bound
                for bound in self.routing_state.binding.gateways
                if (bound.gateway.namespace, bound.gateway.name)
                == (key.view.workspace, key.gateway)
                and bound.gateway.cluster == key.view.cluster
                and bound.listeners
            ),
            None,
        )

    def _options(self, name: str, key: ViewKey) -> SidecarOptions:
        options = SidecarOptions(outbound_port=key.outbound_port, mtls=self._mtls())
        if key.inbound is None:
            return options
        ref = ServiceRef(key.view.workspace, key.inbound.service)
        port = _own_service_port(self.plane, key.view.cluster, ref, key.inbound.listen_port)
        if isinstance(port, str):
            log.error("view %s: %s", name, port)
            return options
        options = replace(
            options,
            inbound_service=(ref, port),
            inbound_port=key.inbound.workload_port,
            inbound_listen_address=key.inbound.listen_address,
            inbound_listen_port=key.inbound.listen_port,
        )
        if self.certificates is not None:
            consumers, principals = self._inbound_grants(ref)
            options = replace(options, inbound_consumers=consumers, inbound_principals=principals)
        return options

    def _mtls(self) -> WorkloadTls | None:
        if self.certificates is None:
            return None
        return WorkloadTls(self.certificates.trust_domain)

    def _translate(self, name: str, key: ViewKey, push: Push | None = None) -> bool:
        view, site = key.view, self.plane.site(key.view.cluster)
        if view.role == "gateway":
            gateway = self._routing.networks.gateways.get(view.cluster)
            if gateway is None:
                log.error(
                    "view %s: no east-west Gateway (class kontinuum-east-west, with an "
                    "address and a TLS listener) is declared for cluster %s",
                    name,
                    view.cluster,
                )
                translation = Translation()
            else:
                translation = east_west_gateway(
                    self.plane.services, gateway, SidecarOptions(mtls=self._mtls())
                )
        elif view.role == "ingress":
            bound = self._ingress(key)
            if bound is None:
                log.error("view %s: its Gateway is gone or no longer accepted", name)
                translation = Translation()
            else:
                routes = [r for r in self.routing_state.binding.routes if r.parents]
                translation = ingress_gateway(
                    bound, routes, view, site, SidecarOptions(mtls=self._mtls()), self._routing
                )
        else:
            services = visible_services(self.plane, view.workspace, view.cluster)
            translation = translate_sidecar(
                services, view, site, self._options(name, key), self._routing
            )
        for error in translation.errors:
            log.error("view %s: %s", name, error)
        self._translated[name] = translation.resources
        return self._snapshot(name, translation.resources, push)

    def _snapshot(self, name: str, resources: tuple[Any, ...], push: Push | None) -> bool:
        """Serve a view's resources, with the SDS secrets of its identity; False (the last
        snapshot stays) when its certificate cannot be issued, e.g. the CA expired."""
        identity = self._identities.get(name)
        if identity is not None and self.certificates is not None:
            try:
                resources = (*resources, *self.certificates.secrets(identity))
            except CaError as error:
                log.error("view %s keeps its last configuration: %s", name, error)
                return False
        self.cache.set_snapshot(name, Snapshot.of(resources), push)
        return True
