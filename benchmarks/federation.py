"""Federation: a zone publishing a site of N services to the global, over real gRPC and
mutual TLS on 127.0.0.1.

    python -m benchmarks.federation --services 1000 --changes 20

In one process, as `kontinuum serve --federation-address` and `kontinuum zone` run them:
the global's `FederationService` (with a certificate of a generated fleet CA) feeding the
site's `ZoneSource`, whose snapshots are followed as the aggregator follows them; and a
`Zone` reading a directory of N files, one per service (its Service, ServiceExport and
EndpointSlice), with the certificate `zone-<site>`.

1. `full_sync`: from starting the zone to the global's source yielding a snapshot with every
   service and endpoint; the bytes the zone sent;
2. `endpoint_change`: one service's file rewritten with another endpoint address, to the
   global's source yielding a snapshot holding it (the watch of the files, the stream, the
   checks and the source's debounce included; not the translation or a proxy's push);
3. `resync`: the zone is stopped, 1% of the services change their endpoint meanwhile, and a
   new zone process's worth of state (a new `Zone`) connects: the objects and bytes it sends,
   against the full sync's.

One JSON line goes to stdout. Every wait is bounded (`--timeout`).

    python -m benchmarks.federation --hook-objects 0 20000 --changes 30

`--hook-objects` measures instead what the global's federation hook costs per applied
fleet (`kontinuum serve --federation-address`, composed by `running_fleet` and
`federation_server` as the server composes them), with a fleet directory of N fleet-wide
objects besides its ClusterProfile (HTTPRoutes, 100 a file): the wall and CPU time of the
hook alone (timed by hooks registered before and after it) for one endpoint change (a
cluster file rewritten) and for one fleet-wide route change (a one-route file rewritten),
the medians, and the ratio of each N's medians to the first N's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from kontinuum.app import FleetOptions, XdsSecurity, running_fleet, settle_garbage_collector
from kontinuum.control.model import Fleet, SiteSnapshot
from kontinuum.discovery.aggregate import Debounce
from kontinuum.discovery.zone import ZoneSource
from kontinuum.federation.objects import zone_service_account
from kontinuum.federation.service import FederationService, start_server
from kontinuum.federation.zone import Zone, ZoneSettings
from kontinuum.federation_app import federation_server
from kontinuum.security import CertificateAuthority, SpiffeId
from kontinuum.security.xds_auth import (
    CONTROL_PLANE_NAMESPACE,
    FleetAuthenticator,
    ServerCertificate,
)

SITE = "edge-paris"
TD = "cluster.local"


def service_file(index: int, address: str) -> str:
    name = f"svc-{index:05d}"
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: bench}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: bench
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: [{address}]
  conditions: {{ready: true}}
"""


def address(index: int, generation: int) -> str:
    return f"10.{generation}.{index // 256}.{index % 256}"


def rewrite(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class Follower:
    """The global's source, followed as the aggregator follows it: its latest snapshot."""

    def __init__(self, source: ZoneSource) -> None:
        self.latest: SiteSnapshot | None = None
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._follow(source))

    async def _follow(self, source: ZoneSource) -> None:
        async for update in source.updates():
            if isinstance(update, SiteSnapshot):
                self.latest = update
                self.changed.set()

    async def until(self, check: Callable[[SiteSnapshot], bool], within: float) -> float:
        """Wait for a snapshot passing `check`; when it came (perf_counter)."""
        async with asyncio.timeout(within):
            while self.latest is None or not check(self.latest):
                self.changed.clear()
                await self.changed.wait()
        return time.perf_counter()

    def stop(self) -> None:
        self._task.cancel()


def holds(endpoint: str) -> Callable[[SiteSnapshot], bool]:
    return lambda snapshot: any(endpoint in e.addresses for e in snapshot.endpoints)


async def run(services: int, changes: int, within: float, work: Path) -> dict[str, Any]:
    ca = CertificateAuthority.generate(TD)
    source = ZoneSource(SITE, debounce=0.05)
    service = FederationService(FleetAuthenticator(ca), {SITE: source}.get)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{probe.getsockname()[1]}"
    certificate = ServerCertificate(ca, ["127.0.0.1"])
    server = await start_server(
        service, listen, certificate.credentials(require_client_certificate=True)
    )
    credentials = work / "credentials"
    credentials.mkdir()
    issued = ca.issue_workload(
        SpiffeId(TD, CONTROL_PLANE_NAMESPACE, zone_service_account(SITE)), SITE, timedelta(hours=1)
    )
    (credentials / "cert.pem").write_bytes(issued.certificate_chain_pem)
    (credentials / "key.pem").write_bytes(issued.private_key_pem)
    (credentials / "ca.pem").write_bytes(ca.trust_bundle_pem)
    files = work / "site"
    files.mkdir()
    for index in range(services):
        (files / f"svc-{index:05d}.yaml").write_text(service_file(index, address(index, 0)))
    settings = ZoneSettings(SITE, listen, credentials, files)
    follower = Follower(source)
    result: dict[str, Any] = {"services": services, "objects": 3 * services}
    try:
        started = time.perf_counter()
        zone = Zone(settings)
        running = asyncio.create_task(zone.run())
        done = await follower.until(
            lambda s: len(s.services) == services and len(s.endpoints) == services, within
        )
        full_bytes = zone.publisher.stats.bytes_sent
        result["full_sync_s"] = round(done - started, 3)
        result["full_sync_bytes"] = full_bytes
        print(f"full sync: {result['full_sync_s']} s, {full_bytes} bytes", file=sys.stderr)

        samples = []
        for step in range(changes):
            index = (step * 7919) % services
            new = address(index, 1 + step % 200)
            path = files / f"svc-{index:05d}.yaml"
            began = time.perf_counter()
            rewrite(path, service_file(index, new))
            samples.append(await follower.until(holds(new), within) - began)
            await asyncio.sleep(0.05)
        if samples:
            result["endpoint_change_ms"] = {
                "median": round(statistics.median(samples) * 1000, 1),
                "max": round(max(samples) * 1000, 1),
                "n": len(samples),
            }

        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await follower.until(lambda s: s.stale, within)  # the global saw the zone go
        changed = max(1, services // 100)
        last = ""
        for step in range(changed):
            index = (step * 104729) % services
            last = address(index, 250)
            rewrite(files / f"svc-{index:05d}.yaml", service_file(index, last))
        again = Zone(settings)
        running = asyncio.create_task(again.run())
        await follower.until(lambda s: not s.stale and holds(last)(s), within)
        stats = again.publisher.stats
        result["resync"] = {
            "changed_services": changed,
            "objects_sent": stats.objects_sent,
            "bytes": stats.bytes_sent,
            "bytes_of_full_sync": round(stats.bytes_sent / full_bytes, 4),
        }
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        return result
    finally:
        follower.stop()
        await server.stop(0)


PROFILE = """apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata: {name: eu, namespace: fleet}
"""


def fleet_route(name: str, service: str, path: str = "/") -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: bench}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {service}, port: 80}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: "{path}"}}}}]
    backendRefs: [{{name: {service}, port: 80}}]
"""


def hook_fleet(root: Path, objects: int) -> None:
    """A fleet directory: one ClusterProfile, `objects` HTTPRoutes (100 a file, each on a
    Service of its own name, not in the fleet), the route that changes, and a cluster with
    service svc-00000."""
    (root / "clusters" / "eu").mkdir(parents=True)
    (root / "profiles.yaml").write_text(PROFILE)
    for start in range(0, objects, 100):
        routes = (fleet_route(f"r{i}", f"r{i}") for i in range(start, min(objects, start + 100)))
        (root / f"routes-{start // 100:04d}.yaml").write_text("---\n".join(routes))
    (root / "route-bench.yaml").write_text(fleet_route("bench", "svc-00000"))
    (root / "clusters" / "eu" / "svc.yaml").write_text(service_file(0, address(0, 0)))


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


async def hook_cost(objects: int, changes: int, within: float, work: Path) -> dict[str, Any]:
    """The federation hook's wall and CPU time per applied fleet (see the module doc)."""
    root = work / f"fleet-{objects}"
    hook_fleet(root, objects)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{probe.getsockname()[1]}"
    security = XdsSecurity(CertificateAuthority.generate(TD), federation_address=listen)
    options = FleetOptions(
        path=root, status=None, security=security, debounce=Debounce(after=0.02, max=0.2)
    )
    began: list[float] = [0.0, 0.0]
    timed: list[tuple[float, float]] = []
    applied: list[Fleet] = []
    arrived = asyncio.Event()

    def before(fleet: Fleet) -> None:
        began[:] = [time.perf_counter(), time.thread_time()]

    def after(fleet: Fleet) -> None:
        timed.append((time.perf_counter() - began[0], time.thread_time() - began[1]))
        applied.append(fleet)
        arrived.set()

    async def applied_with(check: Callable[[Fleet], bool]) -> tuple[float, float]:
        async with asyncio.timeout(within):
            while True:
                arrived.clear()
                if applied and check(applied[-1]):
                    return timed[-1]
                await arrived.wait()

    loaded = time.perf_counter()
    async with running_fleet(options) as fleet, federation_server(fleet):
        settle_garbage_collector()  # as `kontinuum serve` does once the fleet is loaded
        load_s = round(time.perf_counter() - loaded, 2)
        fleet.on_applied.insert(0, before)
        fleet.on_applied.append(after)

        def route_path(path: str) -> Callable[[Fleet], bool]:
            """The applied fleet's bench route matches this path."""
            return lambda applied: any(
                r.name == "bench" and repr(path) in repr(r.rules) for r in applied.routing.routes
            )

        endpoint: list[tuple[float, float]] = []
        route: list[tuple[float, float]] = []
        for step in range(changes):
            new = address(0, 1 + step % 200)
            rewrite(root / "clusters" / "eu" / "svc.yaml", service_file(0, new))
            endpoint.append(
                await applied_with(
                    lambda f, new=new: any(new in e.addresses for e in f.snapshots[0].endpoints)
                )
            )
            path = f"/v{step}"
            rewrite(root / "route-bench.yaml", fleet_route("bench", "svc-00000", path))
            route.append(await applied_with(route_path(path)))
    print(f"{objects} objects: loaded in {load_s} s", file=sys.stderr)
    return {
        "objects": objects,
        "load_s": load_s,
        "endpoint_change_hook_ms": median_ms([w for w, _ in endpoint]),
        "endpoint_change_hook_cpu_ms": median_ms([c for _, c in endpoint]),
        "route_change_hook_ms": median_ms([w for w, _ in route]),
        "route_change_hook_cpu_ms": median_ms([c for _, c in route]),
        "n": changes,
    }


async def hook_costs(counts: list[int], changes: int, within: float, work: Path) -> dict[str, Any]:
    logging.getLogger("kontinuum").setLevel(logging.ERROR)  # not every route's status
    runs = [await hook_cost(n, changes, within, work) for n in counts]
    first = runs[0]
    ratios = {
        f"{run['objects']}/{first['objects']}": {
            key: round(run[key] / first[key], 2) if first[key] else None
            for key in ("endpoint_change_hook_ms", "route_change_hook_ms")
        }
        for run in runs[1:]
    }
    return {"hook": runs, "ratio": ratios, "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--hook-objects",
        type=int,
        nargs="+",
        help="measure the global's federation hook with these numbers of fleet-wide objects",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        if args.hook_objects:
            result = asyncio.run(
                hook_costs(args.hook_objects, args.changes, args.timeout, Path(work))
            )
        else:
            result = asyncio.run(run(args.services, args.changes, args.timeout, Path(work)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
