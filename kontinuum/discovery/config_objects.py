"""What of a config cluster's objects is kontinuum's, and what to say of the invalid ones.
Pure: no I/O.

A config cluster is shared: other Gateway controllers (Istio, Envoy Gateway, Cilium) keep
their Gateways and routes beside kontinuum's, and the Gateway API says each writes status
only for what it controls. So, before anything is parsed (`kontinuum_objects`):

- a GatewayClass whose `spec.controllerName` is `kontinuum.io/gateway-controller` is
  kontinuum's, and so is every Gateway of such a class; other Gateways are not read;
- a route's parentRefs to Gateways that are not kontinuum's are left out of it, and a
  route left with no parent is not kontinuum's at all (Service and ServiceImport parents,
  the GAMMA mesh attachment, are kontinuum's: it is the mesh);
- GatewayClasses themselves are not fleet objects: only their names are kept.

An object whose newest version is invalid is described by a `Rejection`
(`rejection_of`): its generation and errors and, for its status to have something to
say them on, its parentRefs (routes) or targetRefs (policies), read leniently from the
raw object, since it did not parse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from kontinuum.control.model import ConfigError
from kontinuum.control.objects import Document
from kontinuum.control.routing import GATEWAY_CONTROLLER, GATEWAY_GROUP, ParentRef, Rejection

ROUTE_KINDS: Final = ("HTTPRoute", "GRPCRoute")
_CLUSTER_SCOPED: Final = ("ClusterProfile", "GatewayClass")  # as kontinuum reads them
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


def _parent_gateway(ref: Mapping[str, Any], route_namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the Gateway a parentRef names; None for another kind."""
    group = ref.get("group", GATEWAY_GROUP)
    kind = ref.get("kind", "Gateway")
    if group != GATEWAY_GROUP or kind != "Gateway":
        return None
    return (_string(ref.get("namespace")) or route_namespace, _string(ref.get("name")))


def _own_parents(doc: Document, gateways: set[tuple[str, str]]) -> Document | None:
    """The route with only the parentRefs that are kontinuum's; None when none are."""
    body = _body(doc)
    spec = _mapping(body.get("spec"))
    refs = spec.get("parentRefs")
    if not isinstance(refs, list) or not refs:
        return doc  # malformed or missing: the parser says so
    namespace = object_id(doc)[1]
    kept = []
    for ref in refs:
        gateway = _parent_gateway(ref, namespace) if isinstance(ref, Mapping) else None
        if gateway is None or gateway in gateways:
            kept.append(ref)
    if not kept:
        return None
    if len(kept) == len(refs):
        return doc
    return Document(doc.file, {**body, "spec": {**spec, "parentRefs": kept}}, doc.index)


def kontinuum_objects(docs: Iterable[Document]) -> tuple[list[Document], tuple[str, ...]]:
    """The documents that are kontinuum's to read, and its GatewayClasses' names (see the
    module doc)."""
    documents = list(docs)
    classes = sorted(
        object_id(doc)[2]
        for doc in documents
        if object_id(doc)[0] == "GatewayClass"
        and _mapping(_body(doc).get("spec")).get("controllerName") == GATEWAY_CONTROLLER
    )
    ours = set(classes)
    gateways = {
        object_id(doc)[1:]
        for doc in documents
        if object_id(doc)[0] == "Gateway"
        and _mapping(_body(doc).get("spec")).get("gatewayClassName") in ours
    }
    kept: list[Document] = []
    for doc in documents:
        kind, namespace, name = object_id(doc)
        if kind == "GatewayClass" or (kind == "Gateway" and (namespace, name) not in gateways):
            continue
        if kind in ROUTE_KINDS:
            own = _own_parents(doc, gateways)
            if own is None:
                continue
            doc = own
        kept.append(doc)
    return kept, tuple(classes)


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
