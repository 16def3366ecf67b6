"""Gateways and LocalityPolicies bound to the service plane, with their status. Pure: no I/O.

The rules (`route_binding` says how routes attach to what this binds):

- Gateways: `Accepted` False `Invalid` when the label kontinuum.io/cluster names no cluster of
  the fleet. Per listener: `Accepted` False `UnsupportedProtocol` for any protocol but HTTP
  and HTTPS (TLS termination; a `TLS` listener, which would pass TLS through to TLSRoutes,
  is not supported), and False `UnsupportedValue` for `allowedRoutes.namespaces.from:
  Selector` without a selector or with one Kubernetes would refuse (`label_selectors`: an
  unknown operator, a malformed key or value, values where the operator takes none or none
  where it needs them); `ResolvedRefs` False `InvalidRouteKinds` for route kinds other than
  HTTPRoute and GRPCRoute, which are the default kinds, and for an HTTPS listener False
  `InvalidCertificateRef` or `RefNotPermitted` when its certificates cannot be used
  (`gateway_certificates`); then the listener is not `Programmed` (`Invalid`): it is not
  served, and its routes stay attached. Listeners of one port must share a protocol: those
  whose protocol differs from the port's first listener's are `Conflicted`
  (`ProtocolConflict`), not accepted. A Gateway is `Accepted` while one of its listeners is
  (`ListenersNotValid` names the others), and `Programmed` while one of them is: what is
  programmed is handed to the translator. A Gateway of class `kontinuum-east-west` is a
  cluster's east-west gateway: its listener is TLS (mode Passthrough, so that end-to-end
  mTLS passes through it) and no route attaches.
- LocalityPolicies, per target (GEP-713 `Accepted`): False `TargetNotFound` when the Service
  or ServiceImport does not exist; False `Invalid` when the policy names a cluster or region
  the fleet does not have (a typo would otherwise silently send no traffic there); False
  `Conflicted` when an earlier policy already governs the service (a Service and a
  ServiceImport of one name are the same service here). GEP-713 says the oldest policy wins,
  then the first by namespace/name; the fleet files carry no creationTimestamp for policies,
  so the first by name wins. Only an accepted target claims its service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kontinuum.control.gateway_certificates import listener_certificates
from kontinuum.control.label_selectors import selector_problems as label_problems
from kontinuum.control.model import Grant
from kontinuum.control.plane import Condition, PlaneService, ServicePlane
from kontinuum.control.routing import (
    CORE_GROUP,
    EAST_WEST_CLASS,
    EAST_WEST_NAMESPACE,
    GATEWAY_GROUP,
    MCS_GROUP,
    Gateway,
    GatewayListener,
    LocalityPolicy,
    TlsSecret,
)

ROUTE_KINDS: Final = ("HTTPRoute", "GRPCRoute")
SERVICE_KINDS: Final = {
    (CORE_GROUP, "Service"): "Service",
    (MCS_GROUP, "ServiceImport"): "ServiceImport",
}


@dataclass(frozen=True, slots=True)
class ListenerStatus:
    name: str
    supported_kinds: tuple[str, ...]
    attached_routes: int
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    namespace: str
    name: str
    file: str
    generation: int
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


@dataclass(frozen=True, slots=True)
class BoundGateway:
    """An accepted Gateway, with its programmed listeners only, and the Secrets each HTTPS
    listener serves (by listener name)."""

    gateway: Gateway
    listeners: tuple[GatewayListener, ...]
    certificates: tuple[tuple[str, tuple[TlsSecret, ...]], ...] = ()

    def certificates_of(self, listener: GatewayListener) -> tuple[TlsSecret, ...]:
        return next((found for name, found in self.certificates if name == listener.name), ())


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """A LocalityPolicy's condition for one of its targets (GEP-713 ancestor status)."""

    namespace: str
    name: str
    file: str
    target: tuple[str, str]  # (kind, name)
    conditions: tuple[Condition, ...]
    generation: int = 0


@dataclass(frozen=True, slots=True)
class BoundPolicy:
    """A policy and the plane services it governs (its accepted targets)."""

    policy: LocalityPolicy
    services: tuple[PlaneService, ...]


def kind_label(group: str, kind: str) -> str:
    """`group/Kind`, as status messages name a kind."""
    return f"{group}/{kind}" if group else f"{kind} (core group)"


def plane_services(
    plane: ServicePlane, kind: str, namespace: str, name: str
) -> tuple[PlaneService, ...]:
    """A Service: every plane service of that name (any cluster); a ServiceImport: the
    cluster-set one."""
    return tuple(s for s in plane.named(namespace, name) if kind == "Service" or not s.scope)


# --- gateways --------------------------------------------------------------------------------


def listener_kinds(listener: GatewayListener) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The route kinds a listener admits, and the (group/kind) it names that kontinuum lacks."""
    if not listener.allowed_kinds:
        return ROUTE_KINDS, ()
    good = tuple(k for g, k in listener.allowed_kinds if g == GATEWAY_GROUP and k in ROUTE_KINDS)
    bad = tuple(
        kind_label(g, k)
        for g, k in listener.allowed_kinds
        if g != GATEWAY_GROUP or k not in ROUTE_KINDS
    )
    return good, bad


def listener_condition(listener: GatewayListener, gateway_class: str = "") -> Condition:
    """The listener's `Accepted`: only what kontinuum can serve is."""
    if gateway_class == EAST_WEST_CLASS:
        if listener.protocol != "TLS":
            return Condition(
                "Accepted",
                "False",
                "UnsupportedProtocol",
                f"an east-west gateway listens for TLS (mode Passthrough), not {listener.protocol}",
            )
        return Condition(
            "Accepted", "True", "Accepted", "east-west: sidecars of other networks come in here"
        )
    if listener.protocol not in ("HTTP", "HTTPS"):
        passthrough = " (TLS passthrough to TLSRoutes)" if listener.protocol == "TLS" else ""
        return Condition(
            "Accepted",
            "False",
            "UnsupportedProtocol",
            f"kontinuum serves HTTP and HTTPS listeners only, not {listener.protocol}{passthrough}",
        )
    if listener.client_validation:
        return Condition(
            "Accepted",
            "False",
            "UnsupportedValue",
            "tls.frontendValidation (client certificates) is not supported: the listener "
            "would admit clients it was asked to refuse",
        )
    if problems := selector_problems(listener):
        message = "; ".join(problems)
        return Condition("Accepted", "False", "UnsupportedValue", message)
    return Condition("Accepted", "True", "Accepted")


def protocol_conflicts(gateway: Gateway) -> dict[str, str]:
    """The listeners whose protocol differs from their port's first listener's, and that
    protocol: one Envoy listener per port speaks one protocol."""
    first: dict[int, str] = {}
    conflicts: dict[str, str] = {}
    for listener in gateway.listeners:
        protocol = first.setdefault(listener.port, listener.protocol)
        if listener.protocol != protocol:
            conflicts[listener.name] = protocol
    return conflicts


def selector_problems(listener: GatewayListener) -> list[str]:
    """What is wrong with the namespace selector of a listener with `from: Selector`."""
    if listener.allowed_namespaces != "Selector":
        return []
    at = "allowedRoutes.namespaces.selector"
    if listener.namespace_selector is None:
        return [f"{at}: required with allowedRoutes.namespaces.from: Selector"]
    return [f"invalid {problem}" for problem in label_problems(listener.namespace_selector, at)]


def gateway_status(
    gateway: Gateway,
    plane: ServicePlane,
    attached: dict[tuple[str, str, str], int],
    secrets: dict[tuple[str, str], TlsSecret] | None = None,
    grants: tuple[Grant, ...] = (),
) -> tuple[GatewayStatus, BoundGateway | None]:
    """A Gateway's status, and what of it is programmed (None when it is not accepted);
    `attached` counts the routes per (namespace, name, listener)."""
    site = plane.site(gateway.cluster)
    listeners: list[ListenerStatus] = []
    invalid: list[str] = []
    programmed_listeners: list[GatewayListener] = []
    certificates: list[tuple[str, tuple[TlsSecret, ...]]] = []
    conflicts = protocol_conflicts(gateway)
    for listener in gateway.listeners:
        accepted = listener_condition(listener, gateway.gateway_class)
        conflicted = Condition("Conflicted", "False", "NoConflicts")
        if listener.name in conflicts and accepted.status == "True":
            message = (
                f"port {listener.port} is {conflicts[listener.name]} for an earlier listener: "
                "listeners of one port share a protocol"
            )
            conflicted = Condition("Conflicted", "True", "ProtocolConflict", message)
            accepted = Condition("Accepted", "False", "ProtocolConflict", message)
        good, bad = listener_kinds(listener)
        served, unresolved = listener_certificates(gateway, listener, secrets or {}, grants)
        resolved = (
            Condition(
                "ResolvedRefs", "False", "InvalidRouteKinds", f"no route kind {', '.join(bad)}"
            )
            if bad
            else unresolved or Condition("ResolvedRefs", "True", "ResolvedRefs")
        )
        if accepted.status != "True":
            invalid.append(listener.name)
        if accepted.status == "True" and site is not None and unresolved is None:
            programmed = Condition("Programmed", "True", "Programmed")
            if not gateway.east_west:  # an east-west gateway's listener is no ingress's
                programmed_listeners.append(listener)
            if served:
                certificates.append((listener.name, served))
        else:
            why = "the Gateway is not accepted"
            if site is not None:
                why = "the listener is not accepted"
            if site is not None and accepted.status == "True":
                why = "its certificates cannot be used (see ResolvedRefs)"
            programmed = Condition("Programmed", "False", "Invalid", why)
        conditions = (accepted, resolved, programmed, conflicted)
        count = attached.get((gateway.namespace, gateway.name, listener.name), 0)
        kinds = good if accepted.status == "True" else ()
        listeners.append(ListenerStatus(listener.name, kinds, count, conditions))
    if site is None:
        message = f"label kontinuum.io/cluster names {gateway.cluster!r}, no cluster of the fleet"
        accepted = Condition("Accepted", "False", "Invalid", message)
    elif gateway.east_west and gateway.namespace != EAST_WEST_NAMESPACE:
        message = (
            f"an east-west Gateway is honoured in namespace {EAST_WEST_NAMESPACE} only: it "
            "receives every workspace's endpoints of its cluster"
        )
        accepted = Condition("Accepted", "False", "Invalid", message)
    elif len(invalid) == len(gateway.listeners):
        accepted = Condition("Accepted", "False", "ListenersNotValid", "no listener is accepted")
    elif invalid:
        message = f"listeners not accepted: {', '.join(invalid)}"
        accepted = Condition("Accepted", "True", "ListenersNotValid", message)
    else:
        accepted = Condition("Accepted", "True", "Accepted")
    programmed = (
        Condition("Programmed", "True", "Programmed")
        if accepted.status == "True"
        else Condition("Programmed", "False", "Invalid", accepted.message)
    )
    if accepted.status == "True" and not gateway.east_west and not programmed_listeners:
        message = "no listener is programmed"
        programmed = Condition("Programmed", "False", "Invalid", message)
    if accepted.status == "True" and gateway.east_west and not gateway.addresses:
        # Sidecars of other networks need an address to reach it: nothing to program.
        message = "an east-west gateway needs spec.addresses (type IPAddress)"
        programmed = Condition("Programmed", "False", "AddressNotAssigned", message)
    status = GatewayStatus(
        gateway.namespace,
        gateway.name,
        gateway.file,
        gateway.generation,
        (accepted, programmed),
        tuple(listeners),
    )
    if accepted.status != "True":
        return status, None
    return status, BoundGateway(gateway, tuple(programmed_listeners), tuple(certificates))


# --- policies --------------------------------------------------------------------------------


def bind_policies(
    policies: tuple[LocalityPolicy, ...], plane: ServicePlane
) -> tuple[tuple[BoundPolicy, ...], tuple[PolicyStatus, ...]]:
    """The services each policy governs, and each (policy, target)'s status, in name order."""
    clusters = {s.name for s in plane.sites}
    regions = {s.region for s in plane.sites if s.region}
    owners: dict[tuple[str, str], str] = {}
    bound: list[BoundPolicy] = []
    statuses: list[PolicyStatus] = []
    for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
        named = [c for c, _ in policy.weights] + [c for s in policy.failover for c in s.clusters]
        unknown = [f"cluster {c!r}" for c in dict.fromkeys(named) if c not in clusters] + [
            f"region {r!r}"
            for r in dict.fromkeys(r for s in policy.failover for r in s.regions)
            if r not in regions
        ]
        governed: dict[tuple[str, str], PlaneService] = {}
        for kind, name in policy.targets:
            services = plane_services(plane, kind, policy.namespace, name)
            owner = owners.get((policy.namespace, name), policy.name)
            if not services:
                exported = " exported from any cluster" if kind == "ServiceImport" else ""
                message = f"no {kind} {policy.namespace}/{name}{exported}"
                condition = Condition("Accepted", "False", "TargetNotFound", message)
            elif unknown:
                message = f"the fleet has no {', '.join(unknown)}"
                condition = Condition("Accepted", "False", "Invalid", message)
            elif owner != policy.name:
                message = (
                    f"LocalityPolicy {policy.namespace}/{owner} governs {name} too and wins: "
                    "the first by name (policies in the fleet files have no creationTimestamp)"
                )
                condition = Condition("Accepted", "False", "Conflicted", message)
            else:
                owners[policy.namespace, name] = policy.name
                governed.update({(s.name, s.scope): s for s in services})
                condition = Condition("Accepted", "True", "Accepted")
            target = (kind, name)
            statuses.append(
                PolicyStatus(
                    policy.namespace,
                    policy.name,
                    policy.file,
                    target,
                    (condition,),
                    policy.generation,
                )
            )
        if governed:
            bound.append(BoundPolicy(policy, tuple(governed[k] for k in sorted(governed))))
    return tuple(bound), tuple(statuses)
