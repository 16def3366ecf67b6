"""The seam where a stream's peer identity is established and mapped to a view.

The server asks an `Authenticator` who is on the other end of a stream (from the TLS
peer certificate, a bearer token in the metadata, or nothing at all) and then asks a
`ViewResolver` which view that node, so authenticated, may receive. Either may refuse
with `PermissionError`, which ends the stream with PERMISSION_DENIED; with
`UnauthenticatedError` (the caller proved no identity), which ends it with
UNAUTHENTICATED; or with `LimitExceededError` (it holds as much as it may), which ends it
with RESOURCE_EXHAUSTED. A view revoked later (`SnapshotCache.revoke`) ends its open
streams with PERMISSION_DENIED (`ViewRevokedError`). A resolver not ready to answer yet
(no configuration loaded) raises `ViewUnavailableError`: the stream ends with UNAVAILABLE,
which a proxy retries, never as refused. The xDS layer never looks at node metadata
itself: deciding what a node may claim is policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc


@dataclass(frozen=True, slots=True)
class Peer:
    """The authenticated caller of a stream."""

    address: str
    # e.g. a SPIFFE ID from the client certificate; None when the transport proves nothing.
    identity: str | None = None
    claims: dict[str, str] = field(default_factory=dict)
    # When the credential that proved `identity` expires (Unix time): the stream ends then.
    expires_at: float | None = None


class UnauthenticatedError(PermissionError):
    """The caller proved no identity the server accepts (no, a bad or an expired credential)."""


class ViewRevokedError(PermissionError):
    """The view a stream was given is no longer the caller's to hold (the resolver would
    now refuse it): the stream ends with PERMISSION_DENIED, and nothing more is sent."""


class ViewUnavailableError(Exception):
    """No view can be resolved yet (the server has no configuration): ask to retry."""


class LimitExceededError(PermissionError):
    """The caller already holds as much as it may (e.g. the views of one identity): the
    stream ends with RESOURCE_EXHAUSTED."""


class Authenticator(Protocol):
    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
        """Establish the peer of a stream; raise `UnauthenticatedError` (or PermissionError) to
        refuse it."""


class ViewResolver(Protocol):
    def __call__(self, node: Any, peer: Peer) -> str:
        """The view a node receives; raise PermissionError to refuse it."""


class AnonymousAuthenticator:
    """Trusts the transport to have done nothing: the peer is only an address."""

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
        return Peer(address=str(context.peer()))


def view_by_node_cluster(node: Any, peer: Peer) -> str:
    """Default resolver: a node's view is its `node.cluster` (as Envoy's `--service-cluster`)."""
    return str(node.cluster)
