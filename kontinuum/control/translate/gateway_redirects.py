"""The port of a redirect's `Location` on an ingress gateway's listeners.

The Gateway API's HTTPRequestRedirectFilter: a `port` set is used; without one, a `scheme`
set brings its well-known port (http 80, https 443), and neither keeps the listener's port.
The port is left out of `Location` when it is the well-known port of its scheme (the
redirect's, else the listener's). Envoy knows none of this, so each redirect of a listener
port's routes gets the port decided here, or none:

- a port is Envoy's `port_redirect`, which replaces any port of the request's `Host`;
- no port, with a `hostname` set: Envoy's `host_redirect` alone, which has none;
- no port and no `hostname`: Envoy would copy the request's `Host` with its port (the
  gateway forwards the header unmodified, as the spec says, so the port is still there);
  the route runs a Lua snippet of the listener's HTTP filter (`HOST_PORT_FILTER`) that
  drops the port from the request's `Host` before the redirect is built from it. Envoy's
  redirects have no such option, and a wildcard listener hostname leaves no static host.

A route's redirect is completed on the route configuration of a listener port (all
listeners of a port share its protocol and port), so how the routes were ranked into
virtual hosts does not matter: an Envoy `RedirectAction` keeps what the filter said (a
scheme of "" and a port of 0 are unset; the Gateway API has neither).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from kontinuum.control.translate import envoy

WELL_KNOWN_PORTS: Final = {"http": 80, "https": 443}
LUA_FILTER: Final = "envoy.filters.http.lua"
DROP_HOST_PORT: Final = "kontinuum.drop-host-port"
# `host:port` to `host`, `[v6]:port` to `[v6]`; a Host without a port stays as it is.
_DROP_HOST_PORT_LUA: Final = """\
function envoy_on_request(request)
  local headers = request:headers()
  local host = headers:get(":authority")
  if host == nil then
    return
  end
  local bare = string.match(host, "^(%[.*%]):%d*$") or string.match(host, "^([^:]*):%d*$")
  if bare ~= nil then
    headers:replace(":authority", bare)
  end
end
"""


@dataclass(frozen=True, slots=True)
class ListenerOrigin:
    """A listener port as a request reaches it: its scheme (`http` for HTTP listeners,
    `https` for HTTPS) and port."""

    scheme: str
    port: int


def redirect_port(scheme: str | None, port: int | None, origin: ListenerOrigin) -> int | None:
    """The port of the `Location` of a redirect with this `scheme` and `port` (None:
    unset), or None when it is left out (see the module doc)."""
    if port is None:
        port = WELL_KNOWN_PORTS.get(scheme, origin.port) if scheme else origin.port
    return None if WELL_KNOWN_PORTS.get(scheme or origin.scheme) == port else port


def host_port_filter() -> Any:
    """The HttpFilter of an ingress listener that the redirects without a port or hostname
    enable, to drop the request's Host port (it does nothing on any other route)."""
    lua = lua_pb2.Lua()
    lua.source_codes[DROP_HOST_PORT].inline_string = _DROP_HOST_PORT_LUA
    # The route is chosen already, and matching ignores the Host's port anyway.
    lua.clear_route_cache.value = False
    return hcm_pb2.HttpFilter(name=LUA_FILTER, typed_config=envoy.pack(lua))


def complete_redirects(config: Any, origin: ListenerOrigin) -> None:
    """Give every redirect of a listener port's RouteConfiguration its port, or none."""
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if route.HasField("redirect"):
                action = route.redirect
                scheme = action.scheme_redirect or None
                port = redirect_port(scheme, action.port_redirect or None, origin)
                action.port_redirect = port or 0
                if port is None and not action.host_redirect:
                    drop = lua_pb2.LuaPerRoute(name=DROP_HOST_PORT)
                    route.typed_per_filter_config[LUA_FILTER].CopyFrom(envoy.pack(drop))
