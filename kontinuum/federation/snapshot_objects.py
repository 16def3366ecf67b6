"""A site's snapshot as the standard Kubernetes objects that describe it, for a zone to
publish a site it does not read as objects (a DNS-described one, `kontinuum.discovery.dns`).

Reading the objects back as the fleet files are read (`kontinuum.control.fleet`) gives
the snapshot's services, endpoints and exports again:

- a `Service` per service (its ports by name, number and protocol; type ClusterIP, or
  headless with `clusterIP: None`);
- per service, an `EndpointSlice` per address type and set of ports (in an EndpointSlice,
  every endpoint serves the same ports), named `<service>-<port name>-<port>-<ipv4|ipv6>`
  after its first port, with `-2`, `-3`... past the 1,000 endpoints a slice may hold;
- a `ServiceExport` per export.

The objects are built in a stable order from sorted parts, so equal snapshots give equal
objects, hence equal versions: a change publishes what it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from kontinuum.control.model import Endpoint, EndpointPort, Service, SiteSnapshot

MAX_ENDPOINTS_PER_SLICE: Final = 1000  # Kubernetes' limit
_SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
# the slice an endpoint goes in: namespace, service, address type, ports, mutual TLS
_Group = tuple[str, str, str, tuple[EndpointPort, ...], bool]


def snapshot_bodies(snapshot: SiteSnapshot) -> list[dict[str, Any]]:
    """The Services, EndpointSlices and ServiceExports describing `snapshot` (see the
    module doc), as `kubectl get -o json` prints them."""
    bodies = [_service(service) for service in snapshot.services]
    groups: dict[_Group, list[Endpoint]] = {}
    for endpoint in snapshot.endpoints:
        key = (
            endpoint.namespace,
            endpoint.service,
            endpoint.address_type,
            endpoint.ports,
            endpoint.mutual_tls,
        )
        groups.setdefault(key, []).append(endpoint)
    for (namespace, service, address_type, ports, mutual), endpoints in sorted(
        groups.items(), key=lambda item: _group_order(item[0])
    ):
        first = ports[0] if ports else EndpointPort(0)
        base = f"{service}-{first.name or 'port'}-{first.port}-{address_type.lower()}"
        base += "-mtls" if mutual else ""
        for index in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE):
            part = index // MAX_ENDPOINTS_PER_SLICE
            name = base if part == 0 else f"{base}-{part + 1}"
            chunk = endpoints[index : index + MAX_ENDPOINTS_PER_SLICE]
            bodies.append(_slice(namespace, name, service, address_type, ports, chunk))
    for export in snapshot.exports:
        metadata: dict[str, Any] = {"name": export.name, "namespace": export.namespace}
        if export.created is not None:
            metadata["creationTimestamp"] = export.created.isoformat().replace("+00:00", "Z")
        bodies.append({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": metadata,
        })  # fmt: skip
    return bodies


def _group_order(key: _Group) -> tuple[object, ...]:
    namespace, service, address_type, ports, mutual = key
    return (namespace, service, address_type, [(p.name, p.port, p.protocol) for p in ports], mutual)


def _port(port: EndpointPort) -> dict[str, Any]:
    found: dict[str, Any] = {"port": port.port, "protocol": port.protocol}
    if port.name:
        found["name"] = port.name
    if port.app_protocol is not None:
        found["appProtocol"] = port.app_protocol
    return found


def _service(service: Service) -> dict[str, Any]:
    ports = []
    for port in service.ports:
        found = _port(EndpointPort(port.port, port.name, port.protocol, port.app_protocol))
        if port.target_port != port.port:
            found["targetPort"] = port.target_port
        ports.append(found)
    spec: dict[str, Any] = {"type": "ClusterIP", "ports": ports}
    if service.type == "Headless":
        spec["clusterIP"] = "None"
    elif service.type != "ClusterIP":
        spec["type"] = service.type
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service.name, "namespace": service.namespace},
        "spec": spec,
    }


def _slice(
    namespace: str,
    name: str,
    service: str,
    address_type: str,
    ports: tuple[EndpointPort, ...],
    endpoints: Sequence[Endpoint],
) -> dict[str, Any]:
    items = []
    for endpoint in endpoints:
        item: dict[str, Any] = {
            "addresses": list(endpoint.addresses),
            "conditions": {
                "ready": endpoint.ready,
                "serving": endpoint.serving,
                "terminating": endpoint.terminating,
            },
        }
        for field, value in (
            ("zone", endpoint.zone),
            ("nodeName", endpoint.node_name),
            ("hostname", endpoint.hostname),
        ):
            if value:
                item[field] = value
        items.append(item)
    labels = {_SERVICE_NAME_LABEL: service}
    if endpoints and endpoints[0].mutual_tls:  # every endpoint of a slice alike
        labels["kontinuum.io/tls-mode"] = "mutual"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "addressType": address_type,
        "ports": [_port(port) for port in ports],
        "endpoints": items,
    }
