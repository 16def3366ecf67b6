"""The unified service plane: what the whole fleet offers, as translation reads it.

Built from the sources' `SiteSnapshot`s by Multi-Cluster Services rules (`mcs.py`): a
service exported from several clusters is one cluster-set service whose endpoints are the
union of the exporting clusters', each tagged with where it runs; an unexported service is
reachable only inside its own cluster. Nothing here knows Kubernetes or Envoy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kontinuum.control.model import ClusterSite, ConfigError, Grant, PortProtocol, ServiceType
from kontinuum.control.naming import CLUSTERSET_DOMAIN, LOCAL_DOMAIN

__all__ = ["Grant"]  # grants are part of the plane; declared with the model they come from

Role = Literal["sidecar", "gateway", "ingress"]
ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Locality:
    """Where an endpoint runs: its fleet cluster and that cluster's topology."""

    cluster: str
    region: str = ""
    zone: str = ""
    network: str = ""

    @classmethod
    def of(cls, site: ClusterSite, zone: str = "") -> Locality:
        return cls(site.name, site.region, zone or site.zone, site.network)


@dataclass(frozen=True, slots=True)
class PlaneEndpoint:
    """One backend of one service port: the address and port to connect to.

    `weight` is how many backends it stands for: an east-west gateway stands for the
    endpoints of its cluster behind it. `mutual_tls`: a kontinuum sidecar fronts it and
    requires mTLS (for a gateway: the endpoints it stands for do, and it passes mTLS
    through to them)."""

    address: str
    port: int
    locality: Locality
    ready: bool = True  # ready for new traffic (serving and not terminating)
    weight: int = 1
    mutual_tls: bool = False


@dataclass(frozen=True, slots=True)
class PlanePort:
    """A service port and its endpoints in every cluster that serves it."""

    port: int
    name: str = ""
    protocol: PortProtocol = "TCP"
    app_protocol: str | None = None
    endpoints: tuple[PlaneEndpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class PlaneService:
    """A service as proxies see it.

    `scope` is "" for a cluster-set service (exported: reachable from every cluster as
    `<name>.<namespace>.svc.clusterset.local`), or the one cluster an unexported service
    is reachable in (as `<name>.<namespace>.svc.cluster.local`).
    """

    namespace: str
    name: str
    workspace: str
    ports: tuple[PlanePort, ...]
    scope: str = ""
    type: ServiceType = "ClusterIP"

    @property
    def host(self) -> str:
        domain = LOCAL_DOMAIN if self.scope else CLUSTERSET_DOMAIN
        return f"{self.name}.{self.namespace}.{domain}"

    def reachable_from(self, cluster: str) -> bool:
        return not self.scope or self.scope == cluster


@dataclass(frozen=True, slots=True)
class Condition:
    """A status condition, as Kubernetes APIs (and the MCS and Gateway APIs) write them."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    # The generation this condition was decided from, when it is not its object's (a
    # rejected new version's Accepted, beside conditions of the version still in force).
    observed_generation: int | None = None


@dataclass(frozen=True, slots=True)
class ExportStatus:
    """The conditions of one ServiceExport (MCS: `Valid`, `Conflict`, `Ready`)."""

    cluster: str
    namespace: str
    name: str
    conditions: tuple[Condition, ...]


ServiceKey = tuple[str, str]  # (namespace, name): the services of that name across the fleet


@dataclass(frozen=True, slots=True)
class PlaneIndex:
    """Lookups into a plane: its services by (namespace, name), the keys of each
    workspace's services, and its workspace grants by consumer and by provider. Read-only;
    a plane built by `PlaneBuilder` carries one."""

    by_key: Mapping[ServiceKey, tuple[PlaneService, ...]]
    by_workspace: Mapping[str, frozenset[ServiceKey]]
    grants_to: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)
    grants_by: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServicePlane:
    """Every site, every service proxies can be given, and what was decided on the way."""

    sites: tuple[ClusterSite, ...] = ()
    services: tuple[PlaneService, ...] = ()
    grants: tuple[Grant, ...] = ()
    exports: tuple[ExportStatus, ...] = ()
    errors: tuple[ConfigError, ...] = field(default=())
    index: PlaneIndex | None = field(default=None, compare=False, repr=False)

    def site(self, name: str) -> ClusterSite | None:
        return next((s for s in self.sites if s.name == name), None)

    def grants_to(self, workspace: str) -> tuple[Grant, ...]:
        """The workspace grants (from a Namespace) that open services to `workspace`."""
        if self.index is not None:
            return self.index.grants_to.get(workspace, ())
        return tuple(
            g for g in self.grants if g.from_kind == "Namespace" and g.consumer == workspace
        )

    def grants_by(self, workspace: str) -> tuple[Grant, ...]:
        """The workspace grants (from a Namespace) `workspace` gives to others."""
        if self.index is not None:
            return self.index.grants_by.get(workspace, ())
        return tuple(
            g for g in self.grants if g.from_kind == "Namespace" and g.provider == workspace
        )

    def named(self, namespace: str, name: str) -> tuple[PlaneService, ...]:
        """The services of `namespace`/`name`: cluster-set first, then one per cluster."""
        if self.index is not None:
            return self.index.by_key.get((namespace, name), ())
        return tuple(s for s in self.services if (s.namespace, s.name) == (namespace, name))


@dataclass(frozen=True, slots=True)
class ProxyView:
    """Proxies that receive the same configuration share one view (and its bytes)."""

    workspace: str
    cluster: str
    role: Role = "sidecar"

    def __str__(self) -> str:
        return f"{self.role}/{self.cluster}/{self.workspace}"
