"""The mesh server: a fleet in, one view per proxy role, cluster and workspace out.

The composition of the layers for `kontinuum serve --config`: the aggregator hands over the
fleet its sources see, `control.mcs` builds the service plane, `control.routing_state` binds
the fleet's routes, Gateways and policies to it, `control.translate` turns what a view may
see into Envoy resources, and the xDS cache serves them. A proxy's view comes from what it
claims in its bootstrap (`kontinuum.claims`): a sidecar of a workspace in a cluster (with
its ports and own service), the cluster's east-west gateway, or an ingress gateway running
a Gateway. Proxies that share a view share every byte.

A change costs what it touches (DESIGN principle 8). The plane is kept by a `PlaneBuilder`,
which says which services changed. The outbound side of a sidecar (clusters, endpoints,
routes) is the same for every sidecar of one workspace in one cluster with one outbound
port: it is translated once per such group, and each piece of it once per consumer cluster
(`BuildCache`), serialized once and held by reference. Only the groups that may see a
changed service, or hold a changed route, are translated again, and only the views of a
group whose resources changed (or whose own service, grants or certificate changed) get a
new snapshot. When only endpoints changed (the services' names and ports stand, and no
route or policy names them), a group is not translated whole: the changed services'
Clusters and ClusterLoadAssignments are built again and put in place of the last ones,
so an endpoint change costs the same in a view of 20 services as in one of 2,000.
East-west gateways are translated again when their cluster's share of a changed service
changed; an ingress gateway when what it is translated from changed (its Gateway with its
certificates, the routes attached to it and their backends, the spreads and networks): a
renewed Secret costs the gateways that serve it, and reaches their Envoys as an SDS update
alone.

With workload certificates (`WorkloadCertificates`), a proxy's identity must agree with
what it claims (`kontinuum.security.admission`), every view carries its identity's SDS
secrets, sidecars originate mTLS to the endpoints that require it, and inbound listeners
require client certificates of the own workspace or of a workspace granted access. An
ingress view whose Gateway gains an HTTPS listener while another identity than the
Gateway's own holds it is revoked before it is translated: its streams end with
PERMISSION_DENIED and the listeners' keys never reach it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kontinuum.claims import ViewKey, claim
from kontinuum.control.cross_serving import route_key
from kontinuum.control.gateway_binding import BoundGateway
from kontinuum.control.mcs import visible_named, visible_services
from kontinuum.control.model import Fleet, ServiceRef
from kontinuum.control.plane import PlaneService, ProxyView, ServiceKey, ServicePlane
from kontinuum.control.plane_builder import PlaneBuilder
from kontinuum.control.routing_state import RoutingState
from kontinuum.control.translate import SidecarOptions, Translation, translate_sidecar
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.control.translate.build_cache import BuildCache
from kontinuum.control.translate.gateways import east_west_gateway, ingress_gateway
from kontinuum.control.translate.options import WorkloadTls
from kontinuum.control.translate.sidecar import translate_endpoint_change, translate_inbound
from kontinuum.route_report import status_lines
from kontinuum.security.admission import admit, ingress_refusal
from kontinuum.security.ca import CaError
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.workload import WorkloadCertificates, WorkloadIdentity
from kontinuum.xds import (
    LimitExceededError,
    Peer,
    Snapshot,
    SnapshotCache,
    ViewUnavailableError,
)
from kontinuum.xds.push import Push
from kontinuum.xds.resource import Resource

log = logging.getLogger("kontinuum.mesh")


def _own_service_port(
    plane: ServicePlane, cluster: str, ref: ServiceRef, listen_port: int
) -> int | str:
    """The port of the sidecar's own service that its inbound listener serves, or why not.

    Other proxies reach the workload at its endpoint port, so the service port whose
    endpoints use the listen port is the one; failing that, a service with one TCP port.
    """
    own = [s for s in plane.named(ref.namespace, ref.name) if s.reachable_from(cluster)]
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


def _gateway_share(services: tuple[PlaneService, ...], cluster: str) -> tuple[object, ...]:
    """What the east-west gateway of `cluster` serves of `services`: each cluster-set
    port with the endpoints in `cluster` (`east_west_gateway`)."""
    return tuple(
        (port.port, port.name, port.protocol, port.app_protocol, endpoints)
        for service in services
        if not service.scope
        for port in service.ports
        if (endpoints := tuple(e for e in port.endpoints if e.locality.cluster == cluster))
    )


GroupKey = tuple[str, str, int, bool]  # (workspace, cluster, outbound port, proxyless gRPC)

# Views one identity may hold at once: each distinct outbound port, inbound service or
# inbound address its proxies claim is one (a view no proxy uses is dropped after a while).
MAX_VIEWS_PER_IDENTITY = 256
# Whose views count together: the identity of the views' workload certificate; without
# certificates (or for a gateway, which holds none), the cluster, workspace and service
# account claimed.
Owner = WorkloadIdentity | tuple[str, str, str]


def _owner(key: ViewKey, identity: WorkloadIdentity | None) -> Owner:
    if identity is not None:
        return identity
    return (key.view.cluster, key.view.workspace, key.service_account)


def _described(owner: Owner) -> str:
    if isinstance(owner, WorkloadIdentity):
        return str(owner)
    cluster, workspace, account = owner
    return f"service account {account} of workspace {workspace!r} in {cluster}"


def _group_key(key: ViewKey) -> GroupKey | None:
    """The group of a sidecar view; None for gateways."""
    if key.view.role != "sidecar":
        return None
    return (key.view.workspace, key.view.cluster, key.outbound_port, key.proxyless)


def _warn_if_not_own(name: str, key: ViewKey, identity: WorkloadIdentity) -> None:
    """An HTTP-only Gateway's proxy may run as any identity of its namespace: say which it
    needs once the Gateway has an HTTPS listener (it is then refused, its view revoked)."""
    if key.service_account != key.gateway:
        log.warning(
            "view %s: %s runs Gateway %s/%s, which has no HTTPS listener; one with an "
            "HTTPS listener takes its own service account %r (its TLS keys go to no other)",
            name,
            identity.spiffe_id,
            key.view.workspace,
            key.gateway,
            key.gateway,
        )


@dataclass(slots=True)
class _Group:
    """The outbound side shared by the sidecar views of one (workspace, cluster, outbound
    port): its resources, wire-ready, and the views that hold them."""

    resources: tuple[Resource, ...] = ()
    errors: tuple[str, ...] = ()
    views: set[str] = field(default_factory=set)
    # Where each resource is in `resources`, by (type URL, name): made when first needed.
    positions: dict[tuple[str, str], int] | None = None


class Mesh:
    """Keeps the cache's views in step with the fleet the aggregator applies."""

    def __init__(
        self,
        cache: SnapshotCache,
        certificates: WorkloadCertificates | None = None,
        site: str | None = None,
    ) -> None:
        self.cache = cache
        self.certificates = certificates
        # A zone's own site: it serves that site's proxies only, and logs the problems of
        # that site's Gateways only (the global reports the others', and does not send the
        # zone their Secrets). None: every site's.
        self.site = site
        self.plane = ServicePlane()
        self.routing_state = RoutingState()
        self._planes = PlaneBuilder()
        self._routing = MeshRouting()
        self._built: BuildCache[Resource] = BuildCache(Resource.of)
        self._groups: dict[GroupKey, _Group] = {}
        self._workspace_groups: dict[str, set[GroupKey]] = {}  # workspace -> its groups
        self._views: dict[str, ViewKey] = {}
        self._gateways: set[str] = set()  # the views of east-west and ingress gateways
        self._fronting: dict[ServiceKey, set[str]] = {}  # own service -> its sidecars' views
        self._identities: dict[str, WorkloadIdentity] = {}  # view -> whose secrets it holds
        self._translated: dict[str, tuple[Resource, ...]] = {}  # view -> resources, no secrets
        # ingress view -> what its resources were translated from (`_translate`)
        self._ingress_inputs: dict[str, tuple[object, ...]] = {}
        # view -> its inbound side, and what it was translated from (own services, grants)
        self._inbound: dict[str, tuple[tuple[object, ...], tuple[Resource, ...]]] = {}
        self._idle_since: dict[str, float] = {}  # view -> since when no stream uses it
        self._owned: dict[Owner, set[str]] = {}  # the views of each identity
        self._problems: set[str] = set()
        self._reported: object = None  # the binding whose problems were logged last
        # Told how long each `apply` took to translate (seconds) and how many views.
        self.translated: Callable[[float, int], None] | None = None
        self.views_updated = 0  # views given a new snapshot by the last `apply`
        self.applied = 0  # fleets applied so far; before the first, proxies are asked to retry
        self.services_changed = 0  # (namespace, name)s the last `apply` found changed

    def apply(self, fleet: Fleet, push: Push | None = None) -> None:
        """Bring every view in use to `fleet`: translate what the change touches and give
        a new snapshot to the views that hold it; what changes is part of `push`.

        Views of a cluster that left the fleet are dropped (their proxies get nothing more).
        """
        started = time.perf_counter()
        before, routing_before = self.plane, self._routing
        change = self._planes.update(fleet)
        self.services_changed = len(change.keys)
        self.plane = self._planes.plane
        self._routing = self.routing_state.update(
            fleet, self.plane, None if change.everything else change.keys
        )
        if self.routing_state.binding is not self._reported:
            self._report_status(fleet)
        if change.everything:  # the sites may have changed
            for name, key in list(self._views.items()):
                if self.plane.site(key.view.cluster) is None:
                    self._forget(name)
        everything = change.everything or (
            self._routing is not routing_before
            and (
                self._routing.spreads != routing_before.spreads
                or self._routing.networks != routing_before.networks
            )
        )
        workspaces = self._changed_workspaces(change.keys, before, routing_before)
        # Who may see a service of those workspaces: they, and those they grant.
        seeing = workspaces | {g.consumer for w in workspaces for g in self.plane.grants_by(w)}
        if everything:
            touched = list(self._groups)
        else:
            touched = sorted(k for w in seeing for k in self._workspace_groups.get(w, ()))
        # The routing stands (no route or policy names a changed service), and so do the
        # sites and grants: a change of endpoints alone costs a group what it changed.
        endpoints_only = not everything and self._routing is routing_before
        dirty: set[str] = set()
        for group_key in touched:
            group = self._groups[group_key]
            changed = (
                self._update_group(group_key, group, change.keys, before)
                if endpoints_only
                else None
            )
            if changed is None:
                changed = self._translate_group(group_key, group)
            if changed:
                dirty.update(group.views)
        if everything:
            dirty.update(self._views)
        if self._gateways and not everything:
            dirty.update(self._gateways_touched(change.keys, before, routing_before))
        for service_key in change.keys:  # sidecars whose own service changed
            dirty.update(self._fronting.get(service_key, ()))
        for name in sorted(dirty):
            self._translate(name, self._views[name], push)
        self.views_updated = len(dirty)
        self.applied += 1
        if self.translated is not None:
            self.translated(time.perf_counter() - started, len(dirty))

    def _changed_workspaces(
        self, keys: frozenset[ServiceKey], before: ServicePlane, routing_before: MeshRouting
    ) -> set[str]:
        """The workspaces whose services changed (before or after), and those of every
        route that changed: the route's own and its parents'."""
        workspaces = {
            service.workspace
            for key in keys
            for plane in (before, self.plane)
            for service in plane.named(*key)
        }
        if self._routing is routing_before:
            return workspaces
        old = {route_key(b.route): b for b in routing_before.routes}
        new = {route_key(b.route): b for b in self._routing.routes}
        for key in old.keys() | new.keys():
            if old.get(key) != new.get(key):
                for bound in (old.get(key), new.get(key)):
                    if bound is not None:
                        workspaces.add(bound.route.namespace)
                        workspaces.update(
                            s.workspace for parent in bound.parents for s in parent.services
                        )
        return workspaces

    def _gateways_touched(
        self, keys: frozenset[ServiceKey], before: ServicePlane, routing_before: MeshRouting
    ) -> set[str]:
        """The gateway views a change touches: an east-west gateway when what it serves of
        a changed service (its cluster's endpoints of a cluster-set service) changed, an
        ingress gateway when the routing did (its routes, their backends, its Gateway)."""
        reached: set[str] = set()
        for key in keys:
            old, new = before.named(*key), self.plane.named(*key)
            clusters = {
                endpoint.locality.cluster
                for service in (*old, *new)
                if not service.scope
                for port in service.ports
                for endpoint in port.endpoints
            }
            reached.update(c for c in clusters if _gateway_share(old, c) != _gateway_share(new, c))
        routing_changed = self._routing is not routing_before
        touched: set[str] = set()
        for name in self._gateways:
            view = self._views[name].view
            east_west = view.role == "gateway" and view.cluster in reached
            if east_west or (view.role == "ingress" and routing_changed):
                touched.add(name)
        return touched

    def view_key(self, view: str) -> ViewKey | None:
        """What a view in use was resolved from (its role, cluster and workspace)."""
        return self._views.get(view)

    def _report_status(self, fleet: Fleet) -> None:
        """Log each route, Gateway or policy condition that newly went wrong, once."""
        binding = self._reported = self.routing_state.binding
        if self.site is not None:
            elsewhere = {
                (g.namespace, g.name) for g in fleet.routing.gateways if g.cluster != self.site
            }
            own = [s for s in binding.gateway_statuses if (s.namespace, s.name) not in elsewhere]
            binding = replace(binding, gateway_statuses=tuple(own))
        problems = {str(x) for x in status_lines(binding) if not x.ok}
        for problem in sorted(problems - self._problems):
            log.warning("%s", problem)
        self._problems = problems

    def resolve_view(self, node: Any, peer: Peer) -> str:
        """The `ViewResolver` of the xDS server: refuses what the fleet cannot serve."""
        key = claim(node)
        cluster = key.view.cluster
        if self.site is not None and cluster != self.site:
            # Its mesh holds the fleet as seen from its site: another cluster's view would
            # be built from what the zone does not read (that site's own endpoints).
            raise PermissionError(
                f"this zone serves the proxies of site {self.site!r} only; the node claims "
                f"cluster {cluster!r}: bootstrap it to its own site's zone or to the global"
            )
        if not self.applied:  # a proxy of any cluster would be refused as unknown
            raise ViewUnavailableError("the control plane is loading the fleet: retry")
        identity: WorkloadIdentity | None = None
        if self.plane.site(cluster) is None:
            raise PermissionError(f"cluster {cluster!r} is not in the fleet")
        ingress = self._ingress(key) if key.view.role == "ingress" else None
        if key.view.role == "ingress" and ingress is None:
            raise PermissionError(
                f"no accepted Gateway {key.view.workspace}/{key.gateway} in cluster {cluster}"
            )
        if self.certificates is not None:
            gateway = self.gateway_identity(cluster) if key.view.role == "gateway" else None
            https = ingress is not None and ingress.gateway.terminates_tls
            key, identity = admit(key, node, peer, self.certificates.trust_domain, gateway, https)
        name = str(key)
        held = self._identities.get(name)
        if held is not None and held != identity:  # a view holds one identity's secrets
            raise PermissionError(f"view {name} is of {held}, not of {identity}")
        self._idle_since.pop(name, None)  # in use again
        if name not in self._views:
            owner = _owner(key, identity)
            owned = self._owned.setdefault(owner, set())
            if len(owned) >= MAX_VIEWS_PER_IDENTITY:
                raise LimitExceededError(
                    f"{_described(owner)} has {len(owned)} views, the most one identity may "
                    "have (one per distinct outbound port, inbound service or address its "
                    "proxies claim); a view no proxy uses is dropped after 10 minutes"
                )
            owned.add(name)
            if ingress is not None and identity is not None:
                _warn_if_not_own(name, key, identity)
            self._add(name, key)
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

    def _add(self, name: str, key: ViewKey) -> None:
        self._views[name] = key
        if key.view.role != "sidecar":
            self._gateways.add(name)
        elif key.inbound is not None:
            own = (key.view.workspace, key.inbound.service)
            self._fronting.setdefault(own, set()).add(name)

    def _forget(self, name: str) -> None:
        key = self._views.pop(name)
        owner = _owner(key, self._identities.get(name))
        owned = self._owned.get(owner)
        if owned is not None:
            owned.discard(name)
            if not owned:
                del self._owned[owner]
        self._gateways.discard(name)
        if key.inbound is not None:
            own = (key.view.workspace, key.inbound.service)
            fronting = self._fronting.get(own)
            if fronting is not None:
                fronting.discard(name)
                if not fronting:
                    del self._fronting[own]
        self._identities.pop(name, None)
        self._translated.pop(name, None)
        self._ingress_inputs.pop(name, None)
        self._inbound.pop(name, None)
        self._idle_since.pop(name, None)
        group_key = _group_key(key)
        group = self._groups.get(group_key) if group_key is not None else None
        if group_key is not None and group is not None:
            group.views.discard(name)
            if not group.views:  # nothing holds its resources any longer
                del self._groups[group_key]
                groups = self._workspace_groups[group_key[0]]
                groups.discard(group_key)
                if not groups:
                    del self._workspace_groups[group_key[0]]
                self._built.release(group_key)

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
        for g in self.plane.grants_by(ref.namespace):
            if g.service not in (None, ref.name) or g.consumer == ref.namespace:
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

    def _keys_refused(self, name: str, bound: BoundGateway) -> str | None:
        """Why an ingress view may not hold its Gateway's TLS keys, if it may not: the
        Gateway has an HTTPS listener and the view's identity is not the Gateway's own."""
        identity = self._identities.get(name)
        if identity is None or not bound.gateway.terminates_tls:
            return None  # without certificates, nobody's identity is known
        gateway = bound.gateway
        return ingress_refusal(identity.spiffe_id, gateway.namespace, gateway.name)

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

    def _translate_group(self, key: GroupKey, group: _Group) -> bool:
        """Translate a group's outbound side again; whether its resources changed."""
        workspace, cluster, outbound_port, proxyless = key
        view = ProxyView(workspace, cluster, "sidecar")
        services = visible_services(self.plane, workspace, cluster)
        options = SidecarOptions(
            outbound_port=outbound_port, mtls=self._mtls(), api_listeners=proxyless
        )
        with self._built.owner(key):
            translation = translate_sidecar(
                services, view, self.plane.site(cluster), options, self._routing, self._built
            )
        resources = tuple(self._built.wrapped(m) for m in translation.resources)
        for error in translation.errors:
            if error not in group.errors:
                log.error("views %s/%s:%d: %s", cluster, workspace, outbound_port, error)
        group.errors = translation.errors
        if len(resources) == len(group.resources) and all(
            a is b or (a.name, a.version) == (b.name, b.version)
            for a, b in zip(resources, group.resources, strict=True)
        ):
            return False
        group.resources = resources
        group.positions = None
        return True

    def _update_group(
        self, key: GroupKey, group: _Group, changed: frozenset[ServiceKey], before: ServicePlane
    ) -> bool | None:
        """Bring a group's outbound side up to a change of the `changed` services' endpoints
        alone: only their Clusters and ClusterLoadAssignments are built again and put in
        place of the last ones (`translate_endpoint_change`). Whether its resources changed;
        None when the change is more than that (translate the group whole)."""
        workspace, cluster, outbound_port, proxyless = key
        view = ProxyView(workspace, cluster, "sidecar")
        site = self.plane.site(cluster)
        options = SidecarOptions(
            outbound_port=outbound_port, mtls=self._mtls(), api_listeners=proxyless
        )
        rebuilt: list[Resource] = []
        with self._built.owner(key, keeping=True):
            for service_key in changed:
                messages = translate_endpoint_change(
                    visible_named(before, workspace, cluster, service_key),
                    visible_named(self.plane, workspace, cluster, service_key),
                    view,
                    site,
                    options,
                    self._routing,
                    self._built,
                )
                if messages is None:
                    return None
                rebuilt.extend(self._built.wrapped(m) for m in messages)
        if group.positions is None:
            group.positions = {(r.type_url, r.name): i for i, r in enumerate(group.resources)}
        resources = list(group.resources)
        differs = False
        for resource in rebuilt:
            at = group.positions.get((resource.type_url, resource.name))
            if at is None:  # not in the last translation: translate whole
                return None
            differs = differs or resources[at].version != resource.version
            resources[at] = resource
        if not differs:
            return False
        group.resources = tuple(resources)
        return True

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
                self._ingress_inputs.pop(name, None)
            elif (refusal := self._keys_refused(name, bound)) is not None:
                # The Gateway gained an HTTPS listener: its keys are not this identity's.
                log.error("view %s: %s", name, refusal)
                self._forget(name)
                self.cache.revoke(name, refusal)
                return False
            else:
                routes = tuple(
                    r
                    for r in self.routing_state.binding.routes
                    if any(p.gateway == bound.gateway for p in r.parents)
                )
                options = SidecarOptions(mtls=self._mtls())
                routing = self._routing
                # What the translation reads: unchanged (another Gateway's route or Secret
                # changed), its resources are too, and nothing is done again.
                inputs = (bound, routes, site, options, routing.spreads, routing.networks)
                if name in self._translated and self._ingress_inputs.get(name) == inputs:
                    return True
                self._ingress_inputs[name] = inputs
                translation = ingress_gateway(bound, routes, view, site, options, routing)
        else:
            return self._translate_sidecar(name, key, push)
        for error in translation.errors:
            log.error("view %s: %s", name, error)
        resources = tuple(Resource.of(m) for m in translation.resources)
        self._translated[name] = resources
        return self._snapshot(name, resources, push)

    def _translate_sidecar(self, name: str, key: ViewKey, push: Push | None) -> bool:
        """A sidecar view: its group's outbound side, and its own inbound side."""
        group_key = _group_key(key)
        assert group_key is not None
        group = self._groups.get(group_key)
        if group is None:
            group = self._groups[group_key] = _Group()
            self._workspace_groups.setdefault(group_key[0], set()).add(group_key)
            self._translate_group(group_key, group)
        group.views.add(name)
        resources = group.resources
        if key.inbound is not None:
            resources = (*resources, *self._translate_inbound(name, key))
        self._translated[name] = resources
        return self._snapshot(name, resources, push)

    def _translate_inbound(self, name: str, key: ViewKey) -> tuple[Resource, ...]:
        """A sidecar's own inbound side: translated again only when its own service or
        the grants (who may call it) changed."""
        assert key.inbound is not None
        own = self.plane.named(key.view.workspace, key.inbound.service)
        inputs = (own, self.plane.grants)
        last = self._inbound.get(name)
        if last is not None and last[0] == inputs:
            return last[1]
        inbound = translate_inbound(own, key.view, self._options(name, key))
        for error in inbound.errors:
            log.error("view %s: %s", name, error)
        resources = tuple(Resource.of(m) for m in inbound.resources)
        self._inbound[name] = (inputs, resources)
        return resources

    def _snapshot(self, name: str, resources: tuple[Resource, ...], push: Push | None) -> bool:
        """Serve a view's resources, with the SDS secrets of its identity; False (the last
        snapshot stays) when its certificate cannot be issued, e.g. the CA expired."""
        identity = self._identities.get(name)
        if identity is not None and self.certificates is not None:
            try:
                secrets = self.certificates.secrets(identity)
            except CaError as error:
                log.error("view %s keeps its last configuration: %s", name, error)
                return False
            resources = (*resources, *(Resource.of(m) for m in secrets))
        self.cache.set_snapshot(name, Snapshot(resources), push)
        return True
