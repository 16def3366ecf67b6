"""Gateway HTTP conformance: a rule's and a backend's filters on the base Gateway
`same-namespace`, as upstream's HTTPRouteRequestHeaderModifier,
HTTPRouteResponseHeaderModifier, HTTPRouteRequestHeaderModifierBackendWeights,
HTTPRouteRedirect{Path,Port,Scheme}, HTTPRoute30{3,7,8}Redirect, HTTPRouteRewriteHost,
HTTPRouteRewritePath, HTTPRouteRequestMirror, HTTPRouteRequestMultipleMirrors and
HTTPRouteRequestPercentageMirror cases check (this suite's own rules)."""

from __future__ import annotations

import time

import pytest

from tests.conformance.base import http_route
from tests.conformance.harness import Conformance, Expected, Redirect, Request

pytestmark = pytest.mark.e2e

HOST = "filters.example"


def test_request_header_modifier(conformance: Conformance) -> None:
    """HTTPRouteRequestHeaderModifier (core): `set` overwrites, `add` appends to a header the
    client sent, `remove` deletes, header names without case."""
    conformance.apply(
        http_route(
            "request-headers",
            """  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Stage, value: blue}]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: X-Stage, value: green}]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {remove: [X-Stage]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /all}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set-one, value: one}, {name: x-set-two, value: two}]
        add: [{name: x-add-one, value: one}, {name: x-add-two, value: two}]
        remove: [x-gone-one, x-gone-two]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v1 = "infra-backend-v1"
    conformance.expect_all(
        port,
        [
            (
                Request(HOST, "/set", headers={"x-stage": "red", "x-other": "kept"}),
                Expected(backend=v1, headers={"x-stage": "blue", "x-other": "kept"}),
            ),
            (Request(HOST, "/set"), Expected(backend=v1, headers={"x-stage": "blue"})),
            (Request(HOST, "/add"), Expected(backend=v1, headers={"x-stage": "green"})),
            (
                Request(HOST, "/add", headers={"X-Stage": "red"}),
                Expected(backend=v1, headers={"x-stage": "red, green"}),
            ),
            (
                Request(HOST, "/remove", headers={"X-STAGE": "red", "x-other": "kept"}),
                Expected(backend=v1, headers={"x-other": "kept"}, absent_headers=["x-stage"]),
            ),
            (
                Request(
                    HOST,
                    "/all",
                    headers={
                        "x-set-one": "zero",
                        "x-add-two": "zero",
                        "x-gone-one": "1",
                        "x-gone-two": "2",
                    },
                ),
                Expected(
                    backend=v1,
                    headers={
                        "x-set-one": "one",
                        "x-set-two": "two",
                        "x-add-one": "one",
                        "x-add-two": "zero, two",
                    },
                    absent_headers=["x-gone-one", "x-gone-two"],
                ),
            ),
        ],
    )


def test_response_header_modifier(conformance: Conformance) -> None:
    """HTTPRouteResponseHeaderModification (extended): `set`, `add` and `remove` on the
    backend's answer (the echo backends answer `Content-Type: text/plain`)."""
    conformance.apply(
        http_route(
            "response-headers",
            """  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: content-type, value: text/csv}, {name: x-new, value: "1"}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: Content-Type, value: charset=utf-8}, {name: x-new, value: "2"}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [Content-Type]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v1 = "infra-backend-v1"
    conformance.expect_all(
        port,
        [
            (
                Request(HOST, "/set"),
                Expected(backend=v1, response_headers={"content-type": "text/csv", "x-new": "1"}),
            ),
            (
                Request(HOST, "/add"),
                Expected(
                    backend=v1,
                    response_headers={"content-type": "text/plain, charset=utf-8", "x-new": "2"},
                ),
            ),
            (
                Request(HOST, "/remove"),
                Expected(backend=v1, absent_response_headers=["content-type"]),
            ),
        ],
    )


def test_backend_request_header_modifier_with_weights(conformance: Conformance) -> None:
    """HTTPRouteBackendRequestHeaderModification (extended, upstream's
    HTTPRouteRequestHeaderModifierBackendWeights): a backendRef's own filter changes only the
    requests sent to that backend, whichever the weights pick."""
    conformance.apply(
        http_route(
            "backend-headers",
            """  - backendRefs:
    - name: infra-backend-v1
      port: 8080
      weight: 50
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-picked, value: one}], remove: [x-drop]}
    - name: infra-backend-v2
      port: 8080
      weight: 50
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {add: [{name: x-picked, value: two}]}
""",
        )
    )
    port = conformance.gateway()
    conformance.expect(port, Request(HOST, "/"), Expected())
    seen: dict[str, int] = {}
    for _ in range(60):
        answer = conformance.send(port, Request(HOST, "/", headers={"x-drop": "d"}))
        assert answer.status == 200, answer.body
        assert answer.received is not None
        if answer.backend == "infra-backend-v1":
            assert answer.received.headers.get("x-picked") == "one"
            assert "x-drop" not in answer.received.headers
        else:
            assert answer.backend == "infra-backend-v2"
            assert answer.received.headers.get("x-picked") == "two"
            assert answer.received.headers.get("x-drop") == "d"
        seen[answer.backend] = seen.get(answer.backend, 0) + 1
    assert set(seen) == {"infra-backend-v1", "infra-backend-v2"}, seen


REDIRECTS = """  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443}
  - matches: [{path: {type: PathPrefix, value: /port-host}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443, hostname: moved.example}
  - matches: [{path: {type: PathPrefix, value: /port-status}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
  - matches: [{path: {type: PathPrefix, value: /scheme-host}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: moved.example, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /scheme-port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, port: 9443}
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new-prefix}
        port: 8080
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {type: ReplaceFullPath, replaceFullPath: /one-page}
        port: 8080
        statusCode: 301
  - matches: [{path: {type: PathPrefix, value: /s303}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 303, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /s307}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 307, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /s308}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 308, port: 8080}
"""


def test_redirects(conformance: Conformance) -> None:
    """HTTPRoutePortRedirect, HTTPRouteSchemeRedirect, HTTPRoutePathRedirect and the 303, 307
    and 308 status codes (extended): the Location keeps what the filter does not change; a
    scheme without a port gets that scheme's well-known port, which is left out."""
    conformance.apply(http_route("redirects", REDIRECTS))
    port = conformance.gateway()

    def moved(status: int, **location: str | int) -> Expected:
        return Expected(status=status, redirect=Redirect(**location))  # type: ignore[arg-type]

    conformance.expect_all(
        port,
        [
            (Request(HOST, "/port"), moved(302, scheme="http", host=HOST, port=8443, path="/port")),
            (Request(HOST, "/port-host"), moved(302, host="moved.example", port=8443)),
            (Request(HOST, "/port-status"), moved(301, host=HOST, port=8443)),
            (Request(HOST, "/scheme"), moved(302, scheme="https", host=HOST, path="/scheme")),
            (Request(HOST, "/scheme-host"), moved(301, scheme="https", host="moved.example")),
            (Request(HOST, "/scheme-port"), moved(302, scheme="https", port=9443)),
            (
                Request(HOST, "/prefix/a/b"),
                moved(302, host=HOST, port=8080, path="/new-prefix/a/b"),
            ),
            (Request(HOST, "/prefix"), moved(302, port=8080, path="/new-prefix")),
            (Request(HOST, "/full/a/b"), moved(301, host=HOST, port=8080, path="/one-page")),
            (Request(HOST, "/s303"), moved(303, port=8080, path="/s303")),
            (Request(HOST, "/s307"), moved(307, port=8080, path="/s307")),
            (Request(HOST, "/s308"), moved(308, port=8080, path="/s308")),
        ],
    )


def test_rewrite_host_and_path(conformance: Conformance) -> None:
    """HTTPRouteHostRewrite and HTTPRoutePathRewrite (extended): the backend sees the new
    Host and path; `ReplacePrefixMatch` replaces whole path elements and keeps the query."""
    conformance.apply(
        http_route(
            "rewrites",
            """  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /api/v1}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /whole}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: whole.example
        path: {type: ReplaceFullPath, replaceFullPath: /index}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-rewritten, value: "yes"}]}
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v1, v2 = "infra-backend-v1", "infra-backend-v2"
    conformance.expect_all(
        port,
        [
            (
                Request(HOST, "/host/x"),
                Expected(backend=v1, host="internal.example", path="/host/x"),
            ),
            (Request(HOST, "/api/v1/users"), Expected(backend=v1, host=HOST, path="/v1/users")),
            (Request(HOST, "/api/v1"), Expected(backend=v1, path="/v1")),
            (Request(HOST, "/api/v1/users?page=2"), Expected(backend=v1, path="/v1/users?page=2")),
            (Request(HOST, "/strip/a/b"), Expected(backend=v1, path="/a/b")),
            (Request(HOST, "/strip"), Expected(backend=v1, path="/")),
            (
                Request(HOST, "/whole/a?q=1"),
                Expected(
                    backend=v2,
                    host="whole.example",
                    path="/index?q=1",
                    headers={"x-rewritten": "yes"},
                ),
            ),
        ],
    )


def test_request_mirror(conformance: Conformance) -> None:
    """HTTPRouteRequestMirror and HTTPRouteRequestMultipleMirrors (extended): the answer comes
    from the backendRef; each mirror receives a copy of the request."""
    conformance.apply(
        http_route(
            "mirror",
            """  - matches: [{path: {type: PathPrefix, value: /one}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /two}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v3, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    for path, mirrors in (
        ("/one/x", ["infra-backend-v2"]),
        ("/two", ["infra-backend-v2", "infra-backend-v3"]),
    ):
        answer = conformance.expect(
            port, Request(HOST, path), Expected(backend="infra-backend-v1", path=path)
        )
        for mirror in mirrors:
            copy = None
            for _ in range(100):  # a mirrored copy is sent beside the request: 5 s at most
                copy = conformance.received(mirror, answer)
                if copy is not None:
                    break
                time.sleep(0.05)
            assert copy is not None, f"{mirror} got no copy of {path}"
            assert copy.path == path
            assert copy.method == "GET"


def test_request_percentage_mirror(conformance: Conformance) -> None:
    """HTTPRouteRequestPercentageMirror (extended): `percent` and `fraction` mirror about
    that share of the requests."""
    conformance.apply(
        http_route(
            "some-mirrored",
            """  - matches: [{path: {type: PathPrefix, value: /percent}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, percent: 20}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /fraction}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v3, port: 8080}
        fraction: {numerator: 1, denominator: 2}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    for path, mirror, share in (
        ("/percent", "infra-backend-v2", 0.2),
        ("/fraction", "infra-backend-v3", 0.5),
    ):
        conformance.expect(port, Request(HOST, path), Expected(backend="infra-backend-v1"))
        before = len(conformance.backends[mirror].received())
        sent = 300
        for _ in range(sent):
            assert conformance.send(port, Request(HOST, path)).backend == "infra-backend-v1"
        low, high = share * sent - 60, share * sent + 60  # over 6 standard deviations
        mirrored = 0
        for _ in range(50):  # copies go beside the answers: wait for them, 5 s at most
            mirrored = len(conformance.backends[mirror].received()) - before
            if mirrored >= low:
                break
            time.sleep(0.1)
        assert low <= mirrored <= high, (path, mirrored)


def test_filters_that_cannot_be_served(conformance: Conformance) -> None:
    """The spec's rules for filters an implementation cannot apply: a rule whose
    `ExtensionRef` resolves to nothing is never served without it (500, `ResolvedRefs=False
    InvalidKind`); a route with a filter kontinuum does not serve (CORS) is not accepted
    (`UnsupportedValue`), and serves nothing."""
    conformance.apply(
        http_route(
            "extension",
            """  - matches: [{path: {type: PathPrefix, value: /extended}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: filters.example.com, kind: Stamp, name: red}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            hostnames="[extension.example]",
        ),
        http_route(
            "with-cors",
            """  - filters:
    - type: CORS
      cors: {allowOrigins: ["https://app.example"]}
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
            parents="[{name: all-namespaces}]",
        ),
    )
    (extension,) = conformance.parent_conditions("extension")
    assert (extension["Accepted"].status, extension["ResolvedRefs"].reason) == (
        "True",
        "InvalidKind",
    )
    (cors,) = conformance.parent_conditions("with-cors")
    assert (cors["Accepted"].status, cors["Accepted"].reason) == ("False", "UnsupportedValue")
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request("extension.example", "/extended"), Expected(status=500)),
            (Request("extension.example", "/plain"), Expected(backend="infra-backend-v1")),
        ],
    )
    conformance.expect(conformance.gateway("all-namespaces"), Request(HOST), Expected(status=404))


def test_redirect_hostname_keeps_the_listener_port(conformance: Conformance) -> None:
    """HTTPRouteRedirectHostAndStatus (core): a redirect that sets only the hostname (and a
    status) keeps the scheme and the Gateway listener's port, which is not 80 here."""
    conformance.apply(
        http_route(
            "redirect-host",
            """  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: moved.example}
  - matches: [{path: {type: PathPrefix, value: /host-status}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: moved.example, statusCode: 301}
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (
                Request(HOST, "/host/a"),
                Expected(status=302, redirect=Redirect("http", "moved.example", port, "/host/a")),
            ),
            (
                Request(HOST, "/host-status"),
                Expected(
                    status=301, redirect=Redirect("http", "moved.example", port, "/host-status")
                ),
            ),
        ],
    )


def test_a_redirect_to_a_well_known_port_leaves_it_out(conformance: Conformance) -> None:
    """HTTPRouteRedirectPortAndScheme (extended), from an HTTP listener: a redirect to a
    scheme's well-known port (https and 443, http and 80) leaves the port out."""
    conformance.apply(
        http_route(
            "well-known-ports",
            """  - matches: [{path: {type: PathPrefix, value: /secure}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, port: 443}
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: http, port: 80}
""",
        )
    )
    port = conformance.gateway()
    for scheme, path in (("https", "/secure"), ("http", "/plain")):
        answer = conformance.expect(
            port, Request(HOST, path), Expected(status=302, redirect=Redirect(scheme, HOST))
        )
        assert answer.headers["location"] == f"{scheme}://{HOST}{path}"
