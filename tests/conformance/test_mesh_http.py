"""Mesh HTTP conformance (GAMMA): a client's sidecar calls the mesh's `echo` services, with
routes whose parentRef is a Service, as upstream's Mesh* cases check."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e


def mesh_route(name: str, rules: str, *, parent: str = "echo", port: int | None = 80) -> str:
    """An HTTPRoute of the mesh namespace attached to Service `parent` (port `port`)."""
    port_field = "" if port is None else f", port: {port}"
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-mesh}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {parent}{port_field}}}]
  rules:
{rules}"""


def test_mesh_basic(conformance: Conformance) -> None:
    """MeshBasic: without a route, a call to `echo` reaches one of its versions."""
    conformance.apply()
    outbound = conformance.sidecar()
    answer = conformance.expect(outbound, Request("echo"), Expected(path="/"))
    assert answer.backend in ("echo-v1", "echo-v2")


def test_mesh_split(conformance: Conformance) -> None:
    """MeshSplit: a producer route sends `/v1` to echo-v1 and `/v2` to echo-v2."""
    conformance.apply(
        mesh_route(
            "mesh-split",
            """  - matches: [{path: {type: Exact, value: /v1}}]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: Exact, value: /v2}}]
    backendRefs: [{name: echo-v2, port: 80}]
""",
        )
    )
    (parent,) = conformance.parent_conditions("mesh-split", "gateway-conformance-mesh")
    assert parent["Accepted"].status == "True", parent
    outbound = conformance.sidecar()
    conformance.expect_all(
        outbound,
        [
            (Request("echo", "/v1"), Expected(backend="echo-v1", path="/v1")),
            (Request("echo", "/v2"), Expected(backend="echo-v2", path="/v2")),
        ],
    )
