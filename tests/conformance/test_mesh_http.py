"""Mesh HTTP conformance (GAMMA): a client's sidecar calls the mesh namespace's `echo`
Services, steered by routes whose parentRef is a Service, as upstream's MeshBasic, MeshPorts,
MeshSplit, MeshConsumerRoute and MeshHTTPRoute* cases check (this suite's own rules). The
client lives in `gateway-conformance-mesh` (calls `echo`, `echo-v1`, ...) unless a case says
`gateway-conformance-mesh-consumer` (calls `echo-v1.gateway-conformance-mesh`)."""

from __future__ import annotations

import pytest

from tests.conformance.base import MESH, MESH_CONSUMER
from tests.conformance.harness import Conformance, Expected, Redirect, Request

pytestmark = pytest.mark.e2e


def mesh_route(
    name: str,
    rules: str,
    *,
    parent: str = "echo",
    port: int | None = 80,
    namespace: str = MESH,
    parent_namespace: str | None = None,
) -> str:
    """An HTTPRoute attached to Service `parent` (its port `port`; None: every port)."""
    port_field = "" if port is None else f", port: {port}"
    namespace_field = "" if parent_namespace is None else f", namespace: {parent_namespace}"
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {parent}{namespace_field}{port_field}}}]
  rules:
{rules}"""


def accepted(conformance: Conformance, name: str, namespace: str = MESH) -> None:
    for parent in conformance.parent_conditions(name, namespace):
        assert parent["Accepted"].status == "True", parent
        assert parent["ResolvedRefs"].status == "True", parent


def echo(version: int, **expected: object) -> Expected:
    return Expected(backend=f"echo-v{version}", **expected)  # type: ignore[arg-type]


def test_mesh_basic(conformance: Conformance) -> None:
    """MeshBasic (core): without a route, a call to `echo` reaches one of its versions."""
    conformance.apply()
    outbound = conformance.sidecar()
    answer = conformance.expect(outbound, Request("echo"), Expected(path="/"))
    assert answer.backend in ("echo-v1", "echo-v2")


def test_mesh_simple_same_namespace(conformance: Conformance) -> None:
    """MeshHTTPRouteSimpleSameNamespace (core): a producer route sends every call to `echo`
    to one version."""
    conformance.apply(
        mesh_route("to-v2", "  - backendRefs: [{name: echo-v2, port: 80}]\n", port=None)
    )
    accepted(conformance, "to-v2")
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [(Request("echo", path), echo(2, path=path)) for path in ("/", "/a/b")],
    )


def test_mesh_split(conformance: Conformance) -> None:
    """MeshSplit (core): rules of a producer route send paths to different versions."""
    conformance.apply(
        mesh_route(
            "split",
            """  - matches: [{path: {type: Exact, value: /left}}]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: Exact, value: /right}}]
    backendRefs: [{name: echo-v2, port: 80}]
""",
        )
    )
    accepted(conformance, "split")
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [
            (Request("echo", "/left"), echo(1, path="/left")),
            (Request("echo", "/right"), echo(2, path="/right")),
            (Request("echo", "/middle"), Expected(status=404)),
        ],
    )


def test_mesh_ports(conformance: Conformance) -> None:
    """MeshPorts (core): a route with a parentRef `port` applies to that Service port only;
    one without applies to every port."""
    header = """  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: x-route, value: {value}}}]}}
    backendRefs: [{{name: {backend}, port: 80}}]
"""
    conformance.apply(
        mesh_route("v1-port-80", header.format(value="v1", backend="echo-v1"), parent="echo-v1"),
        mesh_route(
            "v2-all-ports",
            header.format(value="v2", backend="echo-v2"),
            parent="echo-v2",
            port=None,
        ),
    )
    accepted(conformance, "v1-port-80")
    accepted(conformance, "v2-all-ports")
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [
            (Request("echo-v1"), echo(1, response_headers={"x-route": "v1"})),
            (Request("echo-v1:80"), echo(1, response_headers={"x-route": "v1"})),
            (Request("echo-v1:8080"), echo(1, absent_response_headers=["x-route"])),
            (Request("echo-v2"), echo(2, response_headers={"x-route": "v2"})),
            (Request("echo-v2:8080"), echo(2, response_headers={"x-route": "v2"})),
        ],
    )


def test_mesh_consumer_route(conformance: Conformance) -> None:
    """MeshConsumerRoute (extended): a route in the caller's namespace, on a Service of
    another namespace, applies to that namespace's callers only (GEP-1294)."""
    conformance.apply(
        mesh_route(
            "consumer-header",
            f"""  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: x-consumer, value: "yes"}}]}}
    backendRefs: [{{name: echo-v1, namespace: {MESH}, port: 80}}]
""",
            parent="echo-v1",
            port=None,
            namespace=MESH_CONSUMER,
            parent_namespace=MESH,
        )
    )
    accepted(conformance, "consumer-header", MESH_CONSUMER)
    consumer, producer = conformance.sidecar(MESH_CONSUMER), conformance.sidecar(MESH)
    for host in (f"echo-v1.{MESH}", f"echo-v1.{MESH}.svc.cluster.local", f"echo-v1.{MESH}:80"):
        conformance.expect(consumer, Request(host), echo(1, response_headers={"x-consumer": "yes"}))
        conformance.expect(producer, Request(host), echo(1, absent_response_headers=["x-consumer"]))


def test_mesh_matching(conformance: Conformance) -> None:
    """MeshHTTPRouteMatching (core) and MeshHTTPRouteQueryParamMatching (extended): paths,
    headers and query parameters, with the spec's precedence."""
    conformance.apply(
        mesh_route(
            "matching",
            """  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: lane, value: slow}]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /fast}
    - headers: [{name: lane, value: fast}]
    backendRefs: [{name: echo-v2, port: 80}]
  - matches:
    - queryParams: [{name: lane, value: fast}]
      path: {type: Exact, value: /query}
    backendRefs: [{name: echo-v2, port: 80}]
""",
        )
    )
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [
            (Request("echo", "/"), echo(1)),
            (Request("echo", "/fast"), echo(2)),
            (Request("echo", "/fast/lane"), echo(2)),
            (Request("echo", "/faster"), echo(1)),
            (Request("echo", "/", headers={"lane": "fast"}), echo(2)),
            (Request("echo", "/fast", headers={"lane": "slow"}), echo(2)),
            (Request("echo", "/query?lane=fast"), echo(2)),
            (Request("echo", "/query?lane=slow"), echo(1)),
        ],
    )


def test_mesh_filters(conformance: Conformance) -> None:
    """MeshHTTPRouteRequestHeaderModifier (core), MeshHTTPRouteRewritePath,
    MeshHTTPRouteBackendRequestHeaderModification (extended): what the backend receives."""
    conformance.apply(
        mesh_route(
            "filters",
            """  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: s}]
        add: [{name: x-add, value: a}]
        remove: [x-remove]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /page}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /index}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    backendRefs:
    - name: echo-v2
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-for, value: v2}]}
""",
        )
    )
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [
            (
                Request("echo", "/headers", headers={"x-add": "0", "x-remove": "r", "x-set": "0"}),
                echo(1, headers={"x-set": "s", "x-add": "0, a"}, absent_headers=["x-remove"]),
            ),
            (Request("echo", "/old/x?y=1"), echo(1, path="/new/x?y=1")),
            (Request("echo", "/old"), echo(1, path="/new")),
            (Request("echo", "/page/2"), echo(1, path="/index")),
            (Request("echo", "/backend"), echo(2, headers={"x-for": "v2"})),
        ],
    )


def test_mesh_redirects(conformance: Conformance) -> None:
    """MeshHTTPRouteRedirectHostAndStatus (core), MeshHTTPRouteRedirectPath,
    MeshHTTPRouteRedirectPort, MeshHTTPRouteSchemeRedirect (extended) and the 303, 307 and
    308 status codes."""
    conformance.apply(
        mesh_route(
            "redirects",
            """  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: moved.example, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /path}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /moved}}
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8080}
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
  - matches: [{path: {type: PathPrefix, value: /see-other}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 303, hostname: other.example}
  - matches: [{path: {type: PathPrefix, value: /temporary}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 307, hostname: other.example}
  - matches: [{path: {type: PathPrefix, value: /permanent}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 308, hostname: other.example}
""",
        )
    )
    outbound = conformance.sidecar()

    def moved(status: int, redirect: Redirect) -> Expected:
        return Expected(status=status, redirect=redirect)

    conformance.expect_all(
        outbound,
        [
            (
                Request("echo", "/host/a"),
                moved(301, Redirect("http", "moved.example", None, "/host/a")),
            ),
            (Request("echo", "/path/a"), moved(302, Redirect("http", "echo", None, "/moved/a"))),
            (Request("echo", "/port"), moved(302, Redirect("http", "echo", 8080, "/port"))),
            (Request("echo", "/scheme"), moved(302, Redirect("https", "echo", None, "/scheme"))),
            (Request("echo", "/see-other"), moved(303, Redirect(host="other.example"))),
            (Request("echo", "/temporary"), moved(307, Redirect(host="other.example"))),
            (Request("echo", "/permanent"), moved(308, Redirect(host="other.example"))),
        ],
    )


def test_mesh_weight(conformance: Conformance) -> None:
    """MeshHTTPRouteWeight (core): backends share calls by weight (here 3:1), and a backend
    of weight 0 gets none."""
    conformance.apply(
        mesh_route(
            "weights",
            """  - backendRefs:
    - {name: echo-v1, port: 80, weight: 3}
    - {name: echo-v2, port: 80, weight: 1}
    - {name: echo, port: 8080, weight: 0}
""",
        )
    )
    outbound = conformance.sidecar()
    conformance.expect(outbound, Request("echo"), Expected())
    counts = {"echo-v1": 0, "echo-v2": 0}
    for _ in range(400):
        answer = conformance.send(outbound, Request("echo", "/weights"))
        assert answer.status == 200, answer.body
        assert answer.backend is not None
        counts[answer.backend] = counts.get(answer.backend, 0) + 1
    # 3:1 of 400 is 300:100; the bounds are about 7 standard deviations wide.
    assert 240 <= counts["echo-v1"] <= 360, counts
    assert sum(counts.values()) == 400, counts


def test_mesh_named_rule(conformance: Conformance) -> None:
    """MeshHTTPRouteNamedRouteRule (extended): rules may be named, and named and unnamed
    rules serve alike."""
    conformance.apply(
        mesh_route(
            "named",
            """  - name: first-rule
    matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /unnamed}}]
    backendRefs: [{name: echo-v2, port: 80}]
""",
        )
    )
    accepted(conformance, "named")
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [(Request("echo", "/named"), echo(1)), (Request("echo", "/unnamed"), echo(2))],
    )
