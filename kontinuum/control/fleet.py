"""The fleet's standard resources, parsed and validated into the model. Pure: no I/O.

Input is already-parsed YAML documents, each with the file it came from. Output is model
values and a list of `ConfigError`s. The resources are the existing standards, read the way
`kubectl get -o yaml` prints them (unknown fields such as `status` or `managedFields` are
ignored):

- `multicluster.x-k8s.io/v1alpha1 ClusterProfile` (Cluster Inventory API), fleet-wide: one per
  cluster, with the labels `topology.kubernetes.io/region`, `topology.kubernetes.io/zone`
  and `kontinuum.io/network`;
- per cluster: `v1 Service`, `discovery.k8s.io/v1 EndpointSlice` (linked to its Service by
  the `kubernetes.io/service-name` label; `kontinuum.io/tls-mode: mutual` says its endpoints
  are fronted by a kontinuum sidecar that requires mTLS, `disabled` or no label that they
  are not: Kubernetes copies a Service's labels onto its EndpointSlices, so labelling the
  Service is enough in a real cluster) and `multicluster.x-k8s.io/v1alpha1 ServiceExport`;
- `gateway.networking.k8s.io/v1beta1` (or `v1`) `ReferenceGrant`, fleet-wide, in the provider's
  namespace:
  a workspace's grant to another workspace to reach its services, or the Gateway API's grant
  to another namespace's routes to name its services as backends (read by
  `kontinuum.control.grants.parse_grants`);
- fleet-wide too, read by `kontinuum.control.gateway_api.parse_routing` and skipped here:
  `gateway.networking.k8s.io/v1` `HTTPRoute`, `GRPCRoute` and `Gateway`,
  `policy.kontinuum.io/v1alpha1 LocalityPolicy`, `v1 Secret` of type `kubernetes.io/tls`,
  the certificates of HTTPS listeners, and `v1 Namespace` (its labels, which a Gateway
  listener's `allowedRoutes.namespaces.selector` selects by);
- `v1 List`, whose `items` are read as if they were documents of their own.

The fields used are validated as the Kubernetes API server would, its limits included
(`kube_limits`: every object's name, namespace, labels and annotations; an EndpointSlice's
1,000 endpoints, 100 addresses each and 20,000 ports), with these differences:
endpoint addresses may be loopback (a whole fleet runs on one laptop), and what kontinuum
cannot serve (`ExternalName` Services, `FQDN` EndpointSlices, slice ports without a number)
is rejected instead of ignored. Across objects, an EndpointSlice needs its Service in the same
cluster and port names the Service has, and a ServiceExport needs its Service. An object with
any error is left out whole, but for a ServiceExport whose Service is missing: it is kept
for its status to say so (MCS `Valid=False`, `NoService`); the other objects still load.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from kontinuum.control.kube_limits import (
    MAX_ADDRESSES_PER_ENDPOINT,
    MAX_ENDPOINTS_PER_SLICE,
    MAX_PORTS_PER_SLICE,
    check_object_meta,
    qualified_name,
    within,
)
from kontinuum.control.model import (
    AddressType,
    ClusterSite,
    ConfigError,
    Endpoint,
    EndpointPort,
    Service,
    ServiceExport,
    ServicePort,
    ServiceType,
    SiteSnapshot,
)
from kontinuum.control.objects import (
    Document,
    ObjectReader,
    dns1035_label,
    dns_label,
    dns_subdomain,
    iana_port_name,
    type_name,
)
from kontinuum.control.site_access import site_access

REGION_LABEL: Final = "topology.kubernetes.io/region"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
NETWORK_LABEL: Final = "kontinuum.io/network"
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
TLS_MODE_LABEL: Final = "kontinuum.io/tls-mode"
TLS_MODES: Final = ("mutual", "disabled")

MCS_API: Final = "multicluster.x-k8s.io/v1alpha1"
DISCOVERY_API: Final = "discovery.k8s.io/v1"
GATEWAY_API: Final = "gateway.networking.k8s.io/v1beta1"
FLEET_KINDS: Final = {
    "ClusterProfile": MCS_API,
    "ReferenceGrant": GATEWAY_API,
    # read by kontinuum.control.gateway_api.parse_routing
    "HTTPRoute": "gateway.networking.k8s.io/v1",
    "GRPCRoute": "gateway.networking.k8s.io/v1",
    "Gateway": "gateway.networking.k8s.io/v1",
    "LocalityPolicy": "policy.kontinuum.io/v1alpha1",
    # the certificates of HTTPS listeners (kontinuum.control.gateway_certificates)
    "Secret": "v1",
    "Namespace": "v1",  # its labels, for a listener's namespace selector
}
CLUSTER_KINDS: Final = {"Service": "v1", "EndpointSlice": DISCOVERY_API, "ServiceExport": MCS_API}
# Other apiVersions a kind is read in, the same schema: newer Gateway API releases serve
# ReferenceGrant as v1 too (a config cluster is still listed at the version every release has).
OTHER_API_VERSIONS: Final = {"ReferenceGrant": ("gateway.networking.k8s.io/v1",)}
_NAMESPACED: Final = frozenset({*CLUSTER_KINDS, *FLEET_KINDS} - {"ClusterProfile", "Namespace"})
_SERVICE_TYPES: Final = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


def _header(
    doc: Document, allowed: dict[str, str], elsewhere: dict[str, str], where: str
) -> tuple[ObjectReader, str]:
    """Identify a document's object and check its apiVersion and kind for this place.

    Returns the object (whose errors say whether it may be read further) and its kind.
    """
    body = doc.body
    if not isinstance(body, dict):
        obj = ObjectReader(doc, "", "", "")
        obj.error("", f"must be a Kubernetes object (a mapping), got {type_name(body)}")
        return obj, ""
    kind = body.get("kind")
    metadata = body.get("metadata")
    meta = metadata if isinstance(metadata, dict) else {}
    name = meta.get("name")
    # As the API server does, an absent or empty namespace is the `default` namespace.
    namespaced = isinstance(kind, str) and kind in _NAMESPACED
    namespace = (meta.get("namespace") or "default") if namespaced else ""
    obj = ObjectReader(
        doc,
        kind if isinstance(kind, str) else "",
        namespace if isinstance(namespace, str) else "",
        name if isinstance(name, str) else "",
    )
    if kind is None or kind == "":
        obj.error("kind", "required")
        return obj, ""
    if not isinstance(kind, str):
        obj.error("kind", f"must be a string, got {type_name(kind)}")
        return obj, ""
    api_version = body.get("apiVersion")
    if kind in elsewhere:
        obj.error("kind", f"a {kind} does not belong {where}")
    elif kind not in allowed:
        known = ", ".join(sorted(allowed))
        obj.error("kind", f"unknown kind {kind!r} here (expected one of {known})")
    elif api_version not in (versions := (allowed[kind], *OTHER_API_VERSIONS.get(kind, ()))):
        expected = " or ".join(versions)
        obj.error("apiVersion", f"must be {expected} for kind {kind}, got {api_version!r}")
    if obj.errors:
        return obj, kind
    if metadata is None or not isinstance(metadata, dict):
        obj.mapping(body, "metadata", "metadata", required=True)
        return obj, kind
    check = dns1035_label if kind in ("Service", "ServiceExport") else dns_label
    if kind not in ("ClusterProfile", "Namespace", "Service", "ServiceExport"):  # DNS labels
        check = dns_subdomain
    obj.string(meta, "name", "metadata.name", required=True, check=check)
    if namespaced and meta.get("namespace") != "":
        obj.string(meta, "namespace", "metadata.namespace", check=dns_label)
    return obj, kind


def _cluster_profile(obj: ObjectReader) -> ClusterSite:
    check_object_meta(obj)
    labels = obj.labels()
    return ClusterSite(
        name=obj.name,
        region=labels.get(REGION_LABEL, ""),
        zone=labels.get(ZONE_LABEL, ""),
        network=labels.get(NETWORK_LABEL, ""),
        access=site_access(obj),
    )


def _service(obj: ObjectReader, cluster: str) -> Service:
    check_object_meta(obj)
    spec = obj.mapping(obj.body, "spec", "spec", required=True)
    service_type: ServiceType = "ClusterIP"
    kube_type = obj.string(spec, "type", "spec.type") or "ClusterIP"
    if kube_type == "ExternalName":
        obj.error("spec.type", "ExternalName Services are not supported (no endpoints to route to)")
    elif kube_type not in _SERVICE_TYPES:
        expected = ", ".join(_SERVICE_TYPES)
        obj.error("spec.type", f"must be one of {expected}, got {kube_type!r}")
    cluster_ip = obj.string(spec, "clusterIP", "spec.clusterIP")
    if cluster_ip == "None":
        service_type = "Headless"
    elif cluster_ip:
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            obj.error("spec.clusterIP", f"must be an IP address, '' or 'None', got {cluster_ip!r}")
    raw_ports = list(obj.items(spec, "ports", "spec.ports"))
    if not raw_ports and service_type != "Headless" and not obj.errors:
        obj.error("spec.ports", "required: a Service that is not headless needs a port")
    ports: list[ServicePort] = []
    names: dict[str, str] = {}
    numbers: dict[tuple[int, str], str] = {}
    for path, raw in raw_ports:
        name = obj.string(raw, "name", f"{path}.name", check=dns_label) or ""
        if not name and len(raw_ports) > 1:
            obj.error(f"{path}.name", "required when a Service has more than one port")
        elif name and name in names:
            obj.error(f"{path}.name", f"duplicate port name {name!r} (also {names[name]})")
        names.setdefault(name, path)
        port = obj.integer(raw, "port", f"{path}.port", required=True)
        protocol = obj.protocol(raw, path)
        if port and (port, protocol) in numbers:
            where = numbers[port, protocol]
            obj.error(f"{path}.port", f"duplicate port {port}/{protocol} (also {where})")
        numbers.setdefault((port, protocol), path)
        app_protocol = obj.string(raw, "appProtocol", f"{path}.appProtocol", check=qualified_name)
        target: int | str = port
        raw_target = raw.get("targetPort")
        if isinstance(raw_target, str):
            target = obj.string(raw, "targetPort", f"{path}.targetPort", check=iana_port_name) or 0
        elif raw_target is not None:
            target = obj.integer(raw, "targetPort", f"{path}.targetPort")
        ports.append(ServicePort(port, name, protocol, app_protocol, target))
    return Service(cluster, obj.namespace, obj.name, tuple(ports), service_type)


def _endpoint_slice(
    obj: ObjectReader, cluster: str
) -> tuple[tuple[EndpointPort, ...], tuple[Endpoint, ...]]:
    body = obj.body
    check_object_meta(obj)
    labels = obj.labels()
    service = labels.get(SERVICE_NAME_LABEL)
    label_path = f"metadata.labels[{SERVICE_NAME_LABEL}]"
    tls_mode = labels.get(TLS_MODE_LABEL, "disabled")
    if tls_mode not in TLS_MODES:
        obj.error(
            f"metadata.labels[{TLS_MODE_LABEL}]",
            f"must be one of {', '.join(TLS_MODES)}, got {tls_mode!r}",
        )
    if service is None:
        if not any(e.field == label_path for e in obj.errors):
            obj.error(label_path, "required: it names the Service this EndpointSlice belongs to")
        service = ""
    elif problem := dns1035_label(service):
        obj.error(label_path, problem)
    address_type: AddressType = "IPv4"
    raw_type = obj.string(body, "addressType", "addressType", required=True)
    if raw_type == "IPv6":
        address_type = "IPv6"
    elif raw_type == "FQDN":
        obj.error("addressType", "FQDN is not supported: use IPv4 or IPv6 addresses")
    elif raw_type is not None and raw_type != "IPv4":
        obj.error("addressType", f"must be one of IPv4, IPv6, FQDN, got {raw_type!r}")
    ports = _slice_ports(obj)
    endpoints: list[Endpoint] = []
    most = MAX_ENDPOINTS_PER_SLICE
    if not within(obj, body, "endpoints", "endpoints", most, "endpoints", _PER_SLICE):
        return ports, ()
    for path, raw in obj.items(body, "endpoints", "endpoints"):
        addresses: list[str] = []
        at = f"{path}.addresses"
        if not within(obj, raw, "addresses", at, MAX_ADDRESSES_PER_ENDPOINT, "addresses"):
            continue
        raw_addresses = list(obj.strings(raw, "addresses", at))
        if not raw_addresses and "addresses" in raw:
            obj.error(at, "must hold at least one address")
        for address_path, address in raw_addresses:
            problem = _address(address, address_type)
            if problem:
                obj.error(address_path, problem)
            addresses.append(address)
        conditions = obj.mapping(raw, "conditions", f"{path}.conditions")
        cpath = f"{path}.conditions"
        ready = obj.boolean(conditions, "ready", f"{cpath}.ready")
        serving = obj.boolean(conditions, "serving", f"{cpath}.serving")
        terminating = obj.boolean(conditions, "terminating", f"{cpath}.terminating")
        endpoints.append(
            Endpoint(
                cluster=cluster,
                namespace=obj.namespace,
                service=service,
                addresses=tuple(addresses),
                ports=tuple(ports),
                address_type=address_type,
                # Kubernetes: an unknown ready or serving is read as ready; terminating as false.
                ready=True if ready is None else ready,
                serving=(True if ready is None else ready) if serving is None else serving,
                terminating=bool(terminating),
                zone=obj.string(raw, "zone", f"{path}.zone") or "",
                node_name=obj.string(raw, "nodeName", f"{path}.nodeName", check=dns_subdomain)
                or "",
                hostname=obj.string(raw, "hostname", f"{path}.hostname", check=dns_label) or "",
                mutual_tls=tls_mode == "mutual",
            )
        )
    return ports, tuple(endpoints)


def _slice_ports(obj: ObjectReader) -> tuple[EndpointPort, ...]:
    ports: list[EndpointPort] = []
    names: dict[str, str] = {}
    body = obj.body
    if not within(obj, body, "ports", "ports", MAX_PORTS_PER_SLICE, "ports", _PER_SLICE):
        return ()
    for path, raw in obj.items(body, "ports", "ports"):
        name = obj.string(raw, "name", f"{path}.name", check=dns_label) or ""
        if name in names:
            obj.error(f"{path}.name", f"duplicate port name {name!r} (also {names[name]})")
        names.setdefault(name, path)
        port = obj.integer(raw, "port", f"{path}.port", required=True)
        protocol = obj.protocol(raw, path)
        app_protocol = obj.string(raw, "appProtocol", f"{path}.appProtocol", check=qualified_name)
        ports.append(EndpointPort(port, name, protocol, app_protocol))
    return tuple(ports)


_PER_SLICE: Final = " (Kubernetes' limit for one EndpointSlice: spread them over more slices)"


def _address(address: str, address_type: AddressType) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"must be a valid {address_type} address, got {address!r}"
    if (ip.version == 4) != (address_type == "IPv4"):
        return f"must be a valid {address_type} address, got {address!r}"
    if ip.is_unspecified or ip.is_multicast:
        return f"must be a unicast address, got {address!r}"
    return None


def _service_export(obj: ObjectReader, cluster: str) -> ServiceExport:
    check_object_meta(obj)
    created = obj.created()
    return ServiceExport(cluster, obj.namespace, obj.name, created)


def _expand(docs: Iterable[Document], errors: list[ConfigError]) -> Iterator[Document]:
    """Documents, with the items of a `v1 List` (as `kubectl get -o yaml` prints) inlined."""
    for doc in docs:
        body = doc.body
        if body is None:
            continue
        if isinstance(body, dict) and body.get("kind") == "List" and body.get("apiVersion") == "v1":
            items = body.get("items") or []
            if isinstance(items, list):
                yield from (Document(doc.file, item, doc.index) for item in items)
            else:
                obj = ObjectReader(doc, "List", "", "")
                obj.error("items", f"must be a list, got {type_name(items)}")
                errors.extend(obj.errors)
        else:
            yield doc


def parse_fleet_objects(
    docs: Iterable[Document],
) -> tuple[tuple[ClusterSite, ...], list[ConfigError]]:
    """The sites declared by the fleet-wide documents (ClusterProfiles), sorted by name."""
    sites: dict[str, ClusterSite] = {}
    seen: dict[str, str] = {}
    errors: list[ConfigError] = []
    for doc in _expand(docs, errors):
        obj, kind = _header(doc, FLEET_KINDS, CLUSTER_KINDS, _NOT_FLEET_WIDE)
        if kind in FLEET_KINDS and kind != "ClusterProfile":
            continue  # read (and reported) by parse_grants and parse_routing
        if not obj.errors:
            if obj.name in seen:
                obj.error("metadata.name", f"duplicate ClusterProfile, also in {seen[obj.name]}")
            seen.setdefault(obj.name, doc.file)
        if not obj.errors:
            site = _cluster_profile(obj)
            if not obj.errors:
                sites[site.name] = site
        errors.extend(obj.errors)
    return tuple(sites[name] for name in sorted(sites)), errors


_NOT_FLEET_WIDE: Final = "to the whole fleet: put it in clusters/<cluster>/"
_NOT_PER_CLUSTER: Final = "to one cluster: put it in the fleet directory's *.yaml"


@dataclass(frozen=True, slots=True)
class ClusterObject:
    """One document of a cluster's files, read on its own: everything that does not depend
    on the other documents (`read_cluster_documents`). A source keeps these per file and
    reads again only the files that changed; `assemble_cluster` does the rest."""

    doc: Document
    kind: str  # "" when the header has errors
    namespace: str = ""
    name: str = ""
    errors: tuple[ConfigError, ...] = ()  # its own; with errors it is left out
    header_ok: bool = True  # the header (kind, apiVersion, name) is valid: a duplicate counts
    value: Service | ServiceExport | None = None
    ports: tuple[EndpointPort, ...] = ()  # an EndpointSlice's
    endpoints: tuple[Endpoint, ...] = ()  # an EndpointSlice's
    service_name: str = ""  # an EndpointSlice's Service

    def error(self, path: str, message: str) -> ConfigError:
        """An error about this object found across objects (not kept on it)."""
        reader = ObjectReader(self.doc, self.kind, self.namespace, self.name)
        reader.error(path, message)
        return reader.errors[0]


def read_cluster_documents(cluster: str, docs: Iterable[Document]) -> list[ClusterObject]:
    """Each document of `cluster`'s files read on its own, in order (see `ClusterObject`)."""
    expand_errors: list[ConfigError] = []
    read: list[ClusterObject] = []
    for doc in _expand(docs, expand_errors):
        for error in expand_errors:
            read.append(ClusterObject(doc, "", errors=(error,), header_ok=False))
        expand_errors.clear()
        obj, kind = _header(doc, CLUSTER_KINDS, FLEET_KINDS, _NOT_PER_CLUSTER)
        if obj.errors:
            read.append(ClusterObject(doc, kind, obj.namespace, obj.name, tuple(obj.errors), False))
            continue
        value: Service | ServiceExport | None = None
        ports: tuple[EndpointPort, ...] = ()
        endpoints: tuple[Endpoint, ...] = ()
        service_name = ""
        if kind == "Service":
            value = _service(obj, cluster)
        elif kind == "EndpointSlice":
            ports, endpoints = _endpoint_slice(obj, cluster)
            service_name = obj.labels().get(SERVICE_NAME_LABEL, "") if not obj.errors else ""
        else:
            value = _service_export(obj, cluster)
        read.append(
            ClusterObject(
                doc,
                kind,
                obj.namespace,
                obj.name,
                tuple(obj.errors),
                True,
                value,
                ports,
                endpoints,
                service_name,
            )
        )
    for error in expand_errors:  # a List with bad items at the very end
        read.append(ClusterObject(Document("", None, 0), "", errors=(error,), header_ok=False))
    return read


def parse_cluster_objects(
    cluster: str, docs: Iterable[Document]
) -> tuple[SiteSnapshot, list[ConfigError]]:
    """One cluster's Services, EndpointSlices and ServiceExports as a snapshot of that site."""
    return assemble_cluster(cluster, read_cluster_documents(cluster, docs))


def slice_problems(cluster: str, obj: ClusterObject, service: Service | None) -> list[ConfigError]:
    """What keeps an EndpointSlice of `cluster` out: its Service (`service`, as found in
    the cluster) missing, or a port name that Service lacks."""
    if service is None:
        return [
            obj.error(
                f"metadata.labels[{SERVICE_NAME_LABEL}]",
                f"no Service {obj.namespace}/{obj.service_name} in cluster {cluster}",
            )
        ]
    return [
        obj.error(f"ports[{i}].name", f"Service {service.ref} has no port named {port.name!r}")
        for i, port in enumerate(obj.ports)
        if service.port_named(port.name) is None
    ]


def export_problem(cluster: str, obj: ClusterObject, export: ServiceExport) -> ConfigError:
    """The error of an export of a Service `cluster` does not have (it is kept: MCS gives
    it `Valid=False`, `NoService`)."""
    return obj.error("metadata.name", f"no Service {export.ref} in cluster {cluster} to export")


def assemble_cluster(
    cluster: str, objects: Iterable[ClusterObject]
) -> tuple[SiteSnapshot, list[ConfigError]]:
    """The snapshot of `cluster` from its documents read on their own: duplicates, and
    slices and exports of Services the cluster does not have, are found here."""
    errors: list[ConfigError] = []
    seen: dict[tuple[str, str, str], str] = {}
    services: dict[tuple[str, str], Service] = {}
    slices: list[ClusterObject] = []
    exports: list[ClusterObject] = []
    for obj in objects:
        if not obj.header_ok:
            errors.extend(obj.errors)
            continue
        key = (obj.kind, obj.namespace, obj.name)
        if key in seen:
            errors.append(obj.error("metadata.name", f"duplicate {obj.kind}, also in {seen[key]}"))
            continue
        seen[key] = obj.doc.file
        errors.extend(obj.errors)
        if obj.errors:
            continue
        if isinstance(obj.value, Service):
            services[obj.namespace, obj.name] = obj.value
        elif obj.kind == "EndpointSlice":
            slices.append(obj)
        else:
            exports.append(obj)

    # Across objects: a slice or an export of a Service this cluster does not have is dropped.
    kept_endpoints: list[tuple[str, str, tuple[Endpoint, ...]]] = []
    for obj in slices:
        problems = slice_problems(cluster, obj, services.get((obj.namespace, obj.service_name)))
        if problems:
            errors.extend(problems)
        else:
            kept_endpoints.append((obj.namespace, obj.name, obj.endpoints))
    # An export of a missing Service is an error, and is kept: MCS gives it `Valid=False`
    # (`NoService`) in its status, which is where a cluster's operator looks.
    kept_exports = [obj.value for obj in exports if isinstance(obj.value, ServiceExport)]
    for export in kept_exports:
        if (export.namespace, export.name) not in services:
            obj = next(o for o in exports if o.value is export)
            errors.append(export_problem(cluster, obj, export))

    snapshot = SiteSnapshot(
        cluster=cluster,
        services=tuple(services[key] for key in sorted(services)),
        endpoints=tuple(e for *_, group in sorted(kept_endpoints) for e in group),
        exports=tuple(sorted(kept_exports, key=lambda e: (e.namespace, e.name))),
    )
    return snapshot, errors
