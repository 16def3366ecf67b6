"""Hand-assembled protobuf framing for discovery responses.

Protobuf messages may be concatenated field by field, so a response is built from byte
pieces that were each encoded once: every resource's `Any` is framed when the resource is
created, a response body is framed once per distinct content and shared by all streams,
and a stream appends only its own nonce. grpc then sends the bytes as they are.
"""

from __future__ import annotations

from typing import Final

# Field tags (field_number << 3 | wire type 2, length-delimited), from discovery.proto.
ANY_TYPE_URL: Final = 0x0A  # google.protobuf.Any.type_url = 1
ANY_VALUE: Final = 0x12  # google.protobuf.Any.value = 2

RESPONSE_VERSION_INFO: Final = 0x0A  # DiscoveryResponse.version_info = 1
RESPONSE_RESOURCES: Final = 0x12  # DiscoveryResponse.resources = 2
RESPONSE_TYPE_URL: Final = 0x22  # DiscoveryResponse.type_url = 4
RESPONSE_NONCE: Final = 0x2A  # DiscoveryResponse.nonce = 5

DELTA_RESOURCES: Final = 0x12  # DeltaDiscoveryResponse.resources = 2
DELTA_TYPE_URL: Final = 0x22  # DeltaDiscoveryResponse.type_url = 4
DELTA_NONCE: Final = 0x2A  # DeltaDiscoveryResponse.nonce = 5
DELTA_REMOVED_RESOURCES: Final = 0x32  # DeltaDiscoveryResponse.removed_resources = 6

RESOURCE_VERSION: Final = 0x0A  # Resource.version = 1
RESOURCE_RESOURCE: Final = 0x12  # Resource.resource = 2
RESOURCE_NAME: Final = 0x1A  # Resource.name = 3


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """One length-delimited field: tag, length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def text_field(tag: int, text: str) -> bytes:
    return field(tag, text.encode())


def any_message(type_url: str, value: bytes) -> bytes:
    """A serialized google.protobuf.Any."""
    return text_field(ANY_TYPE_URL, type_url) + field(ANY_VALUE, value)
