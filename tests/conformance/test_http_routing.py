"""Gateway HTTP conformance, core: a route attaches to a base Gateway and requests reach its
backends by path, as upstream's HTTPRouteSimpleSameNamespace and HTTPRouteExactPathMatching
cases check."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e


def route(name: str, rules: str, *, gateway: str = "same-namespace", extra: str = "") -> str:
    """An HTTPRoute of the infra namespace on base Gateway `gateway`."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: {gateway}}}]{extra}
  rules:
{rules}"""


def test_simple_same_namespace(conformance: Conformance) -> None:
    """HTTPRouteSimpleSameNamespace: a route in the Gateway's namespace is accepted and
    serves every path from its one backend."""
    conformance.apply(
        route(
            "gateway-conformance-infra-test",
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        )
    )
    (parent,) = conformance.parent_conditions("gateway-conformance-infra-test")
    assert (parent["Accepted"].status, parent["Accepted"].reason) == ("True", "Accepted")
    assert (parent["ResolvedRefs"].status, parent["ResolvedRefs"].reason) == (
        "True",
        "ResolvedRefs",
    )
    port = conformance.gateway("same-namespace")
    conformance.expect(
        port,
        Request(host="anything.example", path="/"),
        Expected(backend="infra-backend-v1", path="/"),
    )


def test_exact_path_matching(conformance: Conformance) -> None:
    """HTTPRouteExactPathMatching: `Exact` paths match that path only, not a longer one nor
    one with a trailing slash."""
    conformance.apply(
        route(
            "exact-matching",
            """  - matches: [{path: {type: Exact, value: /one}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /two}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
        )
    )
    port = conformance.gateway("same-namespace")
    conformance.expect_all(
        port,
        [
            (Request("example.com", "/one"), Expected(backend="infra-backend-v1", path="/one")),
            (Request("example.com", "/two"), Expected(backend="infra-backend-v2", path="/two")),
            (Request("example.com", "/"), Expected(status=404)),
            (Request("example.com", "/one/example"), Expected(status=404)),
            (Request("example.com", "/two/"), Expected(status=404)),
        ],
    )
