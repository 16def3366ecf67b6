"""What translation is asked for (options) and what it gives back (a `Translation`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kontinuum.control.model import ServiceRef


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health checking of every outbound cluster (Envoy `OutlierDetection`).

    `max_ejection_percent` is 100 by default so that when every endpoint of a locality
    fails, all of them are ejected and traffic fails over to the next priority entirely.
    """

    consecutive_5xx: int = 3
    interval: timedelta = timedelta(seconds=1)
    base_ejection_time: timedelta = timedelta(seconds=15)
    max_ejection_percent: int = 100


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    """How a sidecar view is translated.

    - `outbound_port`: the loopback port of the `outbound` HTTP listener.
    - `outlier_detection`: None turns passive health checking off.
    - `api_listeners`: also emit the `api_listener` Listeners that proxyless gRPC clients
      ask for by name (`xds:///<host>:<port>`). Envoy never adds an `api_listener`
      received over LDS, so they cost a sidecar nothing but bytes.
    - `inbound_service`: the proxy's own service and service port; with `inbound_port`
      (where the local workload listens, on 127.0.0.1) it gives the `inbound` listener on
      `inbound_listen_address`:`inbound_listen_port`, the address other proxies reach the
      workload at (its EndpointSlice address, or 0.0.0.0 behind traffic redirection).
    """

    outbound_port: int = 15001
    connect_timeout: timedelta = timedelta(seconds=1)
    outlier_detection: OutlierDetection | None = field(default_factory=OutlierDetection)
    api_listeners: bool = True
    inbound_service: tuple[ServiceRef, int] | None = None
    inbound_port: int | None = None
    inbound_listen_port: int = 15006
    inbound_listen_address: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Translation:
    """Envoy resources (xds-protos messages) in a fixed order, and what could not be translated.

    Order: Clusters, ClusterLoadAssignments, Listeners, RouteConfigurations, each sorted by
    name, so the same input always gives the same output.
    """

    resources: tuple[Any, ...] = ()
    errors: tuple[str, ...] = ()
