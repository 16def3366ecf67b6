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

from tests.e2e.netns import FleetNetwork, Namespace
from tests.e2e.test_federation import issue, kontinuum
from tests.support.security import sample

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
XDS_PORT, ADMIN_PORT, FEDERATION_PORT = 18000, 18001, 18002  # each namespace has its own
MESH_PORT, OUTBOUND = 15443, 15001
HELLO = "hello.demo.svc.clusterset.local"
WEB = "web.demo.svc.clusterset.local"

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
  ports: [{{name: http, port: 80, targetPort: {port}, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
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
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z"}}
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
