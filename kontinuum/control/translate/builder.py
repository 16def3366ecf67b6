"""The pieces of a sidecar view that are shared between views, built through a cache.

Each piece is keyed by what tells it apart and built from inputs that are compared when it
is asked for again (`build_cache`). The keys hold only what the piece really depends on: a
service port's Cluster and ClusterLoadAssignment are the same for every workspace's view
in one cluster, so they are built with a view of no workspace, and any dependence on the
workspace would show as a wrong result in the tests, never as a silently shared one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kontinuum.control.model import ClusterSite
from kontinuum.control.plane import PlaneEndpoint, PlanePort, ProxyView
from kontinuum.control.translate import listeners, routes
from kontinuum.control.translate.backends import outbound
from kontinuum.control.translate.build_cache import BuildCache
from kontinuum.control.translate.clusters import Spread
from kontinuum.control.translate.networks import Networks
from kontinuum.control.translate.options import SidecarOptions


class Builder:
    """Builds one view's shared pieces, through `cache` when there is one."""

    def __init__(
        self,
        cache: BuildCache[Any] | None,
        view: ProxyView,
        site: ClusterSite | None,
        options: SidecarOptions,
    ) -> None:
        self._cache = cache
        self._view = view
        self._site = site
        self._options = options
        # What an outbound cluster is built with: the consumer's cluster, not its workspace
        # or its own ports.
        self._consumer = ProxyView("", view.cluster, view.role)
        self._cluster_options = replace(
            options,
            outbound_port=0,
            inbound_service=None,
            inbound_port=None,
            inbound_consumers=(),
            inbound_principals=(),
        )

    def outbound(
        self,
        name: str,
        port: PlanePort,
        endpoints: Sequence[PlaneEndpoint],
        spread: Spread | None,
        networks: Networks,
        authority: str,
    ) -> tuple[Any, Any]:
        """A service port's outbound Cluster and ClusterLoadAssignment (`backends.outbound`)."""

        def make() -> tuple[Any, Any]:
            return outbound(
                name, port, endpoints, self._consumer, self._site, self._cluster_options,
                spread, networks, authority,
            )  # fmt: skip

        if self._cache is None:
            return make()
        key = ("outbound", name, self._view.cluster, self._site, self._cluster_options)
        inputs = (port, tuple(endpoints), spread, networks, authority)
        return self._cache.build(key, inputs, make)

    def outbound_listener(self) -> Any:
        port = self._options.outbound_port
        if self._cache is None:
            return listeners.outbound_listener(port)
        return self._cache.build(("listener", port), (), lambda: listeners.outbound_listener(port))

    def api_listener(self, target: routes.Target) -> Any:
        """What a gRPC client of `xds:///<host>:<port>` asks LDS for: only its name matters."""
        if self._cache is None:
            return listeners.api_listener(target)
        key = ("api-listener", target.authority)
        return self._cache.build(key, (), lambda: listeners.api_listener(target))

    def grpc_route_configuration(self, target: routes.Target) -> Any:
        if self._cache is None:
            return routes.grpc_route_configuration(target)
        key = ("grpc-routes", target.authority, target.cluster)
        inputs = (target.service.host, target.routes)
        return self._cache.build(key, inputs, lambda: routes.grpc_route_configuration(target))
