"""Bounds on what one xDS client may make the server read, hold and log.

Each is far above what a real Envoy or gRPC client sends (Envoy's node, the largest thing
it sends besides resource names, is about 61 KB with every extension it was built with),
and far below what would let one client exhaust the server. docs/xds-server.md lists them.
"""

from __future__ import annotations

from typing import Any

import grpc

# One message from a client; gRPC refuses a larger one with RESOURCE_EXHAUSTED.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# The node of a stream's first request, which the server keeps while the stream lasts.
MAX_NODE_ID_LENGTH = 1_024  # characters, of `node.id` and of `node.cluster`
MAX_NODE_METADATA_BYTES = 128 * 1024  # serialized
MAX_NODE_BYTES = 256 * 1024  # serialized, the whole node
# Resource names: in one request, per type; and subscribed at once by one stream.
MAX_NAMES_PER_TYPE = 100_000
MAX_NAME_LENGTH = 4_096
MAX_NAMES_PER_STREAM = 100_000
MAX_NAME_CHARACTERS_PER_STREAM = 8 * 1024 * 1024
# A client-controlled text (node id, names, type URLs) in a log line.
MAX_LOGGED_LENGTH = 200
# A message that may quote such texts (a refusal's reason, a NACK's message).
MAX_LOGGED_MESSAGE_LENGTH = 1_024


class ProtocolViolationError(Exception):
    """A request that breaks the protocol (or a bound) badly enough to end the stream."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_node(node: Any) -> None:
    """Refuse a node past the bounds: INVALID_ARGUMENT for an id or cluster too long,
    RESOURCE_EXHAUSTED for metadata or a node too large."""
    for field in ("id", "cluster"):
        length = len(getattr(node, field))
        if length > MAX_NODE_ID_LENGTH:
            raise ProtocolViolationError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node.{field} is limited to {MAX_NODE_ID_LENGTH} characters; this one has "
                f"{length}",
            )
    metadata = node.metadata.ByteSize()
    if metadata > MAX_NODE_METADATA_BYTES:
        raise ProtocolViolationError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"node.metadata is limited to {MAX_NODE_METADATA_BYTES} bytes serialized; this "
            f"one has {metadata}",
        )
    size = node.ByteSize()
    if size > MAX_NODE_BYTES:
        raise ProtocolViolationError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"a node is limited to {MAX_NODE_BYTES} bytes serialized; this one has {size}",
        )


def kept_node(node: Any) -> Any:
    """What the server keeps of a checked node while its stream lasts (and shows in
    CSDS): all but `extensions`, Envoy's list of every extension it was built with (most
    of its ~61 KB), which nothing here reads. `node` loses that list.

    Parsed anew, in memory of its own: a copy, or the request the node came in, would
    hold on to all the memory the whole node was parsed into (about 170 KB for Envoy's).
    """
    node.ClearField("extensions")
    return type(node).FromString(node.SerializeToString())


def shown(text: object, limit: int = MAX_LOGGED_LENGTH) -> str:
    """A client-controlled text (an id, a name) for a log line: quoted, and cut to `limit`
    characters."""
    value = str(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def cut(message: object, limit: int = MAX_LOGGED_MESSAGE_LENGTH) -> str:
    """A message that may quote client-controlled text (a refusal, a NACK) for a log
    line: as it is, on one line, and cut to `limit` characters."""
    value = " ".join(str(message).splitlines())
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"
