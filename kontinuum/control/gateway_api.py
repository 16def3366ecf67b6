"""Gateway API routes, Gateways and LocalityPolicies, parsed into the routing IR. Pure: no I/O.

Reads the fleet-wide documents (the ones `parse_fleet_objects` reads) and picks out
`gateway.networking.k8s.io/v1` `HTTPRoute`, `GRPCRoute` and `Gateway`, and
`policy.kontinuum.io/v1alpha1` `LocalityPolicy`. The line between an error and a status:

- What the Gateway API CRDs would make the API server reject is a `ConfigError` naming file,
  object and field, and the object is left out whole: wrong types, missing required fields,
  unknown enum values, malformed names and hostnames, the CRDs' list limits (hostnames 16,
  parentRefs 32, rules 16, matches 64 per HTTPRoute rule and 8 per GRPCRoute rule, 128 per
  route, filters 16, backendRefs 16, headers 16, listeners 64) and their validation rules
  (path syntax, filter repetition, RequestRedirect with URLRewrite or with backendRefs,
  ReplacePrefixMatch without exactly one PathPrefix match, a Service backendRef without a
  port, a backendRequest timeout longer than the request timeout, indistinct parentRefs and
  listeners). Duplicates of one kind/namespace/name are errors too.
- What the schema accepts but kontinuum may not be able to serve parses, and the binding
  (`route_binding`) reports it in status as the Gateway API asks: regular expressions RE2
  refuses, listener protocols other than HTTP, `ExtensionRef`, `CORS` and `ExternalAuth`
  filters, backendRef filters other than header modifiers, references to unknown kinds or
  to missing objects.

A `Gateway` must say which fleet cluster its ingress proxies run in, with the label
`kontinuum.io/cluster: <ClusterProfile name>`; it is required because a fleet-wide Gateway
would otherwise run nowhere. Every Gateway in the fleet files is kontinuum's, whatever its
`gatewayClassName` (the fleet format has no GatewayClass objects).

`LocalityPolicy` is kontinuum's own kind, a GEP-713 direct policy attachment, because the
Gateway API has no field for how a service's traffic spreads over clusters:

    apiVersion: policy.kontinuum.io/v1alpha1
    kind: LocalityPolicy
    metadata: {name: hello-split, namespace: demo}
    spec:
      targetRefs: [{group: "", kind: Service, name: hello}]   # or multicluster.x-k8s.io
      weights:                                                 #    ServiceImport
      - {cluster: eu-central, weight: 80}     # split by weight; an unnamed cluster gets none
      - {cluster: us-east, weight: 20}
      # or, instead of weights, a priority order (what no step names comes last):
      # failover: [{clusters: [eu-central]}, {regions: [us-east-1]}]

Its targets are in its own namespace (GEP-713 local references: no `namespace` field).

Routes are read by `gateway_routes`, the Gateway API's field formats by `gateway_fields`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from kontinuum.control.fleet import _NOT_FLEET_WIDE, CLUSTER_KINDS, FLEET_KINDS, _expand, _header
from kontinuum.control.gateway_certificates import read_secret
from kontinuum.control.gateway_fields import (
    api_group,
    choice,
    hostname,
    kind_name,
    length,
    limited,
    number,
    object_meta,
    texts,
)
from kontinuum.control.gateway_routes import read_route
from kontinuum.control.kube_limits import check_object_meta
from kontinuum.control.label_selectors import LabelRequirement, LabelSelector
from kontinuum.control.model import ConfigError
from kontinuum.control.objects import (
    Document,
    ObjectReader,
    dns1035_label,
    dns_label,
    dns_subdomain,
    label_value,
)
from kontinuum.control.routing import (
    CORE_GROUP,
    GATEWAY_GROUP,
    MCS_GROUP,
    CertificateRef,
    FailoverStep,
    Gateway,
    GatewayListener,
    LocalityPolicy,
    Namespace,
    NamespacesFrom,
    Route,
    RoutingConfig,
    TlsMode,
    TlsSecret,
)

CLUSTER_LABEL: Final = "kontinuum.io/cluster"
ROUTING_KINDS: Final = (
    "HTTPRoute",
    "GRPCRoute",
    "Gateway",
    "LocalityPolicy",
    "Secret",
    "Namespace",
)
# The most entries of a namespace selector's matchLabels, matchExpressions and values: the
# CRD sets none; kontinuum bounds what it reads.
MAX_SELECTOR_ENTRIES: Final = 64
NAMESPACES_FROM: Final[tuple[NamespacesFrom, ...]] = ("All", "Selector", "Same")
TLS_MODES: Final[tuple[TlsMode, ...]] = ("Terminate", "Passthrough")
_PROTOCOL: Final = re.compile(  # a Gateway API ProtocolType: a name, or domain/name
    r"^([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
    r"|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+)$"
)


# --- gateways and policies -------------------------------------------------------------------


def _listener(obj: ObjectReader, path: str, raw: dict[str, object]) -> GatewayListener:
    name = obj.string(raw, "name", f"{path}.name", required=True, check=dns_subdomain) or ""
    host = obj.string(raw, "hostname", f"{path}.hostname", check=hostname)
    port = number(obj, raw, "port", f"{path}.port", 1, 65535, required=True) or 0
    protocol = obj.string(raw, "protocol", f"{path}.protocol", required=True, check=length(255))
    if protocol is not None and not _PROTOCOL.match(protocol):
        obj.error(f"{path}.protocol", f"must be a protocol name such as HTTP, got {protocol!r}")
    protocol = protocol or ""
    tls_mode: TlsMode | None = None
    certificates: tuple[CertificateRef, ...] = ()
    tls = raw.get("tls")
    client_validation = isinstance(tls, dict) and tls.get("frontendValidation") is not None
    if protocol.upper() in ("HTTP", "TCP", "UDP") and tls is not None:
        obj.error(f"{path}.tls", f"must not be set for protocol {protocol}")
    else:
        tls_mode, certificates = _listener_tls(obj, path, raw, protocol)
    if protocol.upper() in ("TCP", "UDP") and host:
        obj.error(f"{path}.hostname", f"must not be set for protocol {protocol}")
    allowed = obj.mapping(raw, "allowedRoutes", f"{path}.allowedRoutes")
    at = f"{path}.allowedRoutes"
    namespaces = obj.mapping(allowed, "namespaces", f"{at}.namespaces")
    where = choice(obj, namespaces, "from", f"{at}.namespaces.from", NAMESPACES_FROM) or "Same"
    selector = None
    if namespaces.get("selector") is not None:
        selector = _selector(obj, namespaces, f"{at}.namespaces.selector")
    kinds: list[tuple[str, str]] = []
    for kind_path, entry in limited(obj, allowed, "kinds", f"{at}.kinds", 8):
        group = obj.string(entry, "group", f"{kind_path}.group", check=api_group)
        kind = obj.string(entry, "kind", f"{kind_path}.kind", required=True, check=kind_name)
        if kind is not None:
            kinds.append((GATEWAY_GROUP if group is None else group, kind))
    return GatewayListener(
        name,
        port,
        protocol,
        host,
        where,
        tuple(kinds),
        tls_mode=tls_mode,
        certificate_refs=certificates,
        client_validation=client_validation,
        namespace_selector=selector,
    )


def _listener_tls(
    obj: ObjectReader, path: str, raw: dict[str, object], protocol: str
) -> tuple[TlsMode | None, tuple[CertificateRef, ...]]:
    """A listener's `tls`: its mode (Terminate by default) and certificate refs, with the
    CRD's rules: HTTPS needs `tls`, in mode Terminate, and Terminate needs a certificate
    ref or options."""
    at = f"{path}.tls"
    if raw.get("tls") is None:
        if protocol == "HTTPS":
            obj.error(at, "required for protocol HTTPS (its certificateRefs)")
        return None, ()
    tls = obj.mapping(raw, "tls", at)
    mode = choice(obj, tls, "mode", f"{at}.mode", TLS_MODES) or "Terminate"
    if protocol == "HTTPS" and mode != "Terminate":
        obj.error(f"{at}.mode", "must be Terminate for protocol HTTPS")
    refs: list[CertificateRef] = []
    for ref_path, entry in limited(obj, tls, "certificateRefs", f"{at}.certificateRefs", 64):
        group = obj.string(entry, "group", f"{ref_path}.group", check=api_group)
        kind = obj.string(entry, "kind", f"{ref_path}.kind", check=kind_name)
        name = obj.string(entry, "name", f"{ref_path}.name", required=True, check=length(253))
        namespace = obj.string(entry, "namespace", f"{ref_path}.namespace", check=dns_label)
        refs.append(
            CertificateRef(
                namespace or obj.namespace,
                name or "",
                CORE_GROUP if group is None else group,
                kind or "Secret",
            )
        )
    options = obj.mapping(tls, "options", f"{at}.options")
    if mode == "Terminate" and not refs and not options:
        obj.error(at, "certificateRefs or options must be set for mode Terminate")
    return mode, tuple(refs)


def _selector(obj: ObjectReader, m: dict[str, object], path: str) -> LabelSelector:
    """A LabelSelector's structure, as the CRD's schema checks it; what Kubernetes would
    refuse in its keys, operators and values is the binding's to report."""
    raw = obj.mapping(m, "selector", path)
    labels = obj.mapping(raw, "matchLabels", f"{path}.matchLabels")
    match_labels: dict[str, str] = {}
    if len(labels) > MAX_SELECTOR_ENTRIES:
        message = f"must hold at most {MAX_SELECTOR_ENTRIES} entries, got {len(labels)}"
        obj.error(f"{path}.matchLabels", message)
        labels = {}
    for key in labels:
        at = f"{path}.matchLabels[{key}]"
        if not isinstance(key, str):
            obj.error(at, "the key must be a string (quote it)")
        else:  # null: empty, as kubectl reads it
            match_labels[key] = obj.string(labels, key, at) or ""
    requirements: list[LabelRequirement] = []
    expressions = f"{path}.matchExpressions"
    for at, entry in limited(obj, raw, "matchExpressions", expressions, MAX_SELECTOR_ENTRIES):
        label = obj.string(entry, "key", f"{at}.key", required=True)
        operator = obj.string(entry, "operator", f"{at}.operator", required=True)
        values = tuple(
            value
            for _, value in texts(obj, entry, "values", f"{at}.values", MAX_SELECTOR_ENTRIES, _any)
        )
        if label is not None and operator is not None:
            requirements.append(LabelRequirement(label, operator, values))
    return LabelSelector(tuple(sorted(match_labels.items())), tuple(requirements))


def _any(_: str) -> None:
    return None


def _namespace(obj: ObjectReader) -> Namespace:
    check_object_meta(obj)
    return Namespace(obj.name, obj.doc.file, tuple(sorted(obj.labels().items())))


def _gateway(obj: ObjectReader) -> Gateway:
    check_object_meta(obj)
    _, generation = object_meta(obj)
    label = f"metadata.labels[{CLUSTER_LABEL}]"
    cluster = obj.labels().get(CLUSTER_LABEL)
    if cluster is None and not any(e.field == label for e in obj.errors):
        obj.error(label, "required: it names the cluster (ClusterProfile) this gateway runs in")
    elif cluster is not None and (problem := dns_label(cluster)):
        obj.error(label, problem)
    spec = obj.mapping(obj.body, "spec", "spec", required=True)
    class_name = obj.string(spec, "gatewayClassName", "spec.gatewayClassName", True, length(253))
    listeners: list[GatewayListener] = []
    names: dict[str, str] = {}
    distinct: dict[tuple[int, str, str | None], str] = {}
    for path, raw in limited(obj, spec, "listeners", "spec.listeners", 64, required=True):
        listener = _listener(obj, path, raw)
        if listener.name in names:
            obj.error(
                f"{path}.name",
                f"duplicate listener {listener.name!r} (also {names[listener.name]})",
            )
        names.setdefault(listener.name, path)
        key = (listener.port, listener.protocol, listener.hostname)
        if key in distinct:
            obj.error(path, f"same port, protocol and hostname as {distinct[key]}")
        distinct.setdefault(key, path)
        listeners.append(listener)
    addresses: list[str] = []
    for path, raw in limited(obj, spec, "addresses", "spec.addresses", 16):
        kind = obj.string(raw, "type", f"{path}.type") or "IPAddress"
        value = obj.string(raw, "value", f"{path}.value", required=True)
        if kind != "IPAddress":
            obj.error(f"{path}.type", f"kontinuum listens on IP addresses only, got {kind!r}")
        elif value is not None:
            try:
                addresses.append(str(ipaddress.ip_address(value)))
            except ValueError:
                obj.error(f"{path}.value", f"must be an IP address, got {value!r}")
    return Gateway(
        obj.namespace,
        obj.name,
        obj.doc.file,
        class_name or "",
        cluster or "",
        tuple(listeners),
        generation,
        tuple(addresses),
    )


_TARGET_KINDS: Final = {CORE_GROUP: "Service", MCS_GROUP: "ServiceImport"}


def _policy(obj: ObjectReader) -> LocalityPolicy:
    check_object_meta(obj)
    spec = obj.mapping(obj.body, "spec", "spec", required=True)
    targets: dict[tuple[str, str], str] = {}
    for path, raw in limited(obj, spec, "targetRefs", "spec.targetRefs", 16, required=True):
        group = obj.string(raw, "group", f"{path}.group", required=True)
        kind = obj.string(raw, "kind", f"{path}.kind", required=True)
        name = obj.string(raw, "name", f"{path}.name", required=True, check=dns1035_label)
        if raw.get("namespace") is not None:
            obj.error(f"{path}.namespace", "must not be set: a policy targets its own namespace")
        if group is not None and group not in _TARGET_KINDS:
            obj.error(
                f"{path}.group",
                f'must be "" (Service) or {MCS_GROUP} (ServiceImport), got {group!r}',
            )
        elif group is not None and kind is not None and kind != _TARGET_KINDS[group]:
            expected = _TARGET_KINDS[group]
            obj.error(f"{path}.kind", f"must be {expected} in group {group!r}, got {kind!r}")
        elif kind is not None and name is not None:
            if (kind, name) in targets:
                obj.error(path, f"duplicate target {kind} {name} (also {targets[kind, name]})")
            targets.setdefault((kind, name), path)
    weights: dict[str, int] = {}
    where: dict[str, str] = {}
    for path, raw in limited(obj, spec, "weights", "spec.weights", 64):
        cluster = obj.string(raw, "cluster", f"{path}.cluster", required=True, check=dns_label)
        weight = number(obj, raw, "weight", f"{path}.weight", 0, 1_000_000, required=True)
        if cluster is not None and cluster in weights:
            obj.error(f"{path}.cluster", f"duplicate cluster {cluster!r} (also {where[cluster]})")
        elif cluster is not None and weight is not None:
            weights[cluster], where[cluster] = weight, path
    if weights and not any(weights.values()):
        obj.error("spec.weights", "at least one weight must be above 0")
    steps: list[FailoverStep] = []
    named: dict[tuple[str, str], str] = {}
    for path, raw in limited(obj, spec, "failover", "spec.failover", 16):
        if (raw.get("clusters") is None) == (raw.get("regions") is None):
            obj.error(path, "must set exactly one of clusters or regions")
            continue
        key = "clusters" if raw.get("clusters") is not None else "regions"
        check = dns_label if key == "clusters" else label_value
        found = texts(obj, raw, key, f"{path}.{key}", 64, check)
        if isinstance(raw[key], list) and not raw[key]:
            obj.error(f"{path}.{key}", "must hold at least one entry")
        for at, value in found:
            if (key, value) in named:
                obj.error(at, f"{value!r} is already in {named[key, value]}")
            named.setdefault((key, value), at)
        values = tuple(v for _, v in found)
        steps.append(
            FailoverStep(clusters=values) if key == "clusters" else FailoverStep(regions=values)
        )
    if spec.get("weights") and spec.get("failover"):
        obj.error(
            "spec",
            "weights and failover cannot both be set: one spreads traffic by weight, "
            "the other by priority",
        )
    elif not spec.get("weights") and not spec.get("failover") and not obj.errors:
        obj.error("spec", "one of weights or failover is required")
    _, generation = object_meta(obj)
    return LocalityPolicy(
        obj.namespace,
        obj.name,
        obj.doc.file,
        tuple(sorted(targets)),
        tuple(sorted(weights.items())),
        tuple(steps),
        generation,
    )


# --- the fleet's routing ---------------------------------------------------------------------


def parse_routing(docs: Iterable[Document]) -> tuple[RoutingConfig, list[ConfigError]]:
    """The routes, Gateways, LocalityPolicies and Namespaces of the fleet-wide documents,
    sorted by kind, namespace and name.

    Reads the same documents as `parse_fleet_objects` and reports only these kinds' errors.
    An object with any error is left out whole; the others still load.
    """
    routes: list[Route] = []
    gateways: list[Gateway] = []
    policies: list[LocalityPolicy] = []
    secrets: list[TlsSecret] = []
    namespaces: list[Namespace] = []
    seen: dict[tuple[str, str, str], str] = {}
    errors: list[ConfigError] = []
    for doc in _expand(docs, []):
        obj, kind = _header(doc, FLEET_KINDS, CLUSTER_KINDS, _NOT_FLEET_WIDE)
        if kind not in ROUTING_KINDS:
            continue
        if not obj.errors:
            key = (kind, obj.namespace, obj.name)
            if key in seen:
                obj.error("metadata.name", f"duplicate {kind}, also in {seen[key]}")
            seen.setdefault(key, doc.file)
        if obj.errors:
            errors.extend(obj.errors)
            continue
        if kind in ("HTTPRoute", "GRPCRoute"):
            route = read_route(obj, "HTTPRoute" if kind == "HTTPRoute" else "GRPCRoute")
            if not obj.errors:
                routes.append(route)
        elif kind == "Gateway":
            gateway = _gateway(obj)
            if not obj.errors:
                gateways.append(gateway)
        elif kind == "Secret":
            check_object_meta(obj)
            secret = read_secret(obj)
            if not obj.errors:
                secrets.append(secret)
        elif kind == "Namespace":
            namespace = _namespace(obj)
            if not obj.errors:
                namespaces.append(namespace)
        else:
            policy = _policy(obj)
            if not obj.errors:
                policies.append(policy)
        errors.extend(obj.errors)
    config = RoutingConfig(
        routes=tuple(sorted(routes, key=lambda r: (r.kind, r.namespace, r.name))),
        gateways=tuple(sorted(gateways, key=lambda g: (g.namespace, g.name))),
        policies=tuple(sorted(policies, key=lambda p: (p.namespace, p.name))),
        secrets=tuple(sorted(secrets, key=lambda s: (s.namespace, s.name))),
        namespaces=tuple(sorted(namespaces, key=lambda n: n.name)),
    )
    return config, errors
