"""The port of a redirect's Location on a Gateway listener, by the Gateway API's rules (the
combinations of the upstream case HTTPRouteRedirectPortAndScheme), and which redirects drop
the port of the request's Host (tests/conformance/test_https.py checks them with Envoy)."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2

from kontinuum.control.translate.gateway_redirects import (
    LUA_FILTER,
    ListenerOrigin,
    complete_redirects,
    host_port_filter,
    redirect_port,
)

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


@pytest.mark.parametrize(
    ("scheme", "hostname", "port", "drops_the_host_port"),
    [
        ("", "", 0, False),  # the listener's port 8080 is set, replacing the Host's
        ("https", "", 0, True),  # no port: the Location's host is the Host without its port
        ("", "", 80, True),
        ("", "moved.example", 80, False),  # the redirect's hostname has no port
        ("https", "", 8443, False),
    ],
)
def test_a_redirect_without_a_port_or_hostname_drops_the_host_s_port(
    scheme: str, hostname: str, port: int, drops_the_host_port: bool
) -> None:
    config = route_pb2.RouteConfiguration(name="shop/front/8080")
    route = config.virtual_hosts.add(name="any", domains=["*"]).routes.add()
    route.redirect.CopyFrom(
        rc.RedirectAction(scheme_redirect=scheme, host_redirect=hostname, port_redirect=port)
    )
    complete_redirects(config, HTTP_8080)
    (done,) = config.virtual_hosts[0].routes
    assert (LUA_FILTER in done.typed_per_filter_config) is drops_the_host_port
    if drops_the_host_port:
        per_route = lua_pb2.LuaPerRoute()
        done.typed_per_filter_config[LUA_FILTER].Unpack(per_route)
        assert per_route.name in host_port_lua().source_codes
        assert done.redirect.port_redirect == 0


def host_port_lua() -> lua_pb2.Lua:
    lua = lua_pb2.Lua()
    host_port_filter().typed_config.Unpack(lua)
    return lua
