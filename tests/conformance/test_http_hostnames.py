"""Gateway HTTP conformance: listener and route hostnames, as upstream's
HTTPRouteListenerHostnameMatching, HTTPRouteHostnameIntersection and
GatewayHTTPListenerIsolation cases check (this suite's own names): a route serves the
intersection of its hostnames with its listener's."""

from __future__ import annotations

import pytest

from tests.conformance.base import case_gateway, http_route
from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e

NOT_FOUND = Expected(status=404)


def v(n: int, host: str | None = None) -> Expected:
    """Answered by infra-backend-v`n`, which saw `host` as the Host (when given)."""
    return Expected(backend=f"infra-backend-v{n}", host=host)


def hostname_listener(name: str, port: int, hostname: str | None) -> str:
    host = "" if hostname is None else f"\n    hostname: '{hostname}'"
    return f"""  - name: {name}
    port: {port}
    protocol: HTTP{host}
    allowedRoutes: {{namespaces: {{from: Same}}}}
"""


def backend(n: int) -> str:
    return f"""  - backendRefs: [{{name: infra-backend-v{n}, port: 8080}}]
"""


def test_listener_hostname_matching(conformance: Conformance) -> None:
    """HTTPRouteListenerHostnameMatching (core): listeners of one port told apart by
    hostname; an exact listener hostname wins over a wildcard one that also matches."""
    port = conformance.free_port()
    listeners = (
        hostname_listener("apex", port, "garden.example")
        + hostname_listener("shop", port, "shop.garden.example")
        + hostname_listener("any-garden", port, "*.garden.example")
        + hostname_listener("any-park", port, "*.park.example")
    )
    conformance.apply(
        case_gateway("by-hostname", listeners),
        http_route("apex", backend(1), parents="[{name: by-hostname, sectionName: apex}]"),
        http_route("shop", backend(2), parents="[{name: by-hostname, sectionName: shop}]"),
        http_route(
            "wildcards",
            backend(3),
            parents="[{name: by-hostname, sectionName: any-garden}, "
            "{name: by-hostname, sectionName: any-park}]",
        ),
    )
    conformance.gateway("by-hostname")
    conformance.expect_all(
        port,
        [
            (Request("garden.example"), v(1)),
            (Request("shop.garden.example"), v(2)),
            (Request("tools.garden.example"), v(3)),
            (Request("deep.tools.garden.example"), v(3)),
            (Request("swing.park.example"), v(3)),
            (Request("park.example"), NOT_FOUND),
            (Request("garden.example.org"), NOT_FOUND),
        ],
    )


def test_hostname_intersection(conformance: Conformance) -> None:
    """HTTPRouteHostnameIntersection (core): a route's exact or wildcard hostnames meet a
    listener's exact or wildcard one; hostnames that meet no listener's serve nothing, and
    a Host's port is ignored when matching, then forwarded unmodified to the backend."""
    port, open_port = conformance.free_ports(2)
    listeners = (
        hostname_listener("exact", port, "api.orchard.example")
        + hostname_listener("wild", port, "*.meadow.example")
        + hostname_listener("other-wild", port, "*.brook.example")
    )
    conformance.apply(
        case_gateway("intersecting", listeners),
        case_gateway("open", hostname_listener("any", open_port, None)),
        http_route(
            "exact-on-exact",
            """  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents="[{name: intersecting}]",
            hostnames="[nowhere.example, '*.elsewhere.example', api.orchard.example]",
        ),
        http_route(
            "exact-on-wildcard",
            """  - matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
            parents="[{name: intersecting}]",
            hostnames="[nowhere.example, meadow.example, east.meadow.example, "
            "far.east.meadow.example]",
        ),
        http_route(
            "wildcard-on-exact",
            """  - matches: [{path: {type: PathPrefix, value: /c}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
            parents="[{name: intersecting}]",
            hostnames="[nowhere.example, '*.orchard.example']",
        ),
        http_route(
            "wildcard-on-wildcard",
            """  - matches: [{path: {type: PathPrefix, value: /d}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents="[{name: intersecting}]",
            hostnames="['*.brook.example']",
        ),
        http_route(
            "meeting-none",
            """  - matches: [{path: {type: PathPrefix, value: /e}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
            parents="[{name: intersecting}]",
            hostnames="[wrong.orchard.example.org, meadow.example]",
        ),
        http_route(
            "on-open",
            backend(2),
            parents="[{name: open}]",
            hostnames="[one.example, sub.one.example, two.example]",
        ),
    )
    (parent,) = conformance.parent_conditions("meeting-none")
    accepted = parent["Accepted"]
    assert (accepted.status, accepted.reason) == ("False", "NoMatchingListenerHostname")
    conformance.gateway("intersecting")
    conformance.expect_all(
        port,
        [
            (Request("api.orchard.example", "/a"), v(1)),
            (Request("api.orchard.example:1234", "/a"), v(1, host="api.orchard.example:1234")),
            (
                Request(f"east.meadow.example:{port}", "/b"),
                v(2, host=f"east.meadow.example:{port}"),
            ),
            (Request("nowhere.example", "/a"), NOT_FOUND),
            (Request("x.elsewhere.example", "/a"), NOT_FOUND),
            (Request("east.meadow.example", "/a"), NOT_FOUND),
            (Request("api.orchard.example", "/z"), NOT_FOUND),
            (Request("east.meadow.example", "/b"), v(2)),
            (Request("far.east.meadow.example", "/b"), v(2)),
            (Request("meadow.example", "/b"), NOT_FOUND),
            (Request("west.meadow.example", "/b"), NOT_FOUND),
            (Request("api.orchard.example", "/b"), NOT_FOUND),
            (Request("api.orchard.example", "/c"), v(3)),
            (Request("x.orchard.example", "/c"), NOT_FOUND),
            (Request("east.meadow.example", "/c"), NOT_FOUND),
            (Request("a.brook.example", "/d"), v(1)),
            (Request("a.b.brook.example", "/d"), v(1)),
            (Request("brook.example", "/d"), NOT_FOUND),
            (Request("east.meadow.example", "/d"), NOT_FOUND),
            (Request("meadow.example", "/e"), NOT_FOUND),
        ],
    )
    conformance.gateway("open")
    conformance.expect_all(
        open_port,
        [
            (Request("one.example"), v(2)),
            (Request("sub.one.example"), v(2)),
            (Request("two.example"), v(2)),
            (Request("three.example"), NOT_FOUND),
            (Request("sub.two.example"), NOT_FOUND),
        ],
    )


def test_listener_isolation(conformance: Conformance) -> None:
    """GatewayHTTPListenerIsolation (extended): a request is served by the routes of the
    most specific listener its Host matches only, even where a less specific listener's
    route would match its path."""
    port = conformance.free_port()
    listeners = (
        hostname_listener("any", port, None)
        + hostname_listener("wide", port, "*.lake.example")
        + hostname_listener("narrow", port, "*.north.lake.example")
        + hostname_listener("exact", port, "pier.north.lake.example")
    )
    routes = [
        http_route(
            f"on-{section}",
            f"""  - matches: [{{path: {{type: PathPrefix, value: /{section}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
""",
            parents=f"[{{name: isolated, sectionName: {section}}}]",
        )
        for section in ("any", "wide", "narrow", "exact")
    ]
    conformance.apply(case_gateway("isolated", listeners), *routes)
    conformance.gateway("isolated")
    by_host = {
        "shore.example": "any",
        "beach.lake.example": "wide",
        "cove.north.lake.example": "narrow",
        "pier.north.lake.example": "exact",
    }
    cases = [
        (Request(host, f"/{section}"), v(1) if section == own else NOT_FOUND)
        for host, own in by_host.items()
        for section in ("any", "wide", "narrow", "exact")
    ]
    conformance.expect_all(port, cases)


def test_hostname_precedence_counts_the_route_s_own_hostname(conformance: Conformance) -> None:
    """HTTPRoute's hostname precedence: on a listener of one exact hostname, a route naming
    that hostname goes before a route whose wildcard covers it, though both serve the same
    host there: precedence counts the characters of the route's matching non-wildcard
    hostname, and the wildcard route has none."""
    port = conformance.free_port()
    conformance.apply(
        case_gateway("exact-listener", hostname_listener("exact", port, "kiosk.plaza.example")),
        http_route(
            "by-wildcard",
            """  - matches: [{path: {type: PathPrefix, value: /menu/today}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /hours}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
            parents="[{name: exact-listener}]",
            hostnames="['*.plaza.example']",
        ),
        http_route(
            "by-name",
            """  - matches: [{path: {type: PathPrefix, value: /menu}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
            parents="[{name: exact-listener}]",
            hostnames="[kiosk.plaza.example]",
        ),
    )
    conformance.gateway("exact-listener")
    conformance.expect_all(
        port,
        [
            # The exact route's /menu goes first, before the wildcard route's longer prefix.
            (Request("kiosk.plaza.example", "/menu/today"), v(2)),
            (Request("kiosk.plaza.example", "/menu"), v(2)),
            # What the exact route does not match, the wildcard route still serves.
            (Request("kiosk.plaza.example", "/hours"), v(3)),
        ],
    )
