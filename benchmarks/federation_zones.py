"""Federation across zones: a local endpoint change at one zone, through the global, to an
Envoy of another zone; real processes on 127.0.0.1.

    python -m benchmarks.federation_zones --services 100 --changes 20

A global (`kontinuum serve --federation-address`, the fleet CA) declaring two zones,
`edge-paris` and `edge-lyon`; each a `kontinuum zone --xds-address` process reading its own
directory of N services (one file each: a Service, a ServiceExport and an EndpointSlice of
one endpoint) and serving xDS (plaintext: the proxies are local); a real Envoy sidecar of
`edge-lyon` bootstrapped to its zone. For each change, one of edge-paris's files is
rewritten with another endpoint address; the time is taken until the Envoy at edge-lyon
has applied it (the cluster's `membership_change` counter on its admin `/stats`, the one
stat of its outbound clusters it keeps, polled every 5 ms; then `/clusters` is checked to
list the new address): the zone's file watch and debounce, ZoneToGlobal, the global's
source and debounce, GlobalToZone, the other zone's debounce, translation and push, and
Envoy applying EDS.

One JSON line goes to stdout. Every wait is bounded (`--timeout`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchmarks.federation import address, rewrite, service_file
from kontinuum.bootstrap import envoy_bootstrap, proxy_metadata

KONTINUUM = [sys.executable, "-m", "kontinuum"]
ZONES = ("edge-paris", "edge-lyon")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def profile(name: str) -> str:
    return f"""apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: {name}
  namespace: fleet
  labels: {{topology.kubernetes.io/region: eu-west-3, kontinuum.io/network: backbone}}
  annotations: {{kontinuum.io/source: zone}}
"""


def wait(check: Callable[[], bool], what: str, within: float, poll: float = 0.005) -> float:
    """Poll `check` until it holds; when it did (perf_counter)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(poll)
    raise TimeoutError(f"never: {what}")


def get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def counter(admin: int, name: str) -> int:
    """A counter of Envoy's admin `/stats` (0 when it is not there yet)."""
    pattern = urllib.parse.quote(f"^{re.escape(name)}$")
    text = get(f"http://127.0.0.1:{admin}/stats?filter={pattern}")
    _, _, value = text.strip().partition(": ")
    return int(value) if value.isdigit() else 0


def run(services: int, changes: int, within: float, work: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONTINUUM_")}
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str) -> None:
        with (work / log).open("w") as out:
            processes.append(
                subprocess.Popen([*KONTINUUM, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
            )

    ca = work / "ca"
    subprocess.run([*KONTINUUM, "ca", "init", "--ca-dir", str(ca)], check=True, env=env)
    fleet = work / "fleet"
    fleet.mkdir()
    (fleet / "clusters.yaml").write_text("---\n".join(profile(z) for z in ZONES))
    federation = f"127.0.0.1:{free_port()}"
    xds: dict[str, int] = {}
    try:
        start(
            [
                "serve", "--config", str(fleet), "--ca-dir", str(ca),
                "--xds-address", f"127.0.0.1:{free_port()}",
                "--admin-address", f"127.0.0.1:{free_port()}",
                "--federation-address", federation, "--state-dir", str(work / "global"),
            ],
            "global.log",
        )  # fmt: skip
        for generation, zone in enumerate(ZONES):
            credentials = work / f"credentials-{zone}"
            subprocess.run(
                [
                    *KONTINUUM, "ca", "issue", "--ca-dir", str(ca), "--cluster", zone,
                    "--namespace", "kontinuum-system", "--service-account", f"zone-{zone}",
                    "--out", str(credentials),
                ],
                check=True,
                env=env,
            )  # fmt: skip
            files = work / zone
            files.mkdir()
            for index in range(services):
                text = service_file(index, address(index, 100 + generation))
                (files / f"{zone}-{index:05d}.yaml").write_text(
                    text.replace("svc-", f"{zone}-svc-")
                )
            xds[zone] = free_port()
            start(
                [
                    "zone", "--site", zone, "--global", federation,
                    "--credentials", str(credentials), "--config", str(files),
                    "--xds-address", f"127.0.0.1:{xds[zone]}", "--plaintext-xds",
                    "--state-dir", str(work / f"state-{zone}"),
                    "--admin-address", f"127.0.0.1:{free_port()}",
                ],
                f"{zone}.log",
            )  # fmt: skip
        admin = free_port()
        bootstrap = envoy_bootstrap(
            node_id="bench-1",
            cluster="edge-lyon",
            xds_address=f"127.0.0.1:{xds['edge-lyon']}",
            admin_port=admin,
            metadata=proxy_metadata(namespace="bench", role="sidecar", outbound_port=free_port()),
        )
        # Of the outbound clusters' stats, only the counter polled: with all of them (about
        # 300,000 at 1,000 services a zone), one `/stats` query took some 150 ms of Envoy's
        # main thread, which also applies xDS, so the polling delayed what it timed.
        bootstrap["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"].append(
            {"safe_regex": {"regex": r"^cluster\.outbound\|.*\.membership_change$"}}
        )
        (work / "envoy.yaml").write_text(yaml.safe_dump(bootstrap))
        envoy = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
        with (work / "envoy.log").open("w") as out:
            processes.append(
                subprocess.Popen(
                    [envoy, "-c", str(work / "envoy.yaml"), "--base-id", str(admin)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        clusters = f"http://127.0.0.1:{admin}/clusters"
        last = f"{address(services - 1, 100)}:8080"
        started = time.perf_counter()
        done = wait(lambda: last in get(clusters), "paris's services at lyon's Envoy", within)
        result: dict[str, Any] = {
            "services_per_zone": services,
            "first_sync_s": round(done - started, 3),
        }
        print(f"first sync to lyon's Envoy: {result['first_sync_s']} s", file=sys.stderr)
        samples = []
        paris = work / "edge-paris"
        listed = get(clusters)
        for step in range(changes):
            index = (step * 7919) % services
            old, new = address(index, 100), address(index, 1 + step % 90)
            if step >= services:
                old = address(index, 1 + (step - services) % 90)
            cluster = next(
                line.split("::")[0] for line in listed.splitlines() if f"::{old}:8080::" in line
            )
            stat = f"cluster.{cluster}.membership_change"
            before = counter(admin, stat)
            path = paris / f"edge-paris-{index:05d}.yaml"
            text = service_file(index, new).replace("svc-", "edge-paris-svc-")
            began = time.perf_counter()
            rewrite(path, text)
            seen = wait(lambda stat=stat, before=before: counter(admin, stat) > before, new, within)
            samples.append(seen - began)
            listed = get(clusters)
            if f"::{new}:8080::" not in listed:
                raise RuntimeError(f"{cluster} changed, but not to {new}")
            time.sleep(0.2)
        result["endpoint_change_to_other_zone_ms"] = {
            "median": round(statistics.median(samples) * 1000, 1),
            "max": round(max(samples) * 1000, 1),
            "n": len(samples),
        }
        return result
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        result = run(args.services, args.changes, args.timeout, Path(work))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
