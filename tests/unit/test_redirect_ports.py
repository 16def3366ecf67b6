"""The port of a redirect's Location on a Gateway listener, by the Gateway API's rules (the
combinations of the upstream case HTTPRouteRedirectPortAndScheme)."""

from __future__ import annotations

import pytest

from kontinuum.control.translate.gateway_redirects import ListenerOrigin, redirect_port

HTTP_80, HTTP_8080, HTTPS_443 = (
    ListenerOrigin("http", 80),
    ListenerOrigin("http", 8080),
    ListenerOrigin("https", 443),
)


@pytest.mark.parametrize(
    ("origin", "scheme", "port", "expected"),
    [
        (HTTP_80, None, None, None),
        (HTTP_80, None, 80, None),
        (HTTP_80, None, 8080, 8080),
        (HTTP_80, "https", None, None),
        (HTTP_80, "https", 443, None),
        (HTTP_80, "https", 8443, 8443),
        (HTTP_8080, None, None, 8080),
        (HTTP_8080, None, 80, None),
        (HTTP_8080, "https", None, None),
        (HTTPS_443, None, None, None),
        (HTTPS_443, None, 443, None),
        (HTTPS_443, None, 8443, 8443),
        (HTTPS_443, "http", None, None),
        (HTTPS_443, "http", 80, None),
        (HTTPS_443, "http", 8080, 8080),
        (ListenerOrigin("https", 8443), None, None, 8443),
        (ListenerOrigin("https", 8443), None, 80, 80),
    ],
)
def test_a_redirect_port_follows_the_scheme_and_the_listener(
    origin: ListenerOrigin, scheme: str | None, port: int | None, expected: int | None
) -> None:
    assert redirect_port(scheme, port, origin) == expected
