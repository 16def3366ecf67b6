"""What an authenticated proxy may claim: the identity, not the node metadata, decides.

A node's bootstrap claims a role, a cluster and a workspace (`kontinuum.claims`). Its
identity (a SPIFFE ID and the cluster its certificate or token was issued for) must agree:
- the cluster it claims is the identity's cluster;
- a sidecar or ingress gateway claims the workspace of its identity's namespace;
- an east-west gateway holds an identity of the namespace its Gateway is declared in.
Anything else is refused (PermissionError: the stream ends with PERMISSION_DENIED).

Without authentication (a plaintext xDS port, local development only) the node's own
metadata is believed, service account included.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kontinuum.claims import DEFAULT_SERVICE_ACCOUNT, ViewKey, declared_service_account
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.workload import WorkloadIdentity
from kontinuum.xds.identity import Peer


def admit(
    key: ViewKey, node: Any, peer: Peer, trust_domain: str, gateway_namespace: str | None
) -> tuple[ViewKey, WorkloadIdentity]:
    """The view key `node` may have as `peer`, and the identity its certificate names.

    `gateway_namespace`: the namespace of the east-west Gateway declared for the claimed
    cluster (None: there is none).
    """
    view = key.view
    declared = declared_service_account(node)
    if peer.identity is None:
        namespace = view.workspace if view.role != "gateway" else gateway_namespace
        identity = SpiffeId(trust_domain, namespace or "default", declared)
        return _keyed(key, identity), WorkloadIdentity(identity, view.cluster)
    try:
        identity = SpiffeId.parse(peer.identity)
    except ValueError as error:
        raise PermissionError(f"identity {peer.identity!r}: {error}") from None
    cluster = peer.claims.get("cluster")
    if not cluster:
        raise PermissionError(
            f"identity {identity} names no cluster (a certificate's subject OU, a token's "
            "kontinuum.io/cluster claim), so it may claim none"
        )
    if cluster != view.cluster:
        raise PermissionError(
            f"identity {identity} is of cluster {cluster!r}; the node claims cluster "
            f"{view.cluster!r}"
        )
    if view.role == "gateway":
        if gateway_namespace is None:
            raise PermissionError(f"no east-west Gateway is declared for cluster {cluster!r}")
        if identity.namespace != gateway_namespace:
            raise PermissionError(
                f"identity {identity} may not run the east-west gateway of cluster {cluster!r}"
                f" (its Gateway is in namespace {gateway_namespace!r})"
            )
    elif identity.namespace != view.workspace:
        raise PermissionError(
            f"identity {identity} is of workspace {identity.namespace!r}; the node claims "
            f"workspace {view.workspace!r}"
        )
    if declared not in (DEFAULT_SERVICE_ACCOUNT, identity.service_account):
        raise PermissionError(
            f"the node declares service account {declared!r}; its identity is {identity}"
        )
    return _keyed(key, identity), WorkloadIdentity(identity, cluster)


def _keyed(key: ViewKey, identity: SpiffeId) -> ViewKey:
    return replace(key, service_account=identity.service_account)
