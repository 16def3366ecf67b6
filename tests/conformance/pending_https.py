"""Conformance cases that wait for HTTPS listeners and the spec's redirect port rules
(branch g-https): not collected by pytest (the file name is not `test_*.py`) until they
pass; rename to test_pending_https.py then.

- HTTPRouteRedirectHostAndStatus: a redirect that sets only the hostname drops the
  listener's port from the Location (the spec keeps the listener's port when no scheme is
  set); kontinuum's Location is `http://moved.example/host/a`.
"""

from __future__ import annotations

import pytest

from tests.conformance.base import http_route
from tests.conformance.harness import Conformance, Expected, Redirect, Request

pytestmark = pytest.mark.e2e

HOST = "filters.example"


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
