"""A cluster's `SiteSnapshot` as JSON and back, exactly: what `decode_snapshot` reads of what
`encode_snapshot` wrote compares equal to the snapshot encoded.

Every field of every part is written, by its name in `kontinuum.control.model`; a datetime
as ISO 8601 (with its UTC offset when it has one). Reading checks every type and value as
the model declares it, and raises `ValueError` on anything else: a file that does not hold
exactly this is not trusted at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TypeVar, cast, get_args

from kontinuum.control.model import (
    AddressType,
    Endpoint,
    EndpointPort,
    PortProtocol,
    Service,
    ServiceExport,
    ServicePort,
    ServiceType,
    SiteSnapshot,
)

Json = dict[str, Any]
T = TypeVar("T")

_PROTOCOLS: Final = frozenset(get_args(PortProtocol))
_SERVICE_TYPES: Final = frozenset(get_args(ServiceType))
_ADDRESS_TYPES: Final = frozenset(get_args(AddressType))


def encode_snapshot(snapshot: SiteSnapshot) -> Json:
    """`snapshot` as JSON values (dicts, lists, strings, numbers, booleans, null)."""
    return {
        "cluster": snapshot.cluster,
        "services": [_encode_service(s) for s in snapshot.services],
        "endpoints": [_encode_endpoint(e) for e in snapshot.endpoints],
        "exports": [_encode_export(e) for e in snapshot.exports],
        "stale": snapshot.stale,
    }


def decode_snapshot(data: object) -> SiteSnapshot:
    """The snapshot `encode_snapshot` made `data` of; `ValueError` if it is anything else."""
    fields = _fields(data, "snapshot", ("cluster", "services", "endpoints", "exports", "stale"))
    return SiteSnapshot(
        cluster=_typed(fields, "cluster", str),
        services=tuple(_decode_service(s) for s in _typed(fields, "services", list)),
        endpoints=tuple(_decode_endpoint(e) for e in _typed(fields, "endpoints", list)),
        exports=tuple(_decode_export(e) for e in _typed(fields, "exports", list)),
        stale=_typed(fields, "stale", bool),
    )


def _encode_service(service: Service) -> Json:
    return {
        "cluster": service.cluster,
        "namespace": service.namespace,
        "name": service.name,
        "ports": [_encode_service_port(p) for p in service.ports],
        "type": service.type,
        "workspace": service.workspace,
    }


def _decode_service(data: object) -> Service:
    fields = _fields(
        data, "service", ("cluster", "namespace", "name", "ports", "type", "workspace")
    )
    return Service(
        cluster=_typed(fields, "cluster", str),
        namespace=_typed(fields, "namespace", str),
        name=_typed(fields, "name", str),
        ports=tuple(_decode_service_port(p) for p in _typed(fields, "ports", list)),
        type=cast(ServiceType, _one_of(fields, "type", _SERVICE_TYPES)),
        workspace=_typed(fields, "workspace", str),
    )


def _encode_service_port(port: ServicePort) -> Json:
    return {
        "port": port.port,
        "name": port.name,
        "protocol": port.protocol,
        "app_protocol": port.app_protocol,
        "target_port": port.target_port,
    }


def _decode_service_port(data: object) -> ServicePort:
    fields = _fields(
        data, "service port", ("port", "name", "protocol", "app_protocol", "target_port")
    )
    target = fields["target_port"]
    if not isinstance(target, str):
        target = _typed(fields, "target_port", int)
    return ServicePort(
        port=_typed(fields, "port", int),
        name=_typed(fields, "name", str),
        protocol=cast(PortProtocol, _one_of(fields, "protocol", _PROTOCOLS)),
        app_protocol=_optional_str(fields, "app_protocol"),
        target_port=target,
    )


def _encode_endpoint(endpoint: Endpoint) -> Json:
    return {
        "cluster": endpoint.cluster,
        "namespace": endpoint.namespace,
        "service": endpoint.service,
        "addresses": list(endpoint.addresses),
        "ports": [_encode_endpoint_port(p) for p in endpoint.ports],
        "address_type": endpoint.address_type,
        "ready": endpoint.ready,
        "serving": endpoint.serving,
        "terminating": endpoint.terminating,
        "zone": endpoint.zone,
        "node_name": endpoint.node_name,
        "hostname": endpoint.hostname,
        "mutual_tls": endpoint.mutual_tls,
    }


_ENDPOINT_FIELDS: Final = (
    "cluster",
    "namespace",
    "service",
    "addresses",
    "ports",
    "address_type",
    "ready",
    "serving",
    "terminating",
    "zone",
    "node_name",
    "hostname",
    "mutual_tls",
)


def _decode_endpoint(data: object) -> Endpoint:
    fields = _fields(data, "endpoint", _ENDPOINT_FIELDS)
    addresses = _typed(fields, "addresses", list)
    if not all(isinstance(a, str) for a in addresses):
        raise ValueError(f"endpoint addresses must be strings, got {addresses!r}")
    return Endpoint(
        cluster=_typed(fields, "cluster", str),
        namespace=_typed(fields, "namespace", str),
        service=_typed(fields, "service", str),
        addresses=tuple(addresses),
        ports=tuple(_decode_endpoint_port(p) for p in _typed(fields, "ports", list)),
        address_type=cast(AddressType, _one_of(fields, "address_type", _ADDRESS_TYPES)),
        ready=_typed(fields, "ready", bool),
        serving=_typed(fields, "serving", bool),
        terminating=_typed(fields, "terminating", bool),
        zone=_typed(fields, "zone", str),
        node_name=_typed(fields, "node_name", str),
        hostname=_typed(fields, "hostname", str),
        mutual_tls=_typed(fields, "mutual_tls", bool),
    )


def _encode_endpoint_port(port: EndpointPort) -> Json:
    return {
        "port": port.port,
        "name": port.name,
        "protocol": port.protocol,
        "app_protocol": port.app_protocol,
    }


def _decode_endpoint_port(data: object) -> EndpointPort:
    fields = _fields(data, "endpoint port", ("port", "name", "protocol", "app_protocol"))
    return EndpointPort(
        port=_typed(fields, "port", int),
        name=_typed(fields, "name", str),
        protocol=cast(PortProtocol, _one_of(fields, "protocol", _PROTOCOLS)),
        app_protocol=_optional_str(fields, "app_protocol"),
    )


def _encode_export(export: ServiceExport) -> Json:
    return {
        "cluster": export.cluster,
        "namespace": export.namespace,
        "name": export.name,
        "created": export.created.isoformat() if export.created is not None else None,
    }


def _decode_export(data: object) -> ServiceExport:
    fields = _fields(data, "export", ("cluster", "namespace", "name", "created"))
    created = _optional_str(fields, "created")
    return ServiceExport(
        cluster=_typed(fields, "cluster", str),
        namespace=_typed(fields, "namespace", str),
        name=_typed(fields, "name", str),
        created=datetime.fromisoformat(created) if created is not None else None,
    )


def _fields(data: object, what: str, names: tuple[str, ...]) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: must be an object, got {type(data).__name__}")
    if set(data) != set(names):
        raise ValueError(f"{what}: must have the fields {sorted(names)}, got {sorted(data)}")
    return data


def _typed(fields: Mapping[str, object], name: str, kind: type[T]) -> T:
    value = fields[name]
    # bool is an int to Python, never to the model
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
    return value


def _optional_str(fields: Mapping[str, object], name: str) -> str | None:
    value = fields[name]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null, got {value!r}")
    return value


def _one_of(fields: Mapping[str, object], name: str, allowed: frozenset[str]) -> str:
    value = fields[name]
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    assert isinstance(value, str)
    return value
