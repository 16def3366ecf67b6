"""Federation across real networks: a global and zones in network namespaces, one behind NAT.

The fleet's networks (`tests.e2e.netns`): `global`, `eu` and `edge-paris` on a WAN, the last
behind a NAT router (nftables) on a private subnet. The edge can open connections to the
global (masqueraded as its router's address) while the global has no route to the edge at
all: the edge's zone dials out. Every process is real and runs in its namespace: `kontinuum
serve --federation-address` in `global`, `kontinuum zone` in each site with its HTTP
backends, and what the test reads of them (metrics, requests) is read from inside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kontinuum.bootstrap import envoy_bootstrap, proxy_metadata
from tests.e2e.netns import FleetNetwork, Namespace
from tests.e2e.test_federation import issue, kontinuum
from tests.support.security import sample

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
XDS_PORT, ADMIN_PORT, FEDERATION_PORT = 18000, 18001, 18002  # each namespace has its own
MESH_PORT, OUTBOUND = 15443, 15001
HELLO = "hello.demo.svc.clusterset.local"
WEB = "web.demo.svc.clusterset.local"
SHOP = "shop.demo.svc.clusterset.local"

MakeNetwork = Callable[..., FleetNetwork]


def profile(site: str, region: str, *annotations: str) -> str:
    lines = "".join(f"\n    {a}" for a in annotations)
    return f"""apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: {site}
  namespace: fleet
  labels: {{topology.kubernetes.io/region: {region}, kontinuum.io/network: net-{site}}}
  annotations:{lines or " {}"}
"""


def exported(name: str, port: int) -> str:
    """Service `name` of demo, exported, with one endpoint on 127.0.0.1:`port` (in its site)."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z"}}
---
{endpoints(name, port)}"""


def endpoints(name: str, port: int) -> str:
    """The EndpointSlice of Service `name`: one endpoint, 127.0.0.1:`port`."""
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: demo
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KONTINUUM_")}


@dataclass
class Kontinuum:
    """A `kontinuum` process in a namespace, its log, and its admin address there."""

    namespace: Namespace
    args: list[str]
    log: Path
    admin: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Kontinuum:
        with self.log.open("a") as out:
            self.process = self.namespace.popen(
                [sys.executable, "-m", "kontinuum", *self.args, "--admin-address", self.admin],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=_env(),
            )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.namespace.terminate(self.process)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        status, text = self.namespace.http_get(f"http://{self.admin}/metrics")
        return sample(text, name, labels) if status == 200 else None


def until(check: Callable[[], object], what: str, seconds: float, *logs: Path) -> None:
    """Poll `check` every 0.1 s until it holds, for `seconds` at most."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"never: {what}\n{tails}")


def start_global(network: FleetNetwork, root: Path, fleet: Path, ca: Path) -> Kontinuum:
    place = network.cluster("global")
    return Kontinuum(
        place,
        [
            "serve", "--config", str(fleet), "--ca-dir", str(ca),
            "--xds-address", f"{place.address}:{XDS_PORT}",
            "--federation-address", f"{place.address}:{FEDERATION_PORT}",
            "--state-dir", str(root / "global-state"),
        ],
        root / "global.log",
        f"127.0.0.1:{ADMIN_PORT}",
    ).start()  # fmt: skip


def zone(
    network: FleetNetwork, root: Path, site: str, credentials: Path, *args: str, claim: str = ""
) -> Kontinuum:
    """`kontinuum zone` in `site`'s namespace for its files `root/site`, claiming `claim`
    (default: its own site)."""
    claimed = claim or site
    return Kontinuum(
        network.cluster(site),
        [
            "zone", "--site", claimed,
            "--global", f"{network.cluster('global').address}:{FEDERATION_PORT}",
            "--credentials", str(credentials), "--config", str(root / site), *args,
        ],
        root / f"zone-{site}-as-{claimed}.log",
        f"127.0.0.1:{ADMIN_PORT + (0 if claimed == site else 100)}",
    )  # fmt: skip


def test_an_edge_zone_behind_nat_dials_out_and_a_zone_claiming_another_site_is_refused(
    fleet_network: MakeNetwork, tmp_path: Path
) -> None:
    network = fleet_network(["global", "eu", "edge-paris"], behind_nat=["edge-paris"])
    global_ns, edge = network.cluster("global"), network.cluster("edge-paris")
    ca = tmp_path / "ca"
    kontinuum("ca", "init", "--ca-dir", str(ca))
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "clusters.yaml").write_text(
        profile("eu", "eu-west-1", "kontinuum.io/source: zone")
        + "---\n"
        + profile("edge-paris", "eu-central-1", "kontinuum.io/source: zone")
    )
    backend = edge.backend("paris-1")
    (tmp_path / "edge-paris").mkdir()
    (tmp_path / "edge-paris" / "hello.yaml").write_text(exported("hello", backend.port))
    credentials = issue(
        ca, tmp_path / "zone-edge-paris", "edge-paris", "kontinuum-system", "zone-edge-paris"
    )
    global_ = start_global(network, tmp_path, fleet, ca)
    edge_zone = zone(network, tmp_path, "edge-paris", credentials).start()
    logs = (global_.log, edge_zone.log)
    labels = {"zone": "edge-paris"}

    # The edge dialled out through its NAT: the global holds its site.
    until(
        lambda: global_.metric("kontinuum_federation_zone_objects", labels) == 3,
        "the edge's site at the global",
        60,
        *logs,
    )
    assert global_.metric("kontinuum_federation_zone_connected", labels) == 1
    assert edge_zone.metric("kontinuum_zone_connected") == 1
    # ... while the global cannot open a connection to the edge: no route to it.
    nat = network.nat("edge-paris")
    status, error = global_ns.http_get(f"http://{nat.private_address}:{ADMIN_PORT}/", timeout=1)
    assert (status, "unreachable" in error) == (0, True), error
    assert global_ns.http_get(f"http://{edge.address}:{ADMIN_PORT}/", timeout=1)[0] == 0

    # A zone of edge-paris (its certificate) claiming eu is refused, counted, and told why.
    impostor = zone(network, tmp_path, "edge-paris", credentials, claim="eu").start()
    until(
        lambda: global_.metric("kontinuum_federation_refused_total", {"reason": "identity"}),
        "the zone claiming eu refused",
        30,
        *logs,
        impostor.log,
    )
    until(lambda: "PERMISSION_DENIED" in impostor.log.read_text(), "told", 10, impostor.log)
    impostor.stop()
    assert global_.metric("kontinuum_federation_zone_connected", {"zone": "eu"}) in (None, 0)
    # The edge's own stream was neither taken over nor disturbed.
    assert global_.metric("kontinuum_federation_zone_connections_total", labels) == 1
    assert global_.metric("kontinuum_federation_zone_objects", labels) == 3


def east_west(site: str, address: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: east-west-{site}
  namespace: kontinuum-system
  labels: {{kontinuum.io/cluster: {site}}}
spec:
  gatewayClassName: kontinuum-east-west
  addresses: [{{type: IPAddress, value: {address}}}]
  listeners:
  - {{name: mesh, port: {MESH_PORT}, protocol: TLS, tls: {{mode: Passthrough}}}}
"""


def proxy(site: str, node: str, **metadata: object) -> dict[str, object]:
    """The bootstrap of a proxy of `site` served by its zone (plaintext xDS, in the site)."""
    return envoy_bootstrap(
        node_id=node,
        cluster=site,
        xds_address=f"127.0.0.1:{XDS_PORT}",
        admin_port=0,
        delta=True,
        reconnect_backoff=("0.1s", "1s"),
        metadata=proxy_metadata(namespace="demo", **metadata),  # type: ignore[arg-type]
    )


def test_sites_meet_through_east_west_gateways_and_the_edge_rides_out_a_cut_of_its_link(
    fleet_network: MakeNetwork, tmp_path: Path, envoy_path: str
) -> None:
    """eu and edge-paris each run a zone serving their proxies, an east-west gateway and a
    sidecar; eu exports `web`, edge-paris `hello`. edge-paris reaches eu's gateway through
    its NAT; eu reaches edge-paris's gateway at the edge's published address, which its
    router routes to it and opens for the gateway's port only (the gateway binds the
    Gateway's address, so that address is the edge's own, not a port forward to another).

    About 35 s: after the link is back, the edge's zone notices by its 30 s keepalive that
    the global ended its fleet stream (docs/federation.md, "A cut link").
    """
    network = fleet_network(["global", "eu", "edge-paris"], behind_nat=["edge-paris"])
    eu, edge, nat = network.cluster("eu"), network.cluster("edge-paris"), network.nat("edge-paris")
    nat.publish(MESH_PORT)
    ca = tmp_path / "ca"
    kontinuum("ca", "init", "--ca-dir", str(ca))
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "clusters.yaml").write_text(
        profile("eu", "eu-west-1", "kontinuum.io/source: zone")
        + "---\n"
        + profile(
            "edge-paris", "eu-central-1", "kontinuum.io/source: zone",
            "kontinuum.io/stale-after: 10m",
        )
    )  # fmt: skip
    (fleet / "gateways.yaml").write_text(
        east_west("eu", eu.address) + "---\n" + east_west("edge-paris", edge.address)
    )
    backends = {
        "eu-1": eu.backend("eu-1"),
        "eu-2": eu.backend("eu-2"),
        "paris-1": edge.backend("paris-1"),
        "paris-2": edge.backend("paris-2"),
    }
    for site, service, backend in (("eu", "web", "eu-1"), ("edge-paris", "hello", "paris-1")):
        (tmp_path / site).mkdir()
        (tmp_path / site / f"{service}.yaml").write_text(exported(service, backends[backend].port))
    global_ = start_global(network, tmp_path, fleet, ca)
    zones = {}
    for site in ("eu", "edge-paris"):
        credentials = issue(ca, tmp_path / f"zone-{site}", site, "kontinuum-system", f"zone-{site}")
        zones[site] = zone(
            network, tmp_path, site, credentials,
            "--xds-address", f"127.0.0.1:{XDS_PORT}", "--plaintext-xds",
            "--state-dir", str(tmp_path / f"zone-{site}-state"),
        ).start()  # fmt: skip
    edge_zone = zones["edge-paris"]
    logs = (global_.log, zones["eu"].log, edge_zone.log)
    gateways = {}
    for site, place in (("eu", eu), ("edge-paris", edge)):
        gateways[site] = place.envoy(
            tmp_path / f"gateway-{site}", node_id=f"gateway-{site}", view=site, xds_port=0,
            mode="delta", binary=envoy_path, config=proxy(site, f"gateway-{site}", role="gateway"),
        )  # fmt: skip
        place.envoy(
            tmp_path / f"sidecar-{site}", node_id=f"sidecar-{site}", view=site, xds_port=0,
            mode="delta", binary=envoy_path,
            config=proxy(site, f"sidecar-{site}", role="sidecar", outbound_port=OUTBOUND),
        )  # fmt: skip

    def answer(place: Namespace, host: str) -> tuple[int, str]:
        status, body = place.http_get(f"http://127.0.0.1:{OUTBOUND}/", headers={"Host": host})
        return status, body.strip()

    # Across sites, each way through the other site's east-west gateway.
    until(lambda: answer(edge, WEB) == (200, "backend eu-1"), "edge to eu's web", 60, *logs)
    until(lambda: answer(eu, HELLO) == (200, "backend paris-1"), "eu to edge's hello", 30, *logs)
    assert answer(edge, HELLO) == (200, "backend paris-1")
    assert eu.http_get(f"http://127.0.0.1:{backends['eu-1'].port}/")[0] == 200
    assert edge.http_get(f"http://127.0.0.1:{backends['eu-1'].port}/")[0] == 0  # only via gateway
    for site, service in (("eu", WEB), ("edge-paris", HELLO)):
        gateways[site].wait_admin()
        crossed = gateways[site].stat(f"cluster.outbound|80|{site}|{service}.upstream_rq_2xx")
        assert (crossed or 0) >= 1, site

    def counters() -> dict[str, float | None]:
        return {
            "edge received": edge_zone.metric("kontinuum_zone_fleet_resources_received_total"),
            "global received": global_.metric(
                "kontinuum_federation_zone_objects_received_total", {"zone": "edge-paris"}
            ),
        }

    before = counters()

    # The edge's uplink is cut. A local endpoint change is applied locally; not one local
    # request fails meanwhile.
    nat.cut()
    (tmp_path / "edge-paris" / "hello.yaml").write_text(exported("hello", backends["paris-2"].port))
    answers = []
    deadline = time.monotonic() + 30
    for _ in range(300):
        answers.append(answer(edge, HELLO))
        if time.monotonic() > deadline:
            break
        if answers[-1] == (200, "backend paris-2") and len(answers) >= 50:
            break
        time.sleep(0.1)
    failed = [a for a in answers if a not in {(200, "backend paris-1"), (200, "backend paris-2")}]
    assert failed == [], failed[:3]
    assert answers[-1] == (200, "backend paris-2"), answers[-3:]
    until(lambda: edge_zone.metric("kontinuum_zone_connected") == 0, "edge sees the cut", 30, *logs)
    # Its fleet stream, idle on the same link, is redialed with the broken one rather than
    # left to its keepalive (a ping every 30 s).
    until(
        lambda: edge_zone.metric("kontinuum_zone_fleet_subscribed") == 0,
        "edge redials its fleet stream too",
        10,
        *logs,
    )
    # Meanwhile eu exports a new service, shop: it reaches the global, which sends it into
    # the cut and so sees the edge's fleet stream end.
    (tmp_path / "eu" / "shop.yaml").write_text(exported("shop", backends["eu-2"].port))
    until(
        lambda: global_.metric("kontinuum_federation_zone_objects", {"zone": "eu"}) == 6,
        "eu's shop at the global",
        30,
        *logs,
    )
    until(
        lambda: global_.metric("kontinuum_federation_zone_subscribed", {"zone": "edge-paris"}) == 0,
        "the global sees the cut",
        30,
        *logs,
    )
    assert answer(eu, HELLO)[0] in (0, 503)  # the edge's gateway is out of reach

    # Restored: the remote sites are updated, and each side receives exactly what changed
    # (counted where it is received: what was sent into the cut is sent again).
    nat.restore()
    until(lambda: answer(eu, HELLO) == (200, "backend paris-2"), "eu sees paris-2", 60, *logs)
    # The edge resubscribes to the fleet as soon as its link is back.
    until(lambda: answer(edge, SHOP) == (200, "backend eu-2"), "edge reaches shop", 45, *logs)

    def resynced() -> bool:
        return (
            edge_zone.metric("kontinuum_zone_connected") == 1
            and edge_zone.metric("kontinuum_zone_fleet_subscribed") == 1
            and edge_zone.metric("kontinuum_zone_pending_objects") == 0
        )

    until(resynced, "the edge in sync both ways", 15, *logs)
    after = counters()
    assert after["edge received"] == (before["edge received"] or 0) + 1  # eu's shop
    assert after["global received"] == (before["global received"] or 0) + 1  # hello's slice
