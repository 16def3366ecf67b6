"""Gateway HTTP conformance: how requests match rules on the base Gateway `same-namespace`,
as upstream's HTTPRouteMatching, HTTPRouteHeaderMatching, HTTPRouteMethodMatching,
HTTPRouteQueryParamMatching, HTTPRoutePathMatchOrder and HTTPRouteNamedRule cases check
(rules and values are this suite's own)."""

from __future__ import annotations

import pytest

from tests.conformance.base import http_route
from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e

HOST = "shop.example"


def v(n: int, path: str | None = None) -> Expected:
    """Answered by infra-backend-v`n` (which saw `path`, when given)."""
    return Expected(backend=f"infra-backend-v{n}", path=path)


NOT_FOUND = Expected(status=404)


def test_path_and_header_alternatives(conformance: Conformance) -> None:
    """HTTPRouteMatching (core): a rule's matches are alternatives; a longer path prefix wins
    over a shorter one and over a header match of a rule with the implicit `/` prefix;
    prefixes match whole path elements."""
    conformance.apply(
        http_route(
            "plans",
            """  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: plan, value: basic}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /premium}
    - headers: [{name: plan, value: premium}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/"), v(1, "/")),
            (Request(HOST, "/catalog"), v(1, "/catalog")),
            (Request(HOST, "/premium"), v(2, "/premium")),
            (Request(HOST, "/premium/offers"), v(2, "/premium/offers")),
            (Request(HOST, "/premiumx"), v(1, "/premiumx")),
            (Request(HOST, "/", headers={"plan": "premium"}), v(2)),
            (Request(HOST, "/premium", headers={"plan": "basic"}), v(2)),
        ],
    )


def test_header_matching(conformance: Conformance) -> None:
    """HTTPRouteHeaderMatching (core): exact values, names compared without case, values
    with; all headers of a match must be present, and more headers win."""
    conformance.apply(
        http_route(
            "headers",
            """  - matches: [{headers: [{name: env, value: prod}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: env, value: staging}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: env, value: staging}, {name: team, value: red}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - headers: [{name: region, value: eu}]
    - headers: [{name: region, value: us}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - headers: [{name: region, value: asia}]
    - headers: [{name: region, value: africa}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/", headers={"env": "prod"}), v(1)),
            (Request(HOST, "/", headers={"ENV": "prod"}), v(1)),
            (Request(HOST, "/", headers={"env": "staging"}), v(2)),
            (Request(HOST, "/", headers={"env": "staging", "team": "red"}), v(3)),
            (Request(HOST, "/", headers={"env": "staging", "team": "blue"}), v(2)),
            (Request(HOST, "/", headers={"team": "red"}), NOT_FOUND),
            (Request(HOST, "/", headers={"region": "eu"}), v(1)),
            (Request(HOST, "/", headers={"region": "us"}), v(1)),
            (Request(HOST, "/", headers={"region": "asia"}), v(2)),
            (Request(HOST, "/", headers={"region": "africa"}), v(2)),
            (Request(HOST, "/", headers={"region": "EU"}), NOT_FOUND),
            (Request(HOST, "/", headers={"env": "Prod"}), NOT_FOUND),
            (Request(HOST, "/"), NOT_FOUND),
        ],
    )


def test_method_matching(conformance: Conformance) -> None:
    """HTTPRouteMethodMatching (extended): a method alone, or with a path and headers; a
    longer path wins over a method, a method over headers."""
    conformance.apply(
        http_route(
            "methods",
            """  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: GET}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /orders}, method: GET}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{headers: [{name: kind, value: bulk}], method: PUT}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - {path: {type: PathPrefix, value: /items}, method: PATCH}
    - path: {type: PathPrefix, value: /stock}
      headers: [{name: kind, value: bulk}]
      method: DELETE
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /basket}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: OPTIONS}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: kind, value: gift}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/", method="POST"), v(1)),
            (Request(HOST, "/", method="GET"), v(2)),
            (Request(HOST, "/", method="HEAD"), NOT_FOUND),
            (Request(HOST, "/orders", method="GET"), v(3)),
            (Request(HOST, "/orders", method="POST"), v(1)),
            (Request(HOST, "/", method="PUT", headers={"kind": "bulk"}), v(1)),
            (Request(HOST, "/", method="PUT"), NOT_FOUND),
            (Request(HOST, "/items/1", method="PATCH"), v(2)),
            (Request(HOST, "/items/1", method="PUT"), NOT_FOUND),
            (Request(HOST, "/stock", method="DELETE", headers={"kind": "bulk"}), v(2)),
            (Request(HOST, "/stock", method="DELETE"), NOT_FOUND),
            # precedence: the longest path first, then a method, then headers
            (Request(HOST, "/basket", method="OPTIONS"), v(1)),
            (Request(HOST, "/", method="OPTIONS", headers={"kind": "gift"}), v(2)),
            (Request(HOST, "/", method="DELETE", headers={"kind": "gift"}), v(3)),
        ],
    )


def test_query_param_matching(conformance: Conformance) -> None:
    """HTTPRouteQueryParamMatching (extended): exact values, names and values with case;
    more parameters win; a path wins over parameters, and so do more headers (the spec's
    precedence counts header matches before query parameter matches)."""
    conformance.apply(
        http_route(
            "query",
            """  - matches: [{queryParams: [{name: animal, value: cat}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dog}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches:
    - queryParams: [{name: animal, value: dog}, {name: size, value: small}]
    - queryParams: [{name: ANIMAL, value: Cat}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - {path: {type: PathPrefix, value: /zoo}, queryParams: [{name: animal, value: cat}]}
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches:
    - {headers: [{name: keeper, value: ann}], queryParams: [{name: animal, value: cat}]}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /farm}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: cow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: keeper, value: bob}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/?animal=cat"), v(1, "/?animal=cat")),
            (Request(HOST, "/?animal=dog"), v(2)),
            (Request(HOST, "/?animal=dog&size=small"), v(3)),
            (Request(HOST, "/?size=small&animal=dog"), v(3)),
            (Request(HOST, "/?ANIMAL=Cat"), v(3)),
            (Request(HOST, "/?animal=CAT"), NOT_FOUND),
            (Request(HOST, "/?animal=bird"), NOT_FOUND),
            (Request(HOST, "/zoo?animal=cat"), v(2)),
            (Request(HOST, "/?animal=cat", headers={"keeper": "ann"}), v(3)),
            # precedence: a path first, then the number of headers, then of parameters
            (Request(HOST, "/farm?animal=cow", headers={"keeper": "bob"}), v(1)),
            (Request(HOST, "/?animal=cow", headers={"keeper": "bob"}), v(3)),
            (Request(HOST, "/?animal=cow"), v(2)),
        ],
    )


def test_path_match_order(conformance: Conformance) -> None:
    """HTTPRoutePathMatchOrder (core): an exact path wins over any prefix, then the longest
    prefix wins, whatever the rules' order."""
    conformance.apply(
        http_route(
            "path-order",
            """  - matches: [{path: {type: PathPrefix, value: /docs/}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /docs/guide/}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /docs/guide/install}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /docs}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /docs/api}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /docs/api/v1}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/docs"), v(1)),
            (Request(HOST, "/docs/api"), v(2)),
            (Request(HOST, "/docs/api/v1"), v(3)),
            (Request(HOST, "/docs/api/v2"), v(3)),
            (Request(HOST, "/docs/guide/install/linux"), v(2)),
            (Request(HOST, "/docs/guide/faq"), v(1)),
            (Request(HOST, "/docs/other"), v(3)),
        ],
    )


def test_named_rules(conformance: Conformance) -> None:
    """HTTPRouteNamedRouteRule (extended): rules may carry a `name`; named and unnamed
    rules serve alike."""
    conformance.apply(
        http_route(
            "named-rules",
            """  - name: catalogue
    matches: [{path: {type: PathPrefix, value: /catalogue}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /basket}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
        )
    )
    (parent,) = conformance.parent_conditions("named-rules")
    assert parent["Accepted"].status == "True"
    conformance.expect_all(
        conformance.gateway(),
        [(Request(HOST, "/catalogue"), v(1)), (Request(HOST, "/basket"), v(2))],
    )


def test_matching_across_routes(conformance: Conformance) -> None:
    """HTTPRouteMatchingAcrossRoutes (core): the rules of two routes on one listener are
    matched together by precedence, each only on its own hostnames."""
    conformance.apply(
        http_route(
            "both-hosts",
            """  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: flavour, value: mint}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            hostnames="[coffee.example, tea.example]",
        ),
        http_route(
            "coffee-only",
            """  - matches:
    - path: {type: PathPrefix, value: /menu}
    - headers: [{name: flavour, value: mocha}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
            hostnames="[coffee.example]",
        ),
    )
    port = conformance.gateway()
    v1, v2 = Expected(backend="infra-backend-v1"), Expected(backend="infra-backend-v2")
    conformance.expect_all(
        port,
        [
            (Request("coffee.example", "/"), v1),
            (Request("tea.example", "/cups"), v1),
            (Request("coffee.example", "/cups", headers={"flavour": "mint"}), v1),
            (Request("coffee.example", "/menu"), v2),
            (Request("coffee.example", "/menu/today"), v2),
            (Request("coffee.example", "/", headers={"flavour": "mocha"}), v2),
            (Request("tea.example", "/menu"), v1),
            (Request("tea.example", "/", headers={"flavour": "mocha"}), v1),
        ],
    )
