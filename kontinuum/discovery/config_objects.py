"""What of a config cluster's objects is kontinuum's, and what to say of the invalid ones.
Pure: no I/O.

A config cluster is shared: other Gateway controllers (Istio, Envoy Gateway, Cilium) keep
their Gateways and routes beside kontinuum's, and the Gateway API says each writes status
only for what it controls. So, before anything is parsed (`kontinuum_objects`):

- a GatewayClass whose `spec.controllerName` is `kontinuum.io/gateway-controller` is
  kontinuum's, and so is every Gateway of such a class; other Gateways are not read;
- a route keeps the parentRefs that are kontinuum's: Gateways of its classes, Gateways
  that are not in this cluster at all (they may be the fleet files'; status is written
  only for Gateways kontinuum knows), and Services and ServiceImports (the GAMMA mesh
  attachment: kontinuum is the mesh). Any other parent is another controller's and is
  left out; a route left with none is not kontinuum's at all. Such a route that still
  carries entries of kontinuum's in `status.parents` (it was kontinuum's) is `disowned`:
  its entries are to be removed;
- a Secret is read only if it is of type `kubernetes.io/tls` (a certificate a listener may
  name); the cluster's other Secrets are none of kontinuum's business;
- GatewayClasses themselves are not fleet objects: only their names are kept, and the
  names of kontinuum's well-known classes that Gateways use but no GatewayClass declares
  (deploy/gatewayclasses.yaml was not applied) are reported.

An object whose newest version is invalid is described by a `Rejection`
(`rejection_of`): its generation and errors and, for its status to have something to
say them on, its parentRefs (routes) or targetRefs (policies), read leniently from the
raw object, since it did not parse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kontinuum.control.gateway_certificates import TLS_TYPE
from kontinuum.control.model import ConfigError
from kontinuum.control.objects import Document
from kontinuum.control.routing import (
    EAST_WEST_CLASS,
    GATEWAY_CONTROLLER,
    GATEWAY_GROUP,
    MCS_GROUP,
    ParentRef,
    Rejection,
)

ROUTE_KINDS: Final = ("HTTPRoute", "GRPCRoute")
_CLUSTER_SCOPED: Final = ("ClusterProfile", "GatewayClass", "Namespace")  # as kontinuum reads them
ObjectId = tuple[str, str, str]  # kind, namespace ("" for a ClusterProfile), name


def _body(doc: Document) -> Mapping[str, Any]:
    return doc.body if isinstance(doc.body, Mapping) else {}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def object_id(doc: Document) -> ObjectId:
    """The object a document holds, as the parser names it in its errors (a namespaced
    object without a namespace is in `default`, as the API server has it)."""
    body = _body(doc)
    meta = _mapping(body.get("metadata"))
    kind = _string(body.get("kind"))
    namespace = "" if kind in _CLUSTER_SCOPED else _string(meta.get("namespace") or "default")
    return (kind, namespace, _string(meta.get("name")))


def error_id(error: ConfigError) -> ObjectId:
    return (error.kind, error.namespace, error.name)


def generation(doc: Document) -> int:
    found = _mapping(_body(doc).get("metadata")).get("generation")
    return found if isinstance(found, int) else 0


def uid(doc: Document) -> str:
    return _string(_mapping(_body(doc).get("metadata")).get("uid"))


_MESH_PARENTS: Final = {("", "Service"), (MCS_GROUP, "ServiceImport")}
WELL_KNOWN_CLASSES: Final = ("kontinuum", EAST_WEST_CLASS)


@dataclass(frozen=True, slots=True)
class Owned:
    """What of a config cluster is kontinuum's (see the module doc)."""

    docs: tuple[Document, ...]
    classes: tuple[str, ...]  # kontinuum's GatewayClasses
    disowned: tuple[ObjectId, ...] = ()  # routes no longer kontinuum's, with its entries
    missing_classes: tuple[str, ...] = ()  # well-known classes Gateways name, undeclared


def _ours(
    ref: Mapping[str, Any],
    route_namespace: str,
    ours: set[tuple[str, str]],
    others: set[tuple[str, str]],
) -> bool:
    """Whether a parentRef is kontinuum's (see the module doc)."""
    group = ref.get("group", GATEWAY_GROUP)
    kind = ref.get("kind", "Gateway")
    if (group, kind) in _MESH_PARENTS:
        return True
    if (group, kind) != (GATEWAY_GROUP, "Gateway"):
        return False
    gateway = (_string(ref.get("namespace")) or route_namespace, _string(ref.get("name")))
    return gateway in ours or gateway not in others


def _carries_our_entries(doc: Document) -> bool:
    parents = _mapping(_body(doc).get("status")).get("parents")
    return isinstance(parents, list) and any(
        isinstance(p, Mapping) and p.get("controllerName") == GATEWAY_CONTROLLER for p in parents
    )


def _own_parents(
    doc: Document, ours: set[tuple[str, str]], others: set[tuple[str, str]]
) -> Document | None:
    """The route with only the parentRefs that are kontinuum's; None when none are."""
    body = _body(doc)
    spec = _mapping(body.get("spec"))
    refs = spec.get("parentRefs")
    if not isinstance(refs, list) or not refs:
        return doc  # malformed or missing: the parser says so
    namespace = object_id(doc)[1]
    kept = [r for r in refs if not isinstance(r, Mapping) or _ours(r, namespace, ours, others)]
    if not kept:
        return None
    if len(kept) == len(refs):
        return doc
    return Document(doc.file, {**body, "spec": {**spec, "parentRefs": kept}}, doc.index)


def kontinuum_objects(docs: Iterable[Document]) -> Owned:
    """What of the documents is kontinuum's to read (see the module doc)."""
    documents = list(docs)
    declared = {object_id(d)[2]: d for d in documents if object_id(d)[0] == "GatewayClass"}
    classes = sorted(
        name
        for name, doc in declared.items()
        if _mapping(_body(doc).get("spec")).get("controllerName") == GATEWAY_CONTROLLER
    )
    ours: set[tuple[str, str]] = set()
    others: set[tuple[str, str]] = set()
    named: set[str] = set()
    for doc in documents:
        kind, namespace, name = object_id(doc)
        if kind == "Gateway":
            gateway_class = _string(_mapping(_body(doc).get("spec")).get("gatewayClassName"))
            named.add(gateway_class)
            (ours if gateway_class in classes else others).add((namespace, name))
    kept: list[Document] = []
    disowned: list[ObjectId] = []
    for doc in documents:
        kind, namespace, name = object_id(doc)
        if kind == "GatewayClass" or (kind == "Gateway" and (namespace, name) in others):
            continue
        if kind == "Secret" and _body(doc).get("type") != TLS_TYPE:
            continue  # no listener can use it: not read at all
        if kind in ROUTE_KINDS:
            own = _own_parents(doc, ours, others)
            if own is None:
                if _carries_our_entries(doc):
                    disowned.append((kind, namespace, name))
                continue
            doc = own
        kept.append(doc)
    missing = tuple(c for c in WELL_KNOWN_CLASSES if c in named and c not in declared)
    return Owned(tuple(kept), tuple(classes), tuple(sorted(disowned)), missing)


def _parents(doc: Document) -> tuple[ParentRef, ...]:
    """A route's parentRefs, read leniently (what is not a string is left out)."""
    namespace = object_id(doc)[1]
    refs = _mapping(_body(doc).get("spec")).get("parentRefs")
    found = []
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, Mapping) or not _string(ref.get("name")):
            continue
        port = ref.get("port")
        section = ref.get("sectionName")
        found.append(
            ParentRef(
                kind=_string(ref.get("kind", "Gateway")) or "Gateway",
                namespace=_string(ref.get("namespace")) or namespace,
                name=_string(ref.get("name")),
                port=port if isinstance(port, int) and not isinstance(port, bool) else None,
                section_name=section if isinstance(section, str) and section else None,
                group=_string(ref.get("group", GATEWAY_GROUP)),
            )
        )
    return tuple(found)


def _targets(doc: Document) -> tuple[tuple[str, str], ...]:
    """A policy's targetRefs (kind, name), read leniently."""
    refs = _mapping(_body(doc).get("spec")).get("targetRefs")
    found = []
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and _string(ref.get("kind")) and _string(ref.get("name")):
            found.append((_string(ref.get("kind")), _string(ref.get("name"))))
    return tuple(found)


def rejection_of(doc: Document, errors: Sequence[ConfigError], kept: bool) -> Rejection:
    """What to say of `doc`, invalid with `errors`; `kept`: its last good version serves."""
    kind, namespace, name = object_id(doc)
    return Rejection(
        kind,
        namespace,
        name,
        generation(doc),
        tuple(f"{e.field}: {e.message}" if e.field else e.message for e in errors),
        kept=kept,
        parents=_parents(doc) if kind in ROUTE_KINDS else (),
        targets=_targets(doc) if kind == "LocalityPolicy" else (),
    )
