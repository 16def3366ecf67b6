"""A serving zone whose own source of its site goes out of sync holds its own site stale,
as the global does: real processes (`kontinuum serve --federation-address`, `kontinuum zone
--context --xds-address` reading its site from a Kubernetes API emulator), real backends,
and an Envoy sidecar of the site bootstrapped to the zone. When the API goes away, the
zone's admin says its site is stale, and after the site's `stale-after` its endpoints are
dropped, so the sidecar fails over to the same service at `eu` (which the global sent);
when the API is back, the site is in sync again and serves its own traffic."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, proxy_metadata
from kontinuum.security.xds_auth import control_plane_identity
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.routing_fleet import endpoint_slice, service
from tests.e2e.test_federation import TD, Process, issue, kontinuum, until
from tests.e2e.test_federation_zone_xds import FLEET as ZONE_FLEET
from tests.support import kube
from tests.support.kube import KubeCluster, write_kubeconfig
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

HELLO = "hello.demo.svc.clusterset.local"
SOURCE = {"source": "zone:edge-paris"}

# The serving-zone tests' fleet, with a stale-after short enough to wait out.
FLEET = ZONE_FLEET.replace("kontinuum.io/stale-after: 10m", "kontinuum.io/stale-after: 3s")
assert FLEET != ZONE_FLEET


def backend_of(port: int) -> str | None:
    """Which backend answered hello through the sidecar's outbound `port`."""
    try:
        return request(port, HELLO, timeout=2).backend
    except OSError:
        return None


def readyz(admin: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


async def test_a_zone_holds_its_own_site_stale_while_its_source_is_out_of_sync(
    tmp_path: Path, envoys: StartEnvoy
) -> None:
    backends = {n: Backend(n) for n in ("paris-1", "eu-1")}
    for backend in backends.values():
        backend.start()
    ca = tmp_path / "ca"
    await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
    fleet = tmp_path / "fleet"
    (fleet / "clusters" / "eu").mkdir(parents=True)
    (fleet / "clusters.yaml").write_text(FLEET)
    (fleet / "clusters" / "eu" / "hello.yaml").write_text(
        service("demo", "hello") + "---\n" + endpoint_slice("demo", "hello", backends["eu-1"].port)
    )
    federation = f"127.0.0.1:{free_port()}"
    global_ = Process(
        [
            "serve", "--config", str(fleet), "--ca-dir", str(ca),
            "--xds-address", f"127.0.0.1:{free_port()}",
            "--federation-address", federation, "--state-dir", str(tmp_path / "global-state"),
        ],
        tmp_path / "global.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    credentials = await asyncio.to_thread(
        issue, ca, tmp_path / "zone-credentials", "edge-paris", "kontinuum-system",
        "zone-edge-paris",
    )  # fmt: skip
    sidecar = await asyncio.to_thread(
        issue, ca, tmp_path / "frontend", "edge-paris", "demo", "frontend"
    )
    async with KubeCluster("edge-paris") as cluster:
        cluster.put(
            kube.service("hello", "demo", port=80),
            kube.endpoint_slice(
                "hello-1", "hello", ["127.0.0.1"], "demo", port=backends["paris-1"].port
            ),
            kube.service_export("hello", "demo"),
        )
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [cluster])
        zone_xds = free_port()
        zone = Process(
            [
                "zone", "--site", "edge-paris", "--global", federation,
                "--credentials", str(credentials),
                "--context", "edge-paris", "--kubeconfig", str(kubeconfig),
                "--xds-address", f"127.0.0.1:{zone_xds}", "--ca-dir", str(ca),
                "--state-dir", str(tmp_path / "zone-state"),
            ],
            tmp_path / "zone.log",
            f"127.0.0.1:{free_port()}",
        )  # fmt: skip
        logs = (global_.log, zone.log)
        try:
            global_.start()
            zone.start()
            outbound = free_port()
            envoys(
                view="edge-paris",
                xds_port=0,
                mode="delta",
                node_id="frontend-1",
                config=envoy_bootstrap(
                    node_id="frontend-1",
                    cluster="edge-paris",
                    xds_address=f"127.0.0.1:{zone_xds}",
                    admin_port=0,
                    reconnect_backoff=("0.1s", "1s"),
                    metadata=proxy_metadata(
                        namespace="demo", role="sidecar", outbound_port=outbound
                    ),
                    tls=XdsClientTls(
                        ca_file=str(sidecar / "ca.pem"),
                        server_identity=str(control_plane_identity(TD)),
                        certificate_file=str(sidecar / "cert.pem"),
                        key_file=str(sidecar / "key.pem"),
                    ),
                ),
            )
            # The site's own hello serves the site's sidecar; eu's is there too, farther.
            await until(lambda: backend_of(outbound) == "paris-1", "hello at paris-1", 60, logs)

            async def fleet() -> bool:  # 2 ClusterProfiles, eu's hello and eu's state
                return await zone.metric("kontinuum_zone_fleet_resources") == 4

            await until(fleet, "the fleet from the global", 30, logs)
            assert await zone.metric("kontinuum_source_stale", SOURCE) == 0

            # The site's API goes away: the zone holds its own site stale, and says so.
            await cluster.stop()

            async def stale() -> bool:
                return await zone.metric("kontinuum_source_stale", SOURCE) == 1

            await until(stale, "the zone's own site stale at the zone", 60, logs)
            shown = await asyncio.to_thread(readyz, zone.admin)
            assert "zone:edge-paris: the zone's own source of the site is out of sync" in shown
            # After the site's stale-after (3 s, from its ClusterProfile at the global), its
            # endpoints are dropped: the sidecar fails over to eu's hello.
            await until(lambda: backend_of(outbound) == "eu-1", "failed over to eu", 30, logs)
            assert await zone.metric("kontinuum_source_endpoints", SOURCE) == 0

            # The API is back: the site is in sync again and serves its own traffic.
            await cluster.start()

            async def fresh() -> bool:
                return await zone.metric("kontinuum_source_stale", SOURCE) == 0

            await until(fresh, "the zone's own site in sync again", 90, logs)
            await until(lambda: backend_of(outbound) == "paris-1", "back at paris-1", 30, logs)
        finally:
            zone.stop()
            global_.stop()
            for backend in backends.values():
                backend.stop()
