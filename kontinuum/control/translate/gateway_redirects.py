"""The port of a redirect's `Location` on an ingress gateway's listeners.

The Gateway API's HTTPRequestRedirectFilter: a `port` set is used; without one, a `scheme`
set brings its well-known port (http 80, https 443), and neither keeps the listener's port.
The port is left out of `Location` when it is the well-known port of its scheme (the
redirect's, else the listener's). Envoy knows none of this (without `port_redirect` it
keeps the request's port, which the gateway strips from the Host header), so each redirect
of a listener port's routes gets the port decided here, or none.

A route's redirect is completed on the route configuration of a listener port (all
listeners of a port share its protocol and port), so how the routes were ranked into
virtual hosts does not matter: an Envoy `RedirectAction` keeps what the filter said (a
scheme of "" and a port of 0 are unset; the Gateway API has neither).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

WELL_KNOWN_PORTS: Final = {"http": 80, "https": 443}


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


def complete_redirects(config: Any, origin: ListenerOrigin) -> None:
    """Give every redirect of a listener port's RouteConfiguration its port, or none."""
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if route.HasField("redirect"):
                action = route.redirect
                scheme = action.scheme_redirect or None
                port = redirect_port(scheme, action.port_redirect or None, origin)
                action.port_redirect = port or 0
