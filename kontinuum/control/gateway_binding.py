"""Gateways and LocalityPolicies bound to the service plane, with their status. Pure: no I/O.

The rules (`route_binding` says how routes attach to what this binds):

- Gateways: `Accepted` False `Invalid` when the label kontinuum.io/cluster names no cluster of
  the fleet. Per listener: `Accepted` False `UnsupportedProtocol` for any protocol but HTTP,
  and False `UnsupportedValue` for `allowedRoutes.namespaces.from: Selector` without a
  selector or with one Kubernetes would refuse (`label_selectors`: an unknown operator, a
  malformed key or value, values where the operator takes none or none where it needs
  them); `ResolvedRefs` False `InvalidRouteKinds` for route kinds other than HTTPRoute and
  GRPCRoute, which are the default kinds. A Gateway is `Accepted` while one of its listeners
  is (`ListenersNotValid` names the others), and `Programmed` follows `Accepted`: what is
  accepted is handed to the translator. A Gateway of class `kontinuum-east-west` is a
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

from kontinuum.control.label_selectors import selector_problems as label_problems
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
    """An accepted Gateway, with its accepted listeners only."""

    gateway: Gateway
    listeners: tuple[GatewayListener, ...]


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
    if listener.protocol != "HTTP":
        tls = " (TLS termination is not supported yet)" if listener.protocol == "HTTPS" else ""
        return Condition(
            "Accepted",
            "False",
            "UnsupportedProtocol",
            f"kontinuum serves HTTP listeners only, not {listener.protocol}{tls}",
        )
    if problems := selector_problems(listener):
        message = "; ".join(problems)
        return Condition("Accepted", "False", "UnsupportedValue", message)
    return Condition("Accepted", "True", "Accepted")


def selector_problems(listener: GatewayListener) -> list[str]:
    """What is wrong with the namespace selector of a listener with `from: Selector`."""
    if listener.allowed_namespaces != "Selector":
        return []
    at = "allowedRoutes.namespaces.selector"
    if listener.namespace_selector is None:
        return [f"{at}: required with allowedRoutes.namespaces.from: Selector"]
    return [f"invalid {problem}" for problem in label_problems(listener.namespace_selector, at)]


def gateway_status(
    gateway: Gateway, plane: ServicePlane, attached: dict[tuple[str, str, str], int]
) -> GatewayStatus:
    """A Gateway's status; `attached` counts the routes per (namespace, name, listener)."""
    site = plane.site(gateway.cluster)
    listeners: list[ListenerStatus] = []
    invalid: list[str] = []
    for listener in gateway.listeners:
        accepted = listener_condition(listener, gateway.gateway_class)
        good, bad = listener_kinds(listener)
        resolved = (
            Condition(
                "ResolvedRefs", "False", "InvalidRouteKinds", f"no route kind {', '.join(bad)}"
            )
            if bad
            else Condition("ResolvedRefs", "True", "ResolvedRefs")
        )
        if accepted.status != "True":
            invalid.append(listener.name)
        programmed = (
            Condition("Programmed", "True", "Programmed")
            if accepted.status == "True" and site is not None
            else Condition(
                "Programmed",
                "False",
                "Invalid",
                "the listener is not accepted" if site else "the Gateway is not accepted",
            )
        )
        conditions = (
            accepted,
            resolved,
            programmed,
            Condition("Conflicted", "False", "NoConflicts"),
        )
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
    if accepted.status == "True" and gateway.east_west and not gateway.addresses:
        # Sidecars of other networks need an address to reach it: nothing to program.
        message = "an east-west gateway needs spec.addresses (type IPAddress)"
        programmed = Condition("Programmed", "False", "AddressNotAssigned", message)
    return GatewayStatus(
        gateway.namespace,
        gateway.name,
        gateway.file,
        gateway.generation,
        (accepted, programmed),
        tuple(listeners),
    )


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
