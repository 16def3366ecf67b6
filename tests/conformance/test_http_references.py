"""Gateway HTTP conformance: references a route makes, and their status. As upstream's
HTTPRouteReferenceGrant, HTTPRouteInvalidReferenceGrant,
HTTPRouteInvalidCrossNamespaceBackendRef, HTTPRouteInvalidNonExistentBackendRef,
HTTPRouteInvalidBackendRefUnknownKind, HTTPRoutePartiallyInvalidViaInvalidReferenceGrant,
HTTPRouteInvalidCrossNamespaceParentRef, HTTPRouteInvalidParentRefNotMatchingListenerPort,
HTTPRouteInvalidParentRefNotMatchingSectionName,
HTTPRouteInvalidParentRefSectionNameNotMatchingPort and HTTPRouteDisallowedKind check: a
backend the route may not use, or that does not exist, answers 500 (the spec's rule for a
rule whose backends are all invalid) with `ResolvedRefs=False`; a parent the route may not
attach to is `Accepted=False`."""

from __future__ import annotations

import pytest

from tests.conformance.base import APP_BACKEND, INFRA, WEB_BACKEND, case_gateway, http_route
from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e

HOST = "refs.example"
SERVER_ERROR = Expected(status=500)

WEB_ROUTE = http_route(
    "to-web",
    f"""  - backendRefs: [{{name: web-backend, namespace: {WEB_BACKEND}, port: 8080}}]
""",
)


def grant(
    name: str,
    *,
    namespace: str = WEB_BACKEND,
    from_group: str = "gateway.networking.k8s.io",
    from_kind: str = "HTTPRoute",
    from_namespace: str = INFRA,
    to_group: str = '""',
    to_kind: str = "Service",
    to_name: str | None = "web-backend",
    version: str = "v1beta1",
) -> str:
    """A ReferenceGrant in `namespace`, by default letting infra's HTTPRoutes use web-backend."""
    name_field = "" if to_name is None else f", name: {to_name}"
    return f"""apiVersion: gateway.networking.k8s.io/{version}
kind: ReferenceGrant
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  from: [{{group: {from_group}, kind: {from_kind}, namespace: {from_namespace}}}]
  to: [{{group: {to_group}, kind: {to_kind}{name_field}}}]
"""


def resolved_refs(conformance: Conformance, route: str, namespace: str = INFRA) -> tuple[str, str]:
    (parent,) = conformance.parent_conditions(route, namespace)
    return parent["ResolvedRefs"].status, parent["ResolvedRefs"].reason


def accepted(conformance: Conformance, route: str, namespace: str = INFRA) -> tuple[str, str]:
    (parent,) = conformance.parent_conditions(route, namespace)
    return parent["Accepted"].status, parent["Accepted"].reason


@pytest.mark.parametrize("version", ["v1beta1", "v1"])
def test_reference_grant(conformance: Conformance, version: str) -> None:
    """HTTPRouteReferenceGrant (core): a grant in the backend's namespace opens it to the
    route's namespace; once the grant is gone, the rule answers 500 and the route says
    `RefNotPermitted`."""
    assert conformance.apply(grant("infra-may-use-web", version=version), WEB_ROUTE) == ()
    assert resolved_refs(conformance, "to-web") == ("True", "ResolvedRefs")
    port = conformance.gateway()
    conformance.expect(port, Request(HOST, "/"), Expected(backend="web-backend"))

    conformance.apply(WEB_ROUTE)
    assert resolved_refs(conformance, "to-web") == ("False", "RefNotPermitted")
    assert accepted(conformance, "to-web") == ("True", "Accepted")
    conformance.expect(port, Request(HOST, "/"), SERVER_ERROR)


def test_a_grant_names_one_service(conformance: Conformance) -> None:
    """A grant without `to.name` opens every Service of its namespace."""
    conformance.apply(grant("all-of-web", to_name=None), WEB_ROUTE)
    assert resolved_refs(conformance, "to-web") == ("True", "ResolvedRefs")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), Expected(backend="web-backend"))


def test_invalid_reference_grants(conformance: Conformance) -> None:
    """HTTPRouteInvalidReferenceGrant (core): grants that differ from the reference in one
    part each (where they live, from group, kind or namespace, to group, kind or name) open
    nothing, and none of them is an error in the files: not even one naming a kind that
    kontinuum does not read (TLSRoute, ConfigMap), which the Gateway API allows."""
    wrong = [
        grant("wrong-namespace", namespace=INFRA),
        grant("wrong-from-group", from_group="example.com"),
        grant("wrong-from-kind", from_kind="GRPCRoute"),
        grant("wrong-from-namespace", from_namespace=APP_BACKEND),
        grant("wrong-to-group", to_group="example.com"),
        grant("wrong-to-kind", to_kind="Secret"),
        grant("wrong-to-name", to_name="web-frontend"),
        grant("unread-from-kind", from_kind="TLSRoute"),
        grant("unread-to-kind", to_kind="ConfigMap"),
    ]
    assert conformance.apply(*wrong, WEB_ROUTE) == ()
    assert resolved_refs(conformance, "to-web") == ("False", "RefNotPermitted")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), SERVER_ERROR)


def test_a_grant_s_entries_of_unread_kinds_match_nothing_and_the_rest_applies(
    conformance: Conformance,
) -> None:
    """A grant whose `from` and `to` also name kinds kontinuum does not read (a TLSRoute, a
    ConfigMap) is no error: those entries match nothing, and its HTTPRoute and Service
    entries open web-backend to the route."""
    mixed = f"""apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {{name: mixed-kinds, namespace: {WEB_BACKEND}}}
spec:
  from:
  - {{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: {INFRA}}}
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}
  to:
  - {{group: "", kind: ConfigMap}}
  - {{group: "", kind: Service, name: web-backend}}
"""
    assert conformance.apply(mixed, WEB_ROUTE) == ()
    assert resolved_refs(conformance, "to-web") == ("True", "ResolvedRefs")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), Expected(backend="web-backend"))


def test_cross_namespace_backend_without_grant(conformance: Conformance) -> None:
    """HTTPRouteInvalidCrossNamespaceBackendRef (core)."""
    conformance.apply(WEB_ROUTE)
    assert resolved_refs(conformance, "to-web") == ("False", "RefNotPermitted")
    assert accepted(conformance, "to-web") == ("True", "Accepted")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), SERVER_ERROR)


def test_nonexistent_backend(conformance: Conformance) -> None:
    """HTTPRouteInvalidNonExistentBackendRef (core): `BackendNotFound`, and 500."""
    conformance.apply(
        http_route(
            "nowhere",
            """  - backendRefs: [{name: no-such-backend, port: 8080}]
""",
        )
    )
    assert resolved_refs(conformance, "nowhere") == ("False", "BackendNotFound")
    assert accepted(conformance, "nowhere") == ("True", "Accepted")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), SERVER_ERROR)


def test_backend_of_unknown_kind(conformance: Conformance) -> None:
    """HTTPRouteInvalidBackendRefUnknownKind (core): `InvalidKind`; that rule answers 500,
    the route's other rules still serve."""
    conformance.apply(
        http_route(
            "unknown-kind",
            """  - matches: [{path: {type: PathPrefix, value: /odd}}]
    backendRefs: [{group: example.com, kind: Bucket, name: infra-backend-v2, port: 8080}]
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        )
    )
    assert resolved_refs(conformance, "unknown-kind") == ("False", "InvalidKind")
    port = conformance.gateway()
    conformance.expect(port, Request(HOST, "/odd"), SERVER_ERROR)
    conformance.expect(port, Request(HOST, "/"), Expected(backend="infra-backend-v1"))


def test_partially_invalid_via_reference_grant(conformance: Conformance) -> None:
    """HTTPRoutePartiallyInvalidViaInvalidReferenceGrant (core): the rule whose backend is
    not granted answers 500; the rule whose backend is granted serves."""
    conformance.apply(
        grant("app-v1-only", namespace=APP_BACKEND, to_name="app-backend-v1"),
        http_route(
            "partly",
            f"""  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]
    backendRefs: [{{name: app-backend-v2, namespace: {APP_BACKEND}, port: 8080}}]
  - backendRefs: [{{name: app-backend-v1, namespace: {APP_BACKEND}, port: 8080}}]
""",
        ),
    )
    assert resolved_refs(conformance, "partly") == ("False", "RefNotPermitted")
    port = conformance.gateway()
    conformance.expect(port, Request(HOST, "/v2"), SERVER_ERROR)
    conformance.expect(port, Request(HOST, "/"), Expected(backend="app-backend-v1"))


def test_cross_namespace_parent_not_allowed(conformance: Conformance) -> None:
    """HTTPRouteInvalidCrossNamespaceParentRef (core): a Gateway whose listener allows only
    its own namespace's routes does not accept another namespace's (`NotAllowedByListeners`)
    and serves nothing of it."""
    conformance.apply(
        http_route(
            "from-web",
            """  - backendRefs: [{name: web-backend, port: 8080}]
""",
            parents=f"[{{name: same-namespace, namespace: {INFRA}}}]",
            namespace=WEB_BACKEND,
        )
    )
    assert accepted(conformance, "from-web", WEB_BACKEND) == ("False", "NotAllowedByListeners")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), Expected(status=404))


def test_parent_ref_not_matching_listener_port(conformance: Conformance) -> None:
    """HTTPRouteInvalidParentRefNotMatchingListenerPort (core): a parentRef `port` that no
    listener has: `NoMatchingParent`."""
    other = conformance.free_port()
    conformance.apply(
        http_route(
            "wrong-port",
            """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents=f"[{{name: same-namespace, port: {other}}}]",
        )
    )
    assert accepted(conformance, "wrong-port") == ("False", "NoMatchingParent")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), Expected(status=404))


def test_parent_ref_not_matching_section_name(conformance: Conformance) -> None:
    """HTTPRouteInvalidParentRefNotMatchingSectionName (core): a `sectionName` that no
    listener has: `NoMatchingParent`."""
    conformance.apply(
        http_route(
            "wrong-section",
            """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents="[{name: same-namespace, sectionName: not-a-listener}]",
        )
    )
    assert accepted(conformance, "wrong-section") == ("False", "NoMatchingParent")
    conformance.expect(conformance.gateway(), Request(HOST, "/"), Expected(status=404))


def test_disallowed_kind(conformance: Conformance) -> None:
    """HTTPRouteDisallowedKind (core): a listener whose `allowedRoutes.kinds` leaves out
    HTTPRoute does not accept one (`NotAllowedByListeners`). Upstream's listener is a TLS
    passthrough one for TLSRoutes; here an HTTP listener for GRPCRoutes only."""
    conformance.apply(
        case_gateway(
            "grpc-only",
            f"""  - name: grpc
    port: {conformance.free_port()}
    protocol: HTTP
    allowedRoutes:
      namespaces: {{from: Same}}
      kinds: [{{kind: GRPCRoute}}]
""",
        ),
        http_route(
            "disallowed-kind",
            """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents="[{name: grpc-only}]",
        ),
    )
    assert accepted(conformance, "disallowed-kind") == ("False", "NotAllowedByListeners")


def test_section_name_not_matching_port(conformance: Conformance) -> None:
    """HTTPRouteInvalidParentRefSectionNameNotMatchingPort (extended): a parentRef naming a
    listener and a port that listener does not have: `NoMatchingParent`."""
    other = conformance.free_port()
    conformance.apply(
        http_route(
            "section-and-port",
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
            parents=f"[{{name: same-namespace, sectionName: http, port: {other}}}]",
        )
    )
    assert accepted(conformance, "section-and-port") == ("False", "NoMatchingParent")


def test_an_invalid_backend_keeps_its_share(conformance: Conformance) -> None:
    """The spec's rule for a rule with valid and invalid backends: the requests the invalid
    backend's weight would have had get 500, the others reach the valid backend."""
    conformance.apply(
        http_route(
            "half-missing",
            """  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 1}
    - {name: no-such-backend, port: 8080, weight: 1}
""",
        )
    )
    assert resolved_refs(conformance, "half-missing") == ("False", "BackendNotFound")
    port = conformance.gateway()
    conformance.expect(port, Request(HOST, "/"), SERVER_ERROR, consecutive=1)
    conformance.expect(
        port, Request(HOST, "/"), Expected(backend="infra-backend-v1"), consecutive=1
    )
    outcomes = [conformance.send(port, Request(HOST, "/")) for _ in range(100)]
    served = sum(1 for a in outcomes if (a.status, a.backend) == (200, "infra-backend-v1"))
    failed = sum(1 for a in outcomes if (a.status, a.backend) == (500, None))
    assert served + failed == 100
    assert 20 <= served <= 80, served  # 1:1 of 100: 50, the bounds 6 standard deviations


def test_cross_namespace_parent_allowed_by_all(conformance: Conformance) -> None:
    """A listener allowing routes from `All` namespaces accepts another namespace's route,
    which serves its own namespace's backend without a grant (the counterpart of
    HTTPRouteInvalidCrossNamespaceParentRef)."""
    conformance.apply(
        http_route(
            "from-web",
            "  - backendRefs: [{name: web-backend, port: 8080}]\n",
            parents=f"[{{name: all-namespaces, namespace: {INFRA}}}]",
            namespace=WEB_BACKEND,
        )
    )
    assert accepted(conformance, "from-web", WEB_BACKEND) == ("True", "Accepted")
    assert resolved_refs(conformance, "from-web", WEB_BACKEND) == ("True", "ResolvedRefs")
    port = conformance.gateway("all-namespaces")
    conformance.expect(port, Request(HOST, "/"), Expected(backend="web-backend"))


def test_cross_namespace_by_selector(conformance: Conformance) -> None:
    """HTTPRouteCrossNamespace (core): a listener that selects namespaces by label accepts
    a route of a selected namespace, and serves it; a route of another namespace is
    `NotAllowedByListeners`."""
    assert (
        conformance.apply(
            http_route(
                "cross-namespace",
                """  - backendRefs: [{name: web-backend, port: 8080}]
""",
                parents=f"[{{name: backend-namespaces, namespace: {INFRA}}}]",
                namespace=WEB_BACKEND,
                hostnames="[selected.example]",
            ),
            http_route(
                "not-selected",
                """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
                parents="[{name: backend-namespaces}]",
                hostnames="[unselected.example]",
            ),
        )
        == ()
    )
    (parent,) = conformance.parent_conditions("cross-namespace", WEB_BACKEND)
    assert (parent["Accepted"].status, parent["ResolvedRefs"].status) == ("True", "True")
    (other,) = conformance.parent_conditions("not-selected")
    assert (other["Accepted"].status, other["Accepted"].reason) == (
        "False",
        "NotAllowedByListeners",
    )
    port = conformance.gateway("backend-namespaces")
    conformance.expect(port, Request("selected.example"), Expected(backend="web-backend"))
    conformance.expect(port, Request("unselected.example"), Expected(status=404))
