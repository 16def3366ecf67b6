"""A resource as it travels: serialized once, versioned by the hash of its bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from kontinuum.xds import references, types, wire

_NAME_FIELD: Final[dict[str, str]] = {
    types.CLUSTER: "name",
    types.ENDPOINT: "cluster_name",
    types.LISTENER: "name",
    types.ROUTE: "name",
    types.SECRET: "name",
}


def content_version(data: bytes) -> str:
    """The version of a piece of content: 16 hex digits of its BLAKE2b hash.

    Every replica and every restart computes the same version for the same bytes, so a
    reconnecting client that presents its versions downloads nothing that is unchanged.
    """
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def type_url_of(message: Any) -> str:
    return types.type_url_for(message.DESCRIPTOR.full_name)


@dataclass(frozen=True, slots=True, eq=False)
class Resource:
    """One named xDS resource with its wire encodings precomputed.

    `sotw_entry` is the resource framed as one `DiscoveryResponse.resources` element and
    `delta_entry` as one `DeltaDiscoveryResponse.resources` element: responses are built
    by joining these, so no stream ever serializes a resource again.
    """

    type_url: str
    name: str
    version: str
    message: Any = field(repr=False)
    sotw_entry: bytes = field(repr=False)
    delta_entry: bytes = field(repr=False)
    # The names of other resources this one needs (a Cluster's EDS name, a Listener's RDS
    # names), read once here so that every snapshot holding it checks consistency cheaply.
    references: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, message: Any) -> Resource:
        """Wrap an xds-protos message (Cluster, ClusterLoadAssignment, Listener, ...)."""
        type_url = type_url_of(message)
        name_field = _NAME_FIELD.get(type_url, "name")
        name = getattr(message, name_field, "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{types.short_name(type_url)} resource has no {name_field}")
        value = message.SerializeToString(deterministic=True)
        any_bytes = wire.any_message(type_url, value)
        version = content_version(any_bytes)
        delta_resource = (
            wire.text_field(wire.RESOURCE_VERSION, version)
            + wire.field(wire.RESOURCE_RESOURCE, any_bytes)
            + wire.text_field(wire.RESOURCE_NAME, name)
        )
        return cls(
            type_url=type_url,
            name=name,
            version=version,
            message=message,
            sotw_entry=wire.field(wire.RESPONSE_RESOURCES, any_bytes),
            delta_entry=wire.field(wire.DELTA_RESOURCES, delta_resource),
            references=references.of(type_url, message),
        )
