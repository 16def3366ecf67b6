"""Gateway HTTP conformance: how traffic is shared, bounded in time and served on several
Gateways, as upstream's HTTPRouteWeight, HTTPRouteTimeoutRequest,
HTTPRouteTimeoutBackendRequest, HTTPRouteNoBackendRefs, HTTPRouteMultipleGateways,
HTTPRouteRetry, HTTPRouteRetryWithTimeouts and HTTPRouteRetryConnectionError cases check. A
request asks the echo backend to answer late (`x-backend-delay: <seconds>`), with a status
(`x-backend-status: <code>`) or not at all (`x-backend-status: close`), for its first N
copies only with `x-backend-fail-first: N`."""

from __future__ import annotations

import pytest

from tests.conformance.base import http_route
from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e

HOST = "traffic.example"
SLOW = {"x-backend-delay": "1"}


def test_weights(conformance: Conformance) -> None:
    """HTTPRouteWeight (core): backends share requests by weight (7:3 here); a backend of
    weight 0 gets none."""
    conformance.apply(
        http_route(
            "weights",
            """  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
""",
        )
    )
    port = conformance.gateway()
    conformance.expect(port, Request(HOST), Expected())
    counts: dict[str, int] = {}
    for _ in range(400):
        answer = conformance.send(port, Request(HOST, "/weights"))
        assert answer.status == 200, answer.body
        assert answer.backend is not None
        counts[answer.backend] = counts.get(answer.backend, 0) + 1
    assert set(counts) <= {"infra-backend-v1", "infra-backend-v2"}, counts
    # 7:3 of 400 is 280:120; the bounds are about 7 standard deviations wide.
    assert 215 <= counts.get("infra-backend-v1", 0) <= 345, counts


def test_request_timeouts(conformance: Conformance) -> None:
    """HTTPRouteRequestTimeout and HTTPRouteBackendTimeout (extended): a request that takes
    longer than `timeouts.request` (or one attempt longer than `backendRequest`) gets 504;
    `0s` disables the timeout."""
    conformance.apply(
        http_route(
            "timeouts",
            """  - matches: [{path: {type: PathPrefix, value: /request}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /no-request-timeout}}]
    timeouts: {request: 0s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /no-backend-timeout}}]
    timeouts: {backendRequest: 0s}
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v1, v2 = Expected(backend="infra-backend-v1"), Expected(backend="infra-backend-v2")
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/request"), v1),
            (Request(HOST, "/no-request-timeout"), v1),
            (Request(HOST, "/backend"), v2),
            (Request(HOST, "/no-backend-timeout"), v2),
        ],
    )
    # Every rule is in force now: one slow request each tells.
    timed_out = Expected(status=504)
    for path, want in (
        ("/request", timed_out),
        ("/no-request-timeout", v1),
        ("/backend", timed_out),
        ("/no-backend-timeout", v2),
    ):
        conformance.expect(port, Request(HOST, path, headers=SLOW), want, consecutive=1)


def test_rules_without_backends(conformance: Conformance) -> None:
    """HTTPRouteNoBackendRefs (core): a rule without backendRefs, or with an empty list,
    answers 500; the route's other rules serve."""
    conformance.apply(
        http_route(
            "no-backends",
            """  - matches: [{path: {type: Exact, value: /omitted}}]
  - matches: [{path: {type: Exact, value: /empty}}]
    backendRefs: []
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/omitted"), Expected(status=500)),
            (Request(HOST, "/empty"), Expected(status=500)),
            (Request(HOST, "/served"), Expected(backend="infra-backend-v1")),
        ],
    )


def test_a_route_on_two_gateways(conformance: Conformance) -> None:
    """HTTPRouteMultipleGateways (core): a route attached to two Gateways serves on both,
    beside each Gateway's own routes."""
    conformance.apply(
        http_route(
            "shared",
            """  - matches: [{path: {type: PathPrefix, value: /shared}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents="[{name: same-namespace}, {name: all-namespaces}]",
        ),
        http_route(
            "same-only",
            "  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
        ),
        http_route(
            "all-only",
            "  - backendRefs: [{name: infra-backend-v3, port: 8080}]\n",
            parents="[{name: all-namespaces}]",
        ),
    )
    same, every = conformance.gateway("same-namespace"), conformance.gateway("all-namespaces")
    conformance.expect_all(
        same,
        [
            (Request(HOST, "/shared"), Expected(backend="infra-backend-v1")),
            (Request(HOST, "/"), Expected(backend="infra-backend-v2")),
        ],
    )
    conformance.expect_all(
        every,
        [
            (Request(HOST, "/shared"), Expected(backend="infra-backend-v1")),
            (Request(HOST, "/"), Expected(backend="infra-backend-v3")),
        ],
    )


def test_retries(conformance: Conformance) -> None:
    """HTTPRouteRetry (extended): an answer of a listed status is retried up to `attempts`
    times, so a backend that fails twice then answers is seen to answer; one that fails
    more often gets the client its last failure; another status is not retried."""
    conformance.apply(
        http_route(
            "retries",
            """  - matches: [{path: {type: PathPrefix, value: /twice}}]
    retry: {codes: [500, 503], attempts: 2, backoff: 10ms}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /never}}]
    retry: {attempts: 0}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v3 = "infra-backend-v3"
    conformance.expect_all(
        port,
        [
            (Request(HOST, "/twice"), Expected(backend=v3)),
            (Request(HOST, "/never"), Expected(backend=v3)),
        ],
    )
    for path, status, failures, answered, copies in (
        ("/twice", "500", "2", 200, 3),
        ("/twice", "503", "3", 503, 3),
        ("/twice", "502", "1", 502, 1),
        ("/never", "503", "1", 503, 1),
    ):
        headers = {"x-backend-status": status, "x-backend-fail-first": failures}
        answer = conformance.send(port, Request(HOST, path, headers=headers))
        assert (answer.status, answer.backend) == (answered, v3), (path, status, answer.body)
        assert len(conformance.copies(v3, answer)) == copies, (path, status)


def test_retries_of_timed_out_attempts(conformance: Conformance) -> None:
    """HTTPRouteRetryBackendTimeout (extended): an attempt that outlives `backendRequest` is
    retried, within `attempts`; then the client gets 504."""
    conformance.apply(
        http_route(
            "retry-timeouts",
            """  - retry: {attempts: 2, backoff: 10ms}
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v3 = "infra-backend-v3"
    conformance.expect(port, Request(HOST, "/"), Expected(backend=v3))
    for failures, answered, copies in (("2", 200, 3), ("3", 504, 3)):
        headers = {"x-backend-delay": "1", "x-backend-fail-first": failures}
        answer = conformance.send(port, Request(HOST, "/slow", headers=headers))
        assert answer.status == answered, (failures, answer.body)
        assert len(conformance.copies(v3, answer)) == copies, failures


def test_retries_of_connection_errors(conformance: Conformance) -> None:
    """HTTPRouteRetryConnectionError (extended): a rule with `retry` retries a request
    whose connection the backend closed without answering, within `attempts`."""
    conformance.apply(
        http_route(
            "retry-resets",
            """  - retry: {attempts: 3, backoff: 10ms}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
""",
        )
    )
    port = conformance.gateway()
    v3 = "infra-backend-v3"
    conformance.expect(port, Request(HOST, "/"), Expected(backend=v3))
    for failures, answered, copies in (("2", (200,), 3), ("4", (500, 502, 503), 4)):
        headers = {"x-backend-status": "close", "x-backend-fail-first": failures}
        answer = conformance.send(port, Request(HOST, "/dropped", headers=headers))
        assert answer.status in answered, (failures, answer.status, answer.body)
        assert len(conformance.copies(v3, answer)) == copies, failures


def test_backend_protocol_h2c(conformance: Conformance) -> None:
    """HTTPRouteBackendProtocolH2C (extended): a Service port whose `appProtocol` is
    `kubernetes.io/h2c` is called with HTTP/2 without TLS, for a client of HTTP/1.1."""
    backend = conformance.h2c_backend()
    conformance.apply(
        http_route("to-h2c", "  - backendRefs: [{name: infra-backend-h2c, port: 8080}]\n")
    )
    conformance.expect(
        conformance.gateway(),
        Request(HOST, "/h2c"),
        Expected(backend=backend, response_headers={"x-backend-protocol": "HTTP/2"}),
    )
