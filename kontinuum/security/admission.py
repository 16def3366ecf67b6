"""What an authenticated proxy may claim: the identity, not the node metadata, decides.

A node's bootstrap claims a role, a cluster and a workspace (`kontinuum.claims`). Its
identity (a SPIFFE ID and the cluster its certificate or token was issued for) must agree:
- the cluster it claims is the identity's cluster, and the site of the zone CA that issued
  its credential, when a zone's CA did (`kontinuum.security.zone_ca`);
- a sidecar or ingress gateway claims the workspace of its identity's namespace;
- an ingress gateway of a Gateway with an HTTPS listener holds the Gateway's own identity
  (its namespace, its name as the service account), as an east-west gateway does: its view
  carries the listeners' TLS private keys, which no other workload of the namespace may
  read (`ingress_refusal`); an HTTP-only Gateway's proxy may hold any identity of its
  namespace;
- an east-west gateway holds the identity of its Gateway: the Gateway's namespace, and its
  name as the service account (the Gateway in force for the cluster, as the sidecars see
  it); it gets no workload certificate, since it passes mTLS through unopened;
- nobody holds the control plane's own identity nor a zone's
  (`ns/kontinuum-system/sa/zone-<site>`), which proxies pin as their xDS server.
Anything else is refused (PermissionError: the stream ends with PERMISSION_DENIED).

Without authentication (a plaintext xDS port, local development only) the node's own
metadata is believed, service account included, and the same rules apply to it; an
ingress gateway that declares no service account is taken as its Gateway's own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kontinuum.claims import DEFAULT_SERVICE_ACCOUNT, ViewKey, declared_service_account
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.workload import WorkloadIdentity
from kontinuum.security.xds_auth import ISSUING_SITE_CLAIM
from kontinuum.security.zone_ca import reserved_refusal
from kontinuum.xds.identity import Peer


def admit(
    key: ViewKey,
    node: Any,
    peer: Peer,
    trust_domain: str,
    gateway: tuple[str, str] | None,
    terminates_tls: bool = False,
) -> tuple[ViewKey, WorkloadIdentity | None]:
    """The view key `node` may have as `peer`, and the identity its workload certificate
    is for (None for an east-west gateway, which holds none: it passes mTLS through).

    `gateway`: the (namespace, name) of the east-west Gateway in force for the claimed
    cluster (None: there is none). `terminates_tls`: an ingress gateway's Gateway has an
    HTTPS listener, so only the Gateway's own identity may run it.
    """
    view = key.view
    declared = declared_service_account(node)
    if peer.identity is None:
        if view.role == "gateway":
            return key, None
        if view.role == "ingress" and declared == DEFAULT_SERVICE_ACCOUNT:
            declared = key.gateway  # as Istio's Gateway deployments: the Gateway's own
        identity = SpiffeId(trust_domain, view.workspace, declared)
        _not_reserved(identity)
        _may_run(key, identity, terminates_tls)
        return _keyed(key, identity), WorkloadIdentity(identity, view.cluster)
    try:
        identity = SpiffeId.parse(peer.identity)
    except ValueError as error:
        raise PermissionError(f"identity {peer.identity!r}: {error}") from None
    _not_reserved(identity)
    cluster = peer.claims.get("cluster")
    if not cluster:
        raise PermissionError(
            f"identity {identity} names no cluster (a certificate's subject OU, a token's "
            "kontinuum.io/cluster claim), so it may claim none: a workload certificate "
            "(SDS) is no xDS credential"
        )
    if cluster != view.cluster:
        raise PermissionError(
            f"identity {identity} is of cluster {cluster!r}; the node claims cluster "
            f"{view.cluster!r}"
        )
    issuing_site = peer.claims.get(ISSUING_SITE_CLAIM)
    if issuing_site is not None and issuing_site != view.cluster:
        raise PermissionError(
            f"identity {identity} is issued by the zone CA of site {issuing_site!r}; the node "
            f"claims cluster {view.cluster!r}"
        )
    if view.role == "gateway":
        if gateway is None:
            raise PermissionError(f"no east-west Gateway is in force for cluster {cluster!r}")
        namespace, name = gateway
        if not _is_gateways_own(identity, namespace, name):
            raise PermissionError(
                f"identity {identity} may not run the east-west gateway of cluster "
                f"{cluster!r}: that takes service account {name!r} of namespace "
                f"{namespace!r} (its Gateway {namespace}/{name})"
            )
        return key, None
    if identity.namespace != view.workspace:
        raise PermissionError(
            f"identity {identity} is of workspace {identity.namespace!r}; the node claims "
            f"workspace {view.workspace!r}"
        )
    if declared not in (DEFAULT_SERVICE_ACCOUNT, identity.service_account):
        raise PermissionError(
            f"the node declares service account {declared!r}; its identity is {identity}"
        )
    _may_run(key, identity, terminates_tls)
    return _keyed(key, identity), WorkloadIdentity(identity, cluster)


def ingress_refusal(identity: SpiffeId, namespace: str, gateway: str) -> str | None:
    """Why `identity` may not run the HTTPS Gateway `namespace`/`gateway`, if it may not.

    Its proxies hold its listeners' private keys, Secrets of its namespace or granted to it
    by another (ReferenceGrant): as Istio serves a Gateway's credentials only to proxies
    whose service account may read them, here only to the Gateway's own service account,
    the name it shares with the Gateway (as an east-west gateway's).
    """
    if _is_gateways_own(identity, namespace, gateway):
        return None
    return (
        f"identity {identity} may not run HTTPS Gateway {namespace}/{gateway}: that takes "
        f"service account {gateway!r} of namespace {namespace!r} (only the Gateway's own "
        "identity is given its listeners' TLS keys)"
    )


def _is_gateways_own(identity: SpiffeId, namespace: str, gateway: str) -> bool:
    """Whether `identity` is Gateway `namespace`/`gateway`'s own: its name as the service
    account, in its namespace (what both east-west and HTTPS ingress gateways require)."""
    return (identity.namespace, identity.service_account) == (namespace, gateway)


def _may_run(key: ViewKey, identity: SpiffeId, terminates_tls: bool) -> None:
    if key.view.role != "ingress" or not terminates_tls:
        return
    refusal = ingress_refusal(identity, key.view.workspace, key.gateway)
    if refusal is not None:
        raise PermissionError(refusal)


def _not_reserved(identity: SpiffeId) -> None:
    if refusal := reserved_refusal(identity):
        raise PermissionError(f"{refusal}: no proxy holds it")


def _keyed(key: ViewKey, identity: SpiffeId) -> ViewKey:
    return replace(key, service_account=identity.service_account)
