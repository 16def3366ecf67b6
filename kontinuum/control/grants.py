"""ReferenceGrants of the fleet-wide files: who may reach which workspace's services.

A workspace opens its services to another workspace with a Gateway API `ReferenceGrant`; see
the comment below for the forms kontinuum reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from kontinuum.control.fleet import (
    _NOT_FLEET_WIDE,
    CLUSTER_KINDS,
    FLEET_KINDS,
    _expand,
    _header,
)
from kontinuum.control.kube_limits import check_object_meta, within
from kontinuum.control.model import ConfigError, Grant, grant_order
from kontinuum.control.objects import (
    Document,
    ObjectReader,
    dns1035_label,
    dns_label,
    dns_subdomain,
)

# A workspace opens its services to another workspace with a Gateway API `ReferenceGrant`
# (`gateway.networking.k8s.io/v1beta1`, or `v1`), the standard "this namespace may refer to
# my objects" handshake, in the fleet-wide *.yaml files and in the provider's namespace:
#
#     kind: ReferenceGrant
#     metadata: {name: demo-reaches-billing, namespace: payments}
#     spec:
#       from: [{group: "", kind: Namespace, namespace: demo}]
#       to: [{group: "", kind: Service, name: billing}]    # no name: every Service
#
# `from` names kind `Namespace` rather than a route kind: what is granted is reachability for a
# whole consumer workspace (every proxy of it), not one referring object. The annotation
# `kontinuum.io/service-accounts: web,batch` narrows it to those identities of the consumer
# workspace at the provider's inbound authorization (a ReferenceGrant cannot name one).
#
# The Gateway API's own use parses too: `from` HTTPRoutes or GRPCRoutes of a namespace
# (group gateway.networking.k8s.io) lets those routes name the provider's Services (or, group
# multicluster.x-k8s.io, ServiceImports) as backends; `from` Gateways `to` Secrets lets the
# Gateways of a namespace name the provider's Secrets as listener certificates
# (`gateway_certificates`). Such a grant opens nothing to proxies.
# An entry of another group, or of a kind kontinuum does not read (a `TLSRoute` or
# `ListenerSet` `from`, a `ConfigMap` `to`), grants nothing, as the Gateway API says: it
# matches no object kontinuum reads or refers to. It is no error; the other entries apply.

MAX_GRANT_ENTRIES: Final = 16  # as the Gateway API CRD limits spec.from and spec.to
_ROUTE_GROUP: Final = "gateway.networking.k8s.io"
_MCS_GROUP: Final = "multicluster.x-k8s.io"
# Per side: the kinds of each group that a grant's entries may match.
_GRANT_KINDS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "from": {
        "": ("Namespace",),  # a grant opens services to a whole workspace
        # the routes that may name backends, the Gateways that may name certificates
        _ROUTE_GROUP: ("HTTPRoute", "GRPCRoute", "Gateway"),
    },
    "to": {
        "": ("Service", "Secret"),  # services, all or one by name; a Gateway's certificates
        _MCS_GROUP: ("ServiceImport",),  # the cluster-set services routes may name
    },
}


def _grant_entries(
    obj: ObjectReader, spec: dict[str, object], key: str
) -> list[tuple[str, dict[str, object], str]]:
    """The (path, entry, kind) of each entry of `spec.<key>` that may match something."""
    path = f"spec.{key}"
    if not within(obj, spec, key, path, MAX_GRANT_ENTRIES):
        return []
    entries = list(obj.items(spec, key, path, required=True))
    if spec.get(key) == []:
        obj.error(path, "must hold at least one entry")
    groups = _GRANT_KINDS[key]
    found: list[tuple[str, dict[str, object], str]] = []
    for entry_path, entry in entries:
        group = obj.string(entry, "group", f"{entry_path}.group", required=True)
        kind = obj.string(entry, "kind", f"{entry_path}.kind", required=True)
        if group is not None and kind is not None and kind in groups.get(group, ()):
            found.append((entry_path, entry, kind))
    return found


SERVICE_ACCOUNTS_ANNOTATION: Final = "kontinuum.io/service-accounts"


def _granted_service_accounts(obj: ObjectReader, workspace: bool) -> tuple[str, ...]:
    """The service accounts a workspace grant is narrowed to (its annotation), checked."""
    metadata = obj.body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or SERVICE_ACCOUNTS_ANNOTATION not in annotations:
        return ()
    path = f"metadata.annotations[{SERVICE_ACCOUNTS_ANNOTATION}]"
    raw = annotations[SERVICE_ACCOUNTS_ANNOTATION]
    if raw is None:
        raw = ""  # as kubectl reads it: named, with no account, which is an error below
    if not isinstance(raw, str):
        return ()  # reported by check_object_meta
    if not workspace:
        obj.error(path, "narrows a grant from a Namespace only (its workspace's identities)")
        return ()
    accounts = [a.strip() for a in raw.split(",") if a.strip()]
    if not accounts:
        obj.error(path, "must name at least one service account (comma-separated)")
    for account in accounts:
        if (problem := dns_label(account)) is not None:
            obj.error(path, f"service account {account!r}: {problem}")
    return tuple(sorted(set(accounts)))


def _reference_grant(obj: ObjectReader) -> list[Grant]:
    check_object_meta(obj)
    spec = obj.mapping(obj.body, "spec", "spec", required=True)
    if obj.errors:
        return []
    consumers: list[tuple[str, str]] = []
    for path, entry, kind in _grant_entries(obj, spec, "from"):
        namespace = obj.string(
            entry, "namespace", f"{path}.namespace", required=True, check=dns_label
        )
        if namespace is not None:
            consumers.append((kind, namespace))
    workspace = any(kind == "Namespace" for kind, _ in consumers)
    services: list[tuple[str, str | None]] = []
    for path, entry, kind in _grant_entries(obj, spec, "to"):
        if kind in ("ServiceImport", "Secret") and workspace:
            to = "routes only (from HTTPRoute or GRPCRoute)"
            if kind == "Secret":
                to = "Gateways only (from Gateway)"
            obj.error(
                f"{path}.kind",
                f"a {kind} can be granted to {to}: a Namespace grant opens Services",
            )
        check = dns_subdomain if kind == "Secret" else dns1035_label
        services.append((kind, obj.string(entry, "name", f"{path}.name", check=check)))
    accounts = _granted_service_accounts(obj, workspace)
    return [
        Grant(
            obj.namespace,
            consumer,
            service,
            from_kind,
            to_kind,
            accounts if from_kind == "Namespace" else (),
        )
        for from_kind, consumer in consumers
        for to_kind, service in services
    ]


def parse_grants(docs: Iterable[Document]) -> tuple[tuple[Grant, ...], list[ConfigError]]:
    """The grants declared by the fleet-wide documents' ReferenceGrants, sorted.

    Reads the same documents as `parse_fleet_objects` and reports only the ReferenceGrants'
    errors (the other documents' errors are that function's). A ReferenceGrant with any error
    grants nothing.
    """
    grants: set[Grant] = set()
    seen: dict[tuple[str, str], str] = {}
    errors: list[ConfigError] = []
    for doc in _expand(docs, []):
        obj, kind = _header(doc, FLEET_KINDS, CLUSTER_KINDS, _NOT_FLEET_WIDE)
        if kind != "ReferenceGrant":
            continue
        if not obj.errors:
            key = (obj.namespace, obj.name)
            if key in seen:
                obj.error("metadata.name", f"duplicate ReferenceGrant, also in {seen[key]}")
            seen.setdefault(key, doc.file)
        if not obj.errors:
            found = _reference_grant(obj)
            if not obj.errors:
                grants.update(found)
        errors.extend(obj.errors)
    ordered = sorted(grants, key=grant_order)
    return tuple(ordered), errors
