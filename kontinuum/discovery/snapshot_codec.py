"""A cluster's `SiteSnapshot` as JSON and back, exactly: what `decode_snapshot` reads of what
`encode_snapshot` wrote compares equal to the snapshot encoded.

Every field of every part is written, by its name in `kontinuum.control.model`; a datetime
as ISO 8601 (with its UTC offset when it has one). Reading checks every type and value as
the model declares it, and raises `ValueError` on anything else: a file that does not hold
exactly this is not trusted at all.
"""

from __future__ import annotations

import dataclasses
import json
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


class SnapshotText:
    """One cluster's snapshots as the JSON text of `encode_snapshot` (compact separators),
    each Service, endpoint and export encoded once while the snapshots carry it over (the
    same object): a new snapshot costs the parts that changed, not the cluster."""

    def __init__(self) -> None:
        self._parts: dict[int, tuple[object, str]] = {}  # id(part) -> (part, its text)

    def __call__(self, snapshot: SiteSnapshot) -> str:
        parts: dict[int, tuple[object, str]] = {}
        fields = []
        for field in dataclasses.fields(snapshot):
            value = getattr(snapshot, field.name)
            if isinstance(value, tuple):
                texts = []
                for part in value:
                    known = self._parts.get(id(part))
                    if known is None or known[0] is not part:
                        known = (part, _text(_encode(part)))
                    parts[id(part)] = known
                    texts.append(known[1])
                text = f"[{','.join(texts)}]"
            else:
                text = _text(_encode(value))
            fields.append(f"{_text(field.name)}:{text}")
        self._parts = parts
        return f"{{{','.join(fields)}}}"


def _text(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def encode_snapshot(snapshot: SiteSnapshot) -> Json:
    """`snapshot` as JSON values (dicts, lists, strings, numbers, booleans, null)."""
    encoded = _encode(snapshot)
    assert isinstance(encoded, dict)
    return encoded


def _encode(value: object) -> object:
    """A model value as JSON: a dataclass by its fields' names, a tuple as a list."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def decode_snapshot(data: object) -> SiteSnapshot:
    """The snapshot `encode_snapshot` made `data` of; `ValueError` if it is anything else."""
    fields = _fields(data, "snapshot", SiteSnapshot)
    return SiteSnapshot(
        cluster=_typed(fields, "cluster", str),
        services=tuple(_decode_service(s) for s in _typed(fields, "services", list)),
        endpoints=tuple(_decode_endpoint(e) for e in _typed(fields, "endpoints", list)),
        exports=tuple(_decode_export(e) for e in _typed(fields, "exports", list)),
        stale=_typed(fields, "stale", bool),
    )


def _decode_service(data: object) -> Service:
    fields = _fields(data, "service", Service)
    return Service(
        cluster=_typed(fields, "cluster", str),
        namespace=_typed(fields, "namespace", str),
        name=_typed(fields, "name", str),
        ports=tuple(_decode_service_port(p) for p in _typed(fields, "ports", list)),
        type=cast(ServiceType, _one_of(fields, "type", _SERVICE_TYPES)),
        workspace=_typed(fields, "workspace", str),
    )


def _decode_service_port(data: object) -> ServicePort:
    fields = _fields(data, "service port", ServicePort)
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


def _decode_endpoint(data: object) -> Endpoint:
    fields = _fields(data, "endpoint", Endpoint)
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


def _decode_endpoint_port(data: object) -> EndpointPort:
    fields = _fields(data, "endpoint port", EndpointPort)
    return EndpointPort(
        port=_typed(fields, "port", int),
        name=_typed(fields, "name", str),
        protocol=cast(PortProtocol, _one_of(fields, "protocol", _PROTOCOLS)),
        app_protocol=_optional_str(fields, "app_protocol"),
    )


def _decode_export(data: object) -> ServiceExport:
    fields = _fields(data, "export", ServiceExport)
    created = _optional_str(fields, "created")
    return ServiceExport(
        cluster=_typed(fields, "cluster", str),
        namespace=_typed(fields, "namespace", str),
        name=_typed(fields, "name", str),
        created=datetime.fromisoformat(created) if created is not None else None,
    )


def _fields(data: object, what: str, model: type[object]) -> Mapping[str, object]:
    """`data` if it is an object with exactly the fields of the dataclass `model`."""
    names = [f.name for f in dataclasses.fields(model)]  # type: ignore[arg-type]
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
