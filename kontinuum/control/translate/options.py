"""What translation is asked for (options) and what it gives back (a `Translation`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from kontinuum.control.model import ServiceRef

# A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_' (SPIFFE ID standard).
_TRUST_DOMAIN: Final = re.compile(r"[a-z0-9._-]{1,255}")


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
class WorkloadTls:
    """Workload mTLS (`kontinuum.control.translate.tls`): proxies hold SPIFFE identities
    `spiffe://<trust_domain>/ns/<namespace>/sa/<service account>`, by SDS over ADS."""

    trust_domain: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.fullmatch(self.trust_domain):
            raise ValueError(
                "trust_domain must be a SPIFFE trust domain (a-z, 0-9, '.', '-' and '_'), "
                f"got {self.trust_domain!r}"
            )


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
    - `mtls`: None: no TLS anywhere. Set: sidecars and ingress gateways originate mTLS to
      endpoints that require it, east-west gateways pass it through, and the `inbound`
      listener requires it and admits the own workspace's identities, those of the
      `inbound_consumers` workspaces and the SPIFFE IDs `inbound_principals` (`tls`).
    """

    outbound_port: int = 15001
    connect_timeout: timedelta = timedelta(seconds=1)
    outlier_detection: OutlierDetection | None = field(default_factory=OutlierDetection)
    api_listeners: bool = True
    inbound_service: tuple[ServiceRef, int] | None = None
    inbound_port: int | None = None
    inbound_listen_port: int = 15006
    inbound_listen_address: str = "127.0.0.1"
    mtls: WorkloadTls | None = None
    inbound_consumers: tuple[str, ...] = ()
    inbound_principals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Translation:
    """Envoy resources (xds-protos messages) in a fixed order, and what could not be translated.

    Order: Clusters, ClusterLoadAssignments, Listeners, RouteConfigurations, each sorted by
    name, so the same input always gives the same output.
    """

    resources: tuple[Any, ...] = ()
    errors: tuple[str, ...] = ()
