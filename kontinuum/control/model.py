"""The mesh model (IR): small immutable values that every source produces and translation reads.

Nothing here knows Kubernetes or Envoy types. Sources (`kontinuum.discovery`) turn their input
(YAML files, the Kubernetes API, DNS) into these values; `kontinuum.control.fleet` does it for
the standard YAML resources. Collections are tuples so that every value is immutable, and
comparisons of whole snapshots are cheap equality checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from kontinuum.control.fleet_bodies import NO_BODIES, FleetBodies
from kontinuum.control.routing import RoutingConfig

PortProtocol = Literal["TCP", "UDP", "SCTP"]
ServiceType = Literal["ClusterIP", "Headless"]
AddressType = Literal["IPv4", "IPv6"]


@dataclass(frozen=True, slots=True)
class KubernetesAccess:
    """How to reach a cluster's Kubernetes API: a kubeconfig file and context ("" = the
    client's defaults: $KUBECONFIG or ~/.kube/config, and its current context), or the
    service account of the pod kontinuum runs in; and how long the cluster's endpoints
    are kept, marked stale, once its API cannot be reached."""

    kubeconfig: str = ""
    context: str = ""
    in_cluster: bool = False
    stale_after: float = 300.0  # seconds

    @property
    def connection(self) -> tuple[str, str, bool]:
        """What the client connects with: a source whose access changes only in the rest
        is retuned rather than restarted (it keeps its view)."""
        return (self.kubeconfig, self.context, self.in_cluster)


@dataclass(frozen=True, slots=True)
class DnsService:
    """One service port a DNS-described site publishes as `_<port>._<protocol>.<name>`."""

    namespace: str
    name: str
    port: str  # the port's name, the SRV record's first label without `_`
    protocol: PortProtocol = "TCP"


@dataclass(frozen=True, slots=True)
class DnsAccess:
    """A site described in DNS: its domain, the server to ask ("" = the system's), and the
    service ports to look up there (DNS cannot be listed)."""

    domain: str
    server: str = ""  # host:port
    services: tuple[DnsService, ...] = ()


@dataclass(frozen=True, slots=True)
class ZoneAccess:
    """A site whose zone control plane dials out to this one and publishes its objects
    (docs/federation.md); how long its endpoints are kept, marked stale, once it is
    disconnected."""

    stale_after: float = 300.0  # seconds


SiteAccess = KubernetesAccess | DnsAccess | ZoneAccess


@dataclass(frozen=True, slots=True)
class ClusterSite:
    """One cluster (site) of the fleet and where it runs.

    `region` and `zone` come from the standard `topology.kubernetes.io/*` labels of its
    ClusterProfile and `network` from `kontinuum.io/network`; an empty string means "not
    declared". Sites on the same network reach each other's endpoints directly. `access`
    says where its objects come from: None for the fleet files, else its Kubernetes API or
    its DNS domain.
    """

    name: str
    region: str = ""
    zone: str = ""
    network: str = ""
    access: SiteAccess | None = None


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A port of a Service. `target_port` is a number or the name of a container port."""

    port: int
    name: str = ""
    protocol: PortProtocol = "TCP"
    app_protocol: str | None = None
    target_port: int | str = 0

    def __post_init__(self) -> None:
        if self.target_port == 0:
            object.__setattr__(self, "target_port", self.port)


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """The identity of a service inside one cluster."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Service:
    """A Service of one cluster. Its workspace is its namespace unless stated otherwise."""

    cluster: str
    namespace: str
    name: str
    ports: tuple[ServicePort, ...] = ()
    type: ServiceType = "ClusterIP"
    workspace: str = ""

    def __post_init__(self) -> None:
        if not self.workspace:
            object.__setattr__(self, "workspace", self.namespace)

    @property
    def ref(self) -> ServiceRef:
        return ServiceRef(self.namespace, self.name)

    def port_named(self, name: str) -> ServicePort | None:
        return next((p for p in self.ports if p.name == name), None)


@dataclass(frozen=True, slots=True)
class EndpointPort:
    """A port on which an endpoint serves; `name` matches the Service port's name."""

    port: int
    name: str = ""
    protocol: PortProtocol = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend of a service in one cluster (one entry of an EndpointSlice).

    The conditions mean what they mean in `discovery.k8s.io/v1`: `ready` is "should receive
    new traffic", `serving` is the same regardless of termination, and `terminating` says
    the backend is going away. The addresses are fungible: consumers use the first one.
    `mutual_tls` says a kontinuum sidecar fronts the backend and requires mTLS (its slice's
    `kontinuum.io/tls-mode: mutual` label).
    """

    cluster: str
    namespace: str
    service: str
    addresses: tuple[str, ...]
    ports: tuple[EndpointPort, ...] = ()
    address_type: AddressType = "IPv4"
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str = ""
    node_name: str = ""
    hostname: str = ""
    mutual_tls: bool = False


@dataclass(frozen=True, slots=True)
class ServiceExport:
    """A Multi-Cluster Services export of the same-named Service of `cluster`.

    `created` is when the export was created (its `creationTimestamp`); the MCS API resolves
    conflicts between exports in favour of the oldest. None when the input did not say.
    """

    cluster: str
    namespace: str
    name: str
    created: datetime | None = None

    @property
    def ref(self) -> ServiceRef:
        return ServiceRef(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """One source's whole view of one cluster; a newer snapshot replaces it entirely.

    `stale` says the source lost contact with the cluster and this is the last view it had:
    consumers keep using it (bad input never breaks the mesh) and surface the staleness.
    """

    cluster: str
    services: tuple[Service, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    exports: tuple[ServiceExport, ...] = ()
    stale: bool = False

    def service(self, namespace: str, name: str) -> Service | None:
        return next((s for s in self.services if s.namespace == namespace and s.name == name), None)

    def endpoints_of(self, namespace: str, name: str) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.namespace == namespace and e.service == name)


@dataclass(frozen=True, slots=True)
class Grant:
    """The provider workspace (the namespace of its ReferenceGrant) lets workspace `consumer`
    reach its service `service` (None: all of its services).

    With `from_kind` `Namespace` it is a workspace grant: every proxy of `consumer` may reach
    the service. With `HTTPRoute` or `GRPCRoute` it is the Gateway API's own use: routes of
    that kind in namespace `consumer` may name the provider's `to_kind` (`Service` or
    `ServiceImport`) as a backend; with `Gateway` (and `to_kind` `Secret`), Gateways in
    namespace `consumer` may name the provider's Secret `service` (None: any) as a listener
    certificate. It opens nothing to proxies by itself.
    """

    provider: str
    consumer: str
    service: str | None = None
    from_kind: str = "Namespace"
    to_kind: str = "Service"
    # A workspace grant narrowed to these service accounts of `consumer` (its
    # `kontinuum.io/service-accounts` annotation): every proxy of `consumer` sees the
    # service, only these identities pass its inbound authorization. Empty: all of them.
    service_accounts: tuple[str, ...] = ()


def reference_granted(
    grants: Iterable[Grant],
    from_kind: str,
    from_namespace: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """Whether a ReferenceGrant lets objects of `from_kind` in `from_namespace` name the
    `to_kind` `to_name` of `to_namespace` (the Gateway API's cross-namespace references)."""
    return any(
        g.from_kind == from_kind
        and g.to_kind == to_kind
        and g.provider == to_namespace
        and g.consumer == from_namespace
        and g.service in (None, to_name)
        for g in grants
    )


def grant_order(grant: Grant) -> tuple[str, str, str, str, str, tuple[str, ...]]:
    """The order grants are listed in, the same on every replica."""
    return (
        grant.provider,
        grant.consumer,
        grant.service or "",
        grant.from_kind,
        grant.to_kind,
        grant.service_accounts,
    )


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The fleet-wide objects: which clusters there are and where, grants, and routing."""

    sites: tuple[ClusterSite, ...] = ()
    grants: tuple[Grant, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    # The parsed bodies of the fleet-wide objects this was read from (documents as YAML
    # gave them) by key, which the global hands to zones; not part of what the config says.
    bodies: FleetBodies = field(default=NO_BODIES, compare=False)


@dataclass(frozen=True, slots=True)
class Fleet:
    """Every site of the fleet and the current snapshot of each, both sorted by cluster name."""

    sites: tuple[ClusterSite, ...] = ()
    snapshots: tuple[SiteSnapshot, ...] = ()
    grants: tuple[Grant, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    bodies: FleetBodies = field(default=NO_BODIES, compare=False)  # as FleetConfig's

    @property
    def config(self) -> FleetConfig:
        return FleetConfig(self.sites, self.grants, self.routing, self.bodies)

    def site(self, name: str) -> ClusterSite | None:
        return next((s for s in self.sites if s.name == name), None)

    def snapshot(self, cluster: str) -> SiteSnapshot | None:
        return next((s for s in self.snapshots if s.cluster == cluster), None)

    def __iter__(self) -> Iterator[SiteSnapshot]:
        return iter(self.snapshots)


@dataclass(frozen=True, slots=True)
class ConfigError:
    """A problem with one input object (or a whole file), located precisely enough to fix it.

    Rendered as `<file>: <Kind> <namespace>/<name>: <field>: <message>`, leaving out the
    parts that do not apply (an unreadable file has no object; a missing name is shown as the
    position of the document in its file).
    """

    file: str
    message: str
    kind: str = ""
    namespace: str = ""
    name: str = ""
    field: str = ""
    document: int | None = None

    @property
    def object(self) -> str:
        """`Kind namespace/name`, or where the document is when it names no object."""
        at = f"document {self.document}" if self.document is not None else ""
        if not self.kind:
            return at
        if not self.name:
            return f"{self.kind} ({at or 'unnamed'})"
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.object, self.field) if p]
        text = ": ".join([*parts, self.message])
        lines = text.splitlines()  # one error, one line (a YAML parser's message has two)
        return text if len(lines) <= 1 else " ".join(line.strip() for line in lines)
