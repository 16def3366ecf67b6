"""The incremental pipeline's oracle (DESIGN principle 8): whatever sequence of fleet changes
a long-lived `Mesh` applies, every view it serves holds, byte for byte (version and SotW
entry of each resource of each type), what a Mesh built from scratch computes for the same
fleet with the same views resolved.

A state machine keeps the fleet as the documents of a fleet directory (ClusterProfiles,
ReferenceGrants, HTTPRoutes, Gateways and LocalityPolicies fleet-wide; Services,
EndpointSlices and ServiceExports per cluster), parses them as `kontinuum serve` does, and
changes them one object at a time or several in one apply: services, their ports and
appProtocols; endpoints, their addresses, readiness, zones and mTLS mode; exports (a service
going cluster-set <-> local, an export without its Service); workspace and route grants (one
narrowed to service accounts); GAMMA and ingress routes with matches and weighted, sometimes
unknown backends; locality policies; east-west and ingress Gateways; clusters joining,
leaving, moving region or zone and changing network. A cluster whose objects did not change
hands over the same SiteSnapshot object, as sources do; a changed one carries over the very
objects of its unchanged documents (as the static source does) or builds them all again (as
the Kubernetes source does); a resync hands over equal new ones. The fleet-wide objects,
unchanged, are handed over as the same parsed objects too (as the fleet files' source
does), so that the mesh's paths for a change that leaves the routing as it was are taken.
Proxies of every role, cluster and namespace connect and go away as it goes (sidecars with
and without an own inbound service, on two outbound ports, and proxyless gRPC clients);
half the runs give the mesh
workload certificates (SDS secrets, mTLS to endpoints, inbound RBAC from grants).

After every step two references are built anew, and each resolves the views in use:
- the *replay*: a Mesh that has applied the same sequence of fleets with no view in use.
  A route edited into one that no parent accepts keeps its last accepted version in force
  (principle 7), so a fleet alone does not say what the mesh serves; the sequence does;
- the *scratch*: a Mesh that has applied the current fleet only, compared whenever no route
  present has been applied in two versions (then a last-good version cannot differ from the
  current one), so that a mistake every incremental apply shares is caught too.
A view the references refuse although the mesh still holds it (an ingress gateway whose
Gateway is gone) must hold nothing but its secrets.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.fleet import ClusterObject, assemble_cluster, read_cluster_documents
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import Fleet, FleetConfig, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.mesh import Mesh
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.workload import WorkloadCertificates
from kontinuum.xds import Peer, SnapshotCache
from kontinuum.xds.types import SECRET, short_name

Body = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name) of a document
Served = dict[str, dict[str, tuple[str, bytes]]]  # type URL -> name -> (version, SotW bytes)

# --- the universe the fleets are drawn from -------------------------------------------------

CLUSTERS: dict[str, tuple[str, str]] = {  # name -> (region, zone)
    "east": ("us-east", "us-east-1a"),
    "west": ("us-west", "us-west-1a"),
    "edge": ("us-east", "us-east-1b"),
}
CLUSTER_NAMES = tuple(CLUSTERS)
REGIONS = tuple(sorted({region for region, _ in CLUSTERS.values()}))
ZONES = ("", "us-east-1a", "us-east-1b", "us-west-1a")
NETWORKS = ("backbone", "edge")
NAMESPACES = ("shop", "web", "ops")
SERVICES = (("shop", "cart"), ("shop", "pay"), ("web", "front"), ("web", "cart"), ("ops", "db"))
SERVICE_NAMES = tuple(sorted({name for _, name in SERVICES}))
PORTS = {80: "http", 8080: "alt", 9090: "grpc"}  # service port -> its name
APP_PROTOCOLS = (None, "http", "grpc", "kubernetes.io/h2c")
WORKLOAD_PORT = 7000
ENDPOINT_OFFSET = 1000  # endpoints serve service port + 1000 (1080, 9080, 10090)
CREATED = (None, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
EAST_WEST_ADDRESSES = ("127.0.0.19", "127.0.0.29")
INGRESS = ("shop", "front")  # the ingress Gateway's namespace and name

MCS = "multicluster.x-k8s.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
PEER = Peer(address="oracle")


# --- documents --------------------------------------------------------------------------------


def cluster_profile(name: str, network: str, place: tuple[str, str] | None = None) -> Body:
    region, zone = place or CLUSTERS[name]
    labels = {
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": zone,
        "kontinuum.io/network": network,
    }
    return {
        "apiVersion": f"{MCS}/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": name, "namespace": "fleet", "labels": labels},
        "spec": {"displayName": name},
    }


def service(
    namespace: str, name: str, ports: Iterable[tuple[int, str | None]], headless: bool
) -> Body:
    spec: Body = {
        "ports": [
            {
                "name": PORTS[port],
                "port": port,
                "targetPort": port + ENDPOINT_OFFSET,
                "protocol": "TCP",
                **({"appProtocol": app} if app else {}),
            }
            for port, app in ports
        ]
    }
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    host: int  # the last byte of the address, in the cluster's 10.<n>.0.0/24
    ready: bool
    zone: str


def endpoint_slice(
    cluster: str,
    namespace: str,
    name: str,
    ports: Iterable[int],
    endpoints: Iterable[EndpointSpec],
    mutual: bool,
    second: bool = False,  # the service's second slice (its own name and addresses)
) -> Body:
    labels = {"kubernetes.io/service-name": name}
    if mutual:
        labels["kontinuum.io/tls-mode"] = "mutual"
    subnet = CLUSTER_NAMES.index(cluster) + 1
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{'z' if second else ''}{name}-{cluster}",
            "namespace": namespace,
            "labels": labels,
        },
        "addressType": "IPv4",
        "ports": [
            {"name": PORTS[port], "port": port + ENDPOINT_OFFSET, "protocol": "TCP"}
            for port in ports
        ],
        "endpoints": [
            {
                "addresses": [f"10.{subnet}.{int(second)}.{e.host}"],
                "conditions": {"ready": e.ready, "serving": e.ready, "terminating": False},
                **({"zone": e.zone} if e.zone else {}),
            }
            for e in endpoints
        ],
    }


def service_export(namespace: str, name: str, created: str | None) -> Body:
    metadata: Body = {"name": name, "namespace": namespace}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {"apiVersion": f"{MCS}/v1alpha1", "kind": "ServiceExport", "metadata": metadata}


def reference_grant(
    provider: str,
    name: str,
    consumer: str,
    service_name: str | None,
    routes: bool,
    accounts: tuple[str, ...],
) -> Body:
    metadata: Body = {"name": name, "namespace": provider}
    if accounts and not routes:
        metadata["annotations"] = {"kontinuum.io/service-accounts": ",".join(accounts)}
    source = (
        {"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": consumer}
        if routes
        else {"group": "", "kind": "Namespace", "namespace": consumer}
    )
    target: Body = {"group": "", "kind": "Service"}
    if service_name is not None:
        target["name"] = service_name
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": metadata,
        "spec": {"from": [source], "to": [target]},
    }


def east_west_gateway(cluster: str, address: str) -> Body:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "Gateway",
        "metadata": {
            "name": f"east-west-{cluster}",
            "namespace": "kontinuum-system",
            "labels": {"kontinuum.io/cluster": cluster},
        },
        "spec": {
            "gatewayClassName": "kontinuum-east-west",
            "addresses": [{"type": "IPAddress", "value": address}],
            "listeners": [
                {"name": "mesh", "port": 15443, "protocol": "TLS", "tls": {"mode": "Passthrough"}}
            ],
        },
    }


def ingress_gateway(cluster: str, port: int, all_namespaces: bool) -> Body:
    listener: Body = {"name": "web", "port": port, "protocol": "HTTP"}
    if all_namespaces:
        listener["allowedRoutes"] = {"namespaces": {"from": "All"}}
    namespace, name = INGRESS
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kontinuum.io/cluster": cluster},
        },
        "spec": {
            "gatewayClassName": "kontinuum",
            "addresses": [{"type": "IPAddress", "value": "192.0.2.1"}],
            "listeners": [listener],
        },
    }


def _ref(group: str, kind: str, name: str, namespace: str | None, port: int | None) -> Body:
    ref: Body = {"group": group, "kind": kind, "name": name}
    if namespace is not None:
        ref["namespace"] = namespace
    if port is not None:
        ref["port"] = port
    return ref


def _weighted(ref: Body, weight: int | None) -> Body:
    return ref if weight is None else {**ref, "weight": weight}


optional_namespaces = st.none() | st.sampled_from(NAMESPACES)
optional_ports = st.none() | st.sampled_from(tuple(PORTS))
weights = st.none() | st.integers(0, 100)

parents = st.one_of(
    st.builds(
        _ref, st.just(""), st.just("Service"), st.sampled_from(SERVICE_NAMES),
        optional_namespaces, optional_ports,
    ),
    st.builds(
        _ref, st.just(MCS), st.just("ServiceImport"), st.sampled_from(SERVICE_NAMES),
        optional_namespaces, st.none(),
    ),
    st.just({"name": INGRESS[1], "namespace": INGRESS[0]}),
)  # fmt: skip
backends = st.one_of(
    st.builds(
        _weighted,
        st.builds(
            _ref, st.just(""), st.just("Service"), st.sampled_from(SERVICE_NAMES),
            optional_namespaces, st.sampled_from(tuple(PORTS)),
        ),
        weights,
    ),
    st.builds(
        _weighted,
        st.builds(
            _ref, st.just(MCS), st.just("ServiceImport"), st.sampled_from(SERVICE_NAMES),
            optional_namespaces, optional_ports,
        ),
        weights,
    ),
    st.builds(  # a backend nobody declares: its share is answered as an invalid backend's
        _weighted,
        st.builds(_ref, st.just(""), st.just("Service"), st.just("ghost"), st.none(), st.just(80)),
        weights,
    ),
)  # fmt: skip
matches = st.sampled_from(
    [
        None,
        [{"headers": [{"name": "x-canary", "value": "yes"}]}],
        [{"path": {"type": "PathPrefix", "value": "/v2"}}],
        [
            {"path": {"type": "PathPrefix", "value": "/v2"}},
            {"headers": [{"name": "x-canary", "type": "Exact", "value": "yes"}]},
        ],
    ]
)
route_rules = st.lists(
    st.builds(
        lambda found, refs: {"backendRefs": refs, **({"matches": found} if found else {})},
        matches,
        st.lists(backends, min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=2,
)


def http_route(namespace: str, name: str, refs: list[Body], rules: list[Body]) -> Body:
    spec: Body = {"parentRefs": refs, "rules": rules}
    if any(ref.get("kind") is None for ref in refs):  # the ingress Gateway: a host name
        spec["hostnames"] = ["www.example.com"]
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


spreads = st.one_of(
    st.builds(
        lambda entries: {"weights": [{"cluster": c, "weight": w} for c, w in entries]},
        st.lists(
            st.tuples(st.sampled_from(CLUSTER_NAMES), st.integers(0, 100)),
            min_size=1,
            max_size=3,
            unique_by=lambda entry: entry[0],
        ),
    ),
    st.builds(
        lambda steps: {"failover": steps},
        st.lists(
            st.one_of(
                st.builds(lambda c: {"clusters": [c]}, st.sampled_from(CLUSTER_NAMES)),
                st.builds(lambda r: {"regions": [r]}, st.sampled_from(REGIONS)),
            ),
            min_size=1,
            max_size=3,
            unique_by=repr,
        ),
    ),
)


def locality_policy(namespace: str, name: str, target: str, imported: bool, spread: Body) -> Body:
    ref = (
        {"group": MCS, "kind": "ServiceImport", "name": target}
        if imported
        else {"group": "", "kind": "Service", "name": target}
    )
    return {
        "apiVersion": "policy.kontinuum.io/v1alpha1",
        "kind": "LocalityPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRefs": [ref], **spread},
    }


# --- proxies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Proxy:
    """A proxy's claim, as `kontinuum bootstrap` writes it into its node."""

    cluster: str
    namespace: str = ""
    role: str = "sidecar"
    outbound_port: int | None = None
    service: str | None = None  # its own inbound service (workload on port 7000)
    inbound_address: str | None = None
    service_account: str | None = None
    grpc: bool = False  # a proxyless gRPC client (api_listener Listeners and their routes)

    def __repr__(self) -> str:  # what a failing example shows: the fields that are set
        fields = [repr(self.cluster), repr(self.namespace)]
        fields += [
            f"{name}={value!r}"
            for name, value in (
                ("role", self.role if self.role != "sidecar" else None),
                ("outbound_port", self.outbound_port),
                ("service", self.service),
                ("inbound_address", self.inbound_address),
                ("service_account", self.service_account),
                ("grpc", self.grpc or None),
            )
            if value is not None
        ]
        return f"Proxy({', '.join(fields)})"

    def node(self) -> base_pb2.Node:
        node = base_pb2.Node(id=f"{self.role}-{self.cluster}", cluster=self.cluster)
        if self.grpc:
            node.user_agent_name = "gRPC Python"
        node.metadata.update(
            proxy_metadata(
                namespace=self.namespace,
                role=self.role,
                service=self.service,
                inbound_port=WORKLOAD_PORT if self.service else None,
                inbound_address=self.inbound_address,
                outbound_port=self.outbound_port,
                gateway=INGRESS[1] if self.role == "ingress" else None,
                service_account=self.service_account,
            )
        )
        return node


def _proxies() -> tuple[Proxy, ...]:
    found = [Proxy("mars", "shop")]  # mars is never in the fleet
    for cluster in CLUSTER_NAMES:
        found.append(Proxy(cluster, "kontinuum-system", role="gateway"))
        found.append(Proxy(cluster, INGRESS[0], role="ingress"))
        for namespace in NAMESPACES:
            found.append(Proxy(cluster, namespace))
            found.append(Proxy(cluster, namespace, outbound_port=15002))
            found.append(Proxy(cluster, namespace, service_account="batch"))
            found.append(Proxy(cluster, namespace, grpc=True))
            for own in (name for ns, name in SERVICES if ns == namespace):
                found.append(Proxy(cluster, namespace, service=own))  # listens on :15006
                found.append(Proxy(cluster, namespace, service=own, inbound_address="0.0.0.0:1080"))
    return tuple(found)


PROXIES = _proxies()


def resolved(mesh: Mesh, proxy: Proxy) -> str | None:
    """The view `mesh` resolves for `proxy`, or None when it refuses it."""
    try:
        return mesh.resolve_view(proxy.node(), PEER)
    except PermissionError:
        return None


def served(mesh: Mesh, view: str) -> Served:
    snapshot = mesh.cache.snapshot(view)
    assert snapshot is not None, f"view {view} has no snapshot"
    return {
        type_url: {name: (r.version, r.sotw_entry) for name, r in resources.items()}
        for type_url in snapshot.type_urls
        if (resources := snapshot.resources(type_url))
    }


def differences(got: Served, want: Served) -> list[str]:
    found: list[str] = []
    for type_url in sorted(got.keys() | want.keys()):
        mine, theirs = got.get(type_url, {}), want.get(type_url, {})
        for name in sorted(mine.keys() | theirs.keys()):
            what = f"{short_name(type_url)} {name!r}"
            if name not in theirs:
                found.append(f"{what} is served but should not be")
            elif name not in mine:
                found.append(f"{what} is missing")
            elif mine[name] != theirs[name]:
                found.append(f"{what} differs (version {mine[name][0]}, not {theirs[name][0]})")
    return found


@functools.cache
def authority() -> CertificateAuthority:
    return CertificateAuthority.generate("oracle.test")


def mesh_after(fleets: Iterable[Fleet], certificates: WorkloadCertificates | None) -> Mesh:
    """A new Mesh that has applied `fleets` in turn, with no view in use."""
    mesh = Mesh(SnapshotCache(), certificates)
    for fleet in fleets:
        mesh.apply(fleet)
    return mesh


# --- the machine ----------------------------------------------------------------------------


Change = Callable[["IncrementalOracle", st.DataObject], None]  # draws one change, applies none


class IncrementalOracle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fleet_docs: dict[Key, Body] = {}
        self.cluster_docs: dict[str, dict[Key, Body]] = {c: {} for c in CLUSTER_NAMES}
        self.fleets: list[Fleet] = []
        # A cluster whose objects did not change keeps its SiteSnapshot, the same object (as
        # sources hand it over), unless `fresh` asks for equal values that are new objects.
        self.parsed: dict[str, tuple[list[tuple[Key, Body]], SiteSnapshot]] = {}
        self.fresh = False
        # The fleet-wide objects as last parsed, kept while their documents are unchanged
        # (unless `fresh`), as the fleet files' source keeps them.
        self.config: tuple[list[tuple[Key, Body]], FleetConfig] | None = None
        # Each document's objects as last read, reused while it is unchanged unless `whole`.
        self.read: dict[str, dict[Key, tuple[Body, list[ClusterObject]]]] = {}
        self.whole = False
        self.applied_routes: dict[Key, Body] = {}  # the routes of the last fleet applied
        self.edited_routes: set[Key] = set()  # routes applied in 2+ versions since they came
        self.held: dict[Proxy, str] = {}  # proxies whose views the mesh keeps up to date
        self.certificates: WorkloadCertificates | None = None
        self.mesh = Mesh(SnapshotCache())
        self._replay: Mesh | None = None

    # -- the fleet

    def fleet(self) -> Fleet:
        """The documents read as `kontinuum serve` reads a fleet directory (errors aside:
        an invalid object is left out, as there)."""
        fleet_docs = sorted(self.fleet_docs.items())
        if self.config is None or self.config[0] != fleet_docs or self.fresh:
            docs = [Document("fleet.yaml", body, i) for i, (_, body) in enumerate(fleet_docs, 1)]
            self.config = (copy.deepcopy(fleet_docs), parse_fleet_config(docs)[0])
        config = self.config[1]
        snapshots = []
        for site in config.sites:
            objects = sorted(self.cluster_docs[site.name].items())
            parsed = self.parsed.get(site.name)
            if parsed is None or parsed[0] != objects or self.fresh:
                last = {} if self.fresh or self.whole else self.read.get(site.name, {})
                read: dict[Key, tuple[Body, list[ClusterObject]]] = {}
                for key, body in objects:
                    hit = last.get(key)
                    if hit is None or hit[0] != body:
                        file = f"clusters/{site.name}/{'.'.join(key)}.yaml"
                        doc = Document(file, body, 1)
                        hit = (copy.deepcopy(body), read_cluster_documents(site.name, [doc]))
                    read[key] = hit
                self.read[site.name] = read
                snapshot, _ = assemble_cluster(
                    site.name, [o for _, parts in read.values() for o in parts]
                )
                parsed = self.parsed[site.name] = (objects, snapshot)
            snapshots.append(parsed[1])
        self.fresh = False
        return Fleet(config.sites, tuple(snapshots), config.grants, config.routing)

    def apply(self) -> None:
        fleet = self.fleet()
        self.mesh.apply(fleet)
        self.fleets.append(fleet)
        self._replay = None
        # A route removed and added again within one apply was edited, not deleted.
        routes = {k: body for k, body in self.fleet_docs.items() if k[0] == "HTTPRoute"}
        self.edited_routes = {
            k
            for k, body in routes.items()
            if k in self.edited_routes or self.applied_routes.get(k, body) != body
        }
        self.applied_routes = routes
        present = {site.name for site in fleet.sites}
        # The mesh drops the views of a cluster that left; a proxy there resolves anew.
        self.held = {p: v for p, v in self.held.items() if p.cluster in present}

    def replay(self) -> Mesh:
        if self._replay is None:
            self._replay = mesh_after(self.fleets, self.certificates)
        return self._replay

    def resolve(self, proxy: Proxy) -> None:
        want = resolved(self.replay(), proxy)
        got = resolved(self.mesh, proxy)
        assert got == want, f"{proxy}: the mesh resolves {got}, a full translation {want}"
        if got is not None:
            self.held[proxy] = got

    @staticmethod
    def _pick(data: st.DataObject, docs: Mapping[Key, Body], kind: str) -> Key | None:
        keys = sorted(k for k in docs if k[0] == kind)
        return data.draw(st.sampled_from(keys), label=kind) if keys else None

    def _remove(self, data: st.DataObject, docs: dict[Key, Body], kind: str) -> None:
        key = self._pick(data, docs, kind)
        if key is not None:
            del docs[key]

    def _cluster(self, data: st.DataObject) -> dict[Key, Body]:
        return self.cluster_docs[data.draw(st.sampled_from(CLUSTER_NAMES), label="cluster")]

    def _service(self, data: st.DataObject) -> tuple[str, str, str]:
        """A (cluster, namespace, name) to change: often the own service of a sidecar in use,
        whose inbound side only a change of that service in its cluster touches."""
        fronted = sorted({(p.cluster, p.namespace, p.service) for p in self.held if p.service})
        own = data.draw(st.booleans(), label="a sidecar's own service") if fronted else False
        if own:
            return data.draw(st.sampled_from(fronted), label="service")
        cluster = data.draw(st.sampled_from(CLUSTER_NAMES), label="cluster")
        namespace, name = data.draw(st.sampled_from(SERVICES), label="service")
        return cluster, namespace, name

    # -- the changes, each drawing what it changes

    def put_service(self, data: st.DataObject) -> None:
        cluster, namespace, name = self._service(data)
        ports = data.draw(
            st.lists(
                st.tuples(st.sampled_from(tuple(PORTS)), st.sampled_from(APP_PROTOCOLS)),
                min_size=1,
                max_size=3,
                unique_by=lambda port: port[0],
            ),
            label="ports",
        )
        headless = data.draw(st.sampled_from((False, False, False, True)), label="headless")
        self.cluster_docs[cluster]["Service", namespace, name] = service(
            namespace, name, ports, headless
        )

    def remove_service(self, data: st.DataObject) -> None:
        self._remove(data, self._cluster(data), "Service")

    def put_endpoints(self, data: st.DataObject) -> None:
        cluster, namespace, name = self._service(data)
        ports = data.draw(
            st.lists(st.sampled_from(tuple(PORTS)), min_size=1, max_size=3, unique=True),
            label="ports",
        )
        endpoints = data.draw(
            st.lists(
                st.builds(
                    EndpointSpec,
                    st.integers(1, 4),
                    st.sampled_from((True, True, False)),
                    st.sampled_from(ZONES),
                ),
                max_size=3,
                unique_by=lambda e: e.host,
            ),
            label="endpoints",
        )
        mutual = data.draw(st.booleans(), label="mutual")
        # A service may have a second slice, far from the first in the cluster's order.
        second = data.draw(st.booleans(), label="second slice")
        slice_name = f"{'z' if second else ''}{name}-{cluster}"
        self.cluster_docs[cluster]["EndpointSlice", namespace, slice_name] = endpoint_slice(
            cluster, namespace, name, ports, endpoints, mutual, second
        )

    def remove_endpoints(self, data: st.DataObject) -> None:
        self._remove(data, self._cluster(data), "EndpointSlice")

    def put_export(self, data: st.DataObject) -> None:  # with or without its Service
        cluster, namespace, name = self._service(data)
        created = data.draw(st.sampled_from(CREATED), label="created")
        self.cluster_docs[cluster]["ServiceExport", namespace, name] = service_export(
            namespace, name, created
        )

    def remove_export(self, data: st.DataObject) -> None:
        self._remove(data, self._cluster(data), "ServiceExport")

    def put_grant(self, data: st.DataObject) -> None:
        provider = data.draw(st.sampled_from(NAMESPACES), label="provider")
        name = data.draw(st.sampled_from(("g1", "g2")), label="name")
        others = tuple(ns for ns in NAMESPACES if ns != provider)
        consumer = data.draw(st.sampled_from(others), label="consumer")
        own = tuple(name for ns, name in SERVICES if ns == provider)
        granted = data.draw(
            st.sampled_from((None, *own)) | st.sampled_from(SERVICE_NAMES), label="service"
        )
        routes = data.draw(st.sampled_from((False, False, True)), label="to routes")
        accounts = data.draw(st.sampled_from(((), (), ("batch",))), label="service accounts")
        self.fleet_docs["ReferenceGrant", provider, name] = reference_grant(
            provider, name, consumer, granted, routes, accounts
        )

    def remove_grant(self, data: st.DataObject) -> None:
        self._remove(data, self.fleet_docs, "ReferenceGrant")

    def put_route(self, data: st.DataObject) -> None:
        namespace = data.draw(st.sampled_from(NAMESPACES), label="namespace")
        name = data.draw(st.sampled_from(("r1", "r2")), label="name")
        refs = data.draw(
            st.lists(parents, min_size=1, max_size=2, unique_by=lambda r: r["name"]),
            label="parentRefs",
        )
        rules = data.draw(route_rules, label="rules")
        self.fleet_docs["HTTPRoute", namespace, name] = http_route(namespace, name, refs, rules)

    def remove_route(self, data: st.DataObject) -> None:
        self._remove(data, self.fleet_docs, "HTTPRoute")

    def put_policy(self, data: st.DataObject) -> None:
        namespace, target = data.draw(st.sampled_from(SERVICES), label="target")
        name = data.draw(st.sampled_from(("p1", "p2")), label="name")
        imported = data.draw(st.booleans(), label="ServiceImport")
        spread = data.draw(spreads, label="spread")
        self.fleet_docs["LocalityPolicy", namespace, name] = locality_policy(
            namespace, name, target, imported, spread
        )

    def remove_policy(self, data: st.DataObject) -> None:
        self._remove(data, self.fleet_docs, "LocalityPolicy")

    def put_cluster(self, data: st.DataObject) -> None:  # joins, moves, changes network
        cluster = data.draw(st.sampled_from(CLUSTER_NAMES), label="cluster")
        network = data.draw(st.sampled_from(NETWORKS), label="network")
        place = data.draw(st.none() | st.sampled_from(tuple(CLUSTERS.values())), label="place")
        self.fleet_docs["ClusterProfile", "", cluster] = cluster_profile(cluster, network, place)

    def remove_cluster(self, data: st.DataObject) -> None:  # its objects wait for its return
        self._remove(data, self.fleet_docs, "ClusterProfile")

    def put_gateway(self, data: st.DataObject) -> None:
        cluster = data.draw(st.sampled_from(CLUSTER_NAMES), label="cluster")
        if data.draw(st.sampled_from((False, False, True)), label="ingress"):
            port = data.draw(st.sampled_from((8080, 8443)), label="port")
            everyone = data.draw(st.booleans(), label="routes of all namespaces")
            self.fleet_docs["Gateway", *INGRESS] = ingress_gateway(cluster, port, everyone)
        else:
            address = data.draw(st.sampled_from(EAST_WEST_ADDRESSES), label="address")
            key: Key = ("Gateway", "kontinuum-system", f"east-west-{cluster}")
            self.fleet_docs[key] = east_west_gateway(cluster, address)

    def remove_gateway(self, data: st.DataObject) -> None:
        self._remove(data, self.fleet_docs, "Gateway")

    def disconnect(self, data: st.DataObject) -> None:
        """The proxies of some views go away: the mesh drops those views (what only they
        held goes with them) and keeps the others; a proxy that comes back resolves anew.
        Not a fleet change, but the next apply must not miss what they held."""
        views = sorted(set(self.held.values()))
        if not views:
            return
        gone = set(data.draw(st.lists(st.sampled_from(views), min_size=1, unique=True)))
        in_use = set(views) - gone
        assert self.mesh.forget_idle(in_use, idle_for=0.0) == len(gone)
        self.held = {p: v for p, v in self.held.items() if v in in_use}

    def nothing(self, data: st.DataObject) -> None:
        """The same fleet again (as a resync does): equal values, not the same objects."""
        self.fresh = True

    # Weighted by repetition: edits and additions are what build interesting fleets.
    CHANGES: tuple[Change, ...] = (
        *(put_service, put_service, remove_service),
        *(put_endpoints, put_endpoints, remove_endpoints),
        *(put_export, remove_export),
        *(put_grant, put_grant, remove_grant),
        *(put_route, put_route, put_route, remove_route),
        *(put_policy, put_policy, remove_policy),
        *(put_cluster, put_cluster, remove_cluster),
        *(put_gateway, put_gateway, remove_gateway),
        nothing,
        disconnect,
    )

    # -- rules

    @initialize(
        mtls=st.booleans(),
        edge=st.sampled_from(("edge", "edge", "backbone")),  # the network of cluster edge
        changes=st.lists(st.sampled_from(CHANGES), max_size=6),
        data=st.data(),
        first=st.lists(st.sampled_from(PROXIES), min_size=3, max_size=10),
    )
    def start(
        self,
        mtls: bool,
        edge: str,
        changes: list[Change],
        data: st.DataObject,
        first: list[Proxy],
    ) -> None:
        """Three clusters (edge maybe on a network of its own) with every service somewhere,
        shop/cart exported from two, granted to web and routed, east-west gateways and an
        ingress gateway; changed at random; some proxies already connected."""
        if mtls:
            self.certificates = WorkloadCertificates(authority())
        self.mesh = Mesh(SnapshotCache(), self.certificates)
        for cluster in CLUSTER_NAMES:
            network = edge if cluster == "edge" else "backbone"
            self.fleet_docs["ClusterProfile", "", cluster] = cluster_profile(cluster, network)
            key: Key = ("Gateway", "kontinuum-system", f"east-west-{cluster}")
            self.fleet_docs[key] = east_west_gateway(cluster, EAST_WEST_ADDRESSES[0])
        self.fleet_docs["Gateway", *INGRESS] = ingress_gateway("east", 8080, True)
        seed = [
            ("east", "shop", "cart"),
            ("west", "shop", "cart"),
            ("east", "web", "front"),
            ("west", "shop", "pay"),
            ("edge", "web", "cart"),
            ("edge", "ops", "db"),
        ]
        for cluster, namespace, name in seed:
            docs = self.cluster_docs[cluster]
            ports = [(80, "http"), (9090, "grpc")]
            docs["Service", namespace, name] = service(namespace, name, ports, False)
            endpoints = [EndpointSpec(1, True, CLUSTERS[cluster][1]), EndpointSpec(2, True, "")]
            docs["EndpointSlice", namespace, f"{name}-{cluster}"] = endpoint_slice(
                cluster, namespace, name, [80, 9090], endpoints, False
            )
        for cluster in ("east", "west"):
            self.cluster_docs[cluster]["ServiceExport", "shop", "cart"] = service_export(
                "shop", "cart", None
            )
        self.fleet_docs["ReferenceGrant", "shop", "g1"] = reference_grant(
            "shop", "g1", "web", None, False, ()
        )
        self.fleet_docs["HTTPRoute", "shop", "r1"] = http_route(
            "shop",
            "r1",
            [_ref(MCS, "ServiceImport", "cart", None, None)],
            [
                {
                    "matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
                    "backendRefs": [_ref("", "Service", "pay", None, 80)],
                },
                {"backendRefs": [_ref(MCS, "ServiceImport", "cart", None, 80)]},
            ],
        )
        for change in changes:
            change(self, data)
        self.apply()
        for proxy in first:
            self.resolve(proxy)

    @rule(proxy=st.sampled_from(PROXIES))
    def connect(self, proxy: Proxy) -> None:
        """A proxy connects: the mesh resolves its view exactly when a full translation does."""
        self.resolve(proxy)

    @rule(change=st.sampled_from(CHANGES), whole=st.booleans(), data=st.data())
    def change(self, change: Change, whole: bool, data: st.DataObject) -> None:
        """One change; `whole`: a changed cluster's objects are all built again."""
        change(self, data)
        self.whole = whole
        self.apply()

    @rule(
        changes=st.lists(st.sampled_from(CHANGES), min_size=2, max_size=4),
        whole=st.booleans(),
        data=st.data(),
    )
    def change_several(self, changes: list[Change], whole: bool, data: st.DataObject) -> None:
        """Changes that arrive together (one debounced apply)."""
        for change in changes:
            change(self, data)
        self.whole = whole
        self.apply()

    # -- the oracle

    @invariant()
    def views_equal_a_full_translation(self) -> None:
        if not self.fleets:
            return
        references = [("replay", self.replay())]
        if len(self.fleets) > 1 and not self.edited_routes:
            references.append(("scratch", mesh_after(self.fleets[-1:], self.certificates)))
        held = sorted(self.held.items(), key=lambda item: (item[1], repr(item[0])))
        for what, reference in references:
            for proxy, view in held:
                want = resolved(reference, proxy)
                got = served(self.mesh, view)
                if want is None:  # e.g. an ingress view whose Gateway is gone: it gets nothing
                    leftovers = sorted(
                        f"{short_name(t)} {n}"
                        for t, names in got.items()
                        if t != SECRET
                        for n in names
                    )
                    assert not leftovers, (
                        f"view {view} can no longer be served ({what}) but holds {leftovers}"
                    )
                    continue
                assert want == view, f"{proxy}: resolved {view} before, {want} now ({what})"
                problems = differences(got, served(reference, view))
                assert not problems, (
                    f"view {view} after apply #{len(self.fleets)} differs from the {what} "
                    f"translation: " + "; ".join(problems[:12])
                )


IncrementalOracle.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=15,
    deadline=None,
    database=None,  # nothing written to .hypothesis/
    # A failure is shrunk to one minimal sequence (10-20 s when tried); the explain phase
    # would run it hundreds of times more only to comment on which draws matter.
    report_multiple_bugs=False,
    phases=tuple(phase for phase in Phase if phase is not Phase.explain),
)
TestIncrementalOracle = IncrementalOracle.TestCase
