"""`kontinuum serve --config-cluster` as a user runs it: a process of its own, a simulated
config cluster and workload cluster (kmock's emulator over real HTTP, in the test's event
loop), the Lease taken, status written back, and the leader visible on `/metrics`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import service, service_export, write_kubeconfig
from tests.support.kube_writes import WritableKubeCluster
from tests.support.net import eventually, free_port

pytestmark = pytest.mark.e2e

KONTINUUM = [sys.executable, "-m", "kontinuum"]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:  # not listening (yet)
        return 0, str(error)


@asynccontextmanager
async def serving(args: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`kontinuum serve ARGS` in a process of its own, stopped with SIGTERM at the end
    (waited for on the event loop: the simulated clusters answer its last requests)."""
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            *KONTINUUM, "serve", "--plaintext-xds", *args, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


def route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}],
        },
    }


async def test_serve_reads_the_config_cluster_and_writes_status(tmp_path: Path) -> None:
    async with WritableKubeCluster("hub") as hub, WritableKubeCluster("eu") as eu:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub, eu])
        eu.put(service("web", port=80), service_export("web"))
        hub.put(
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ClusterProfile",
                "metadata": {
                    "name": "eu",
                    "namespace": "fleet",
                    "annotations": {
                        "kontinuum.io/source": "kubernetes",
                        "kontinuum.io/kubeconfig": str(kubeconfig),
                        "kontinuum.io/context": "eu",
                    },
                },
            },
            route(),
        )
        admin = f"127.0.0.1:{free_port()}"
        args = [
            "--config-cluster", "hub", "--kubeconfig", str(kubeconfig),
            "--lease-namespace", "mesh", "--lease-name", "kontinuum-test",
            "--xds-address", f"127.0.0.1:{free_port()}", "--admin-address", admin,
        ]  # fmt: skip
        log = tmp_path / "serve.log"
        async with serving(args, log) as process:

            async def metrics() -> str:
                status, body = await asyncio.to_thread(_get, f"http://{admin}/metrics")
                return body if status == 200 else ""

            async def ready() -> bool:
                status, _ = await asyncio.to_thread(_get, f"http://{admin}/readyz")
                return status == 200 or process.returncode is not None

            for _ in range(300):  # at most about 30 s
                if await ready():
                    break
                await asyncio.sleep(0.1)
            assert process.returncode is None, log.read_text()

            lease = await eventually(lambda: hub.lease("kontinuum-test", "mesh"), 10, what="Lease")
            assert lease["spec"]["holderIdentity"]
            found = await eventually(
                lambda: (hub.object("HTTPRoute", "shop", "web") or {}).get("status"),
                10,
                what="the route's status",
            )
            (parent,) = found["parents"]
            resolved = {c["type"]: c for c in parent["conditions"]}["ResolvedRefs"]
            assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
            await eventually(
                lambda: (eu.object("ServiceExport", "shop", "web") or {}).get("status"),
                10,
                what="the export's status",
            )
            text = ""
            for _ in range(100):
                text = await metrics()
                if "kontinuum_leader 1.0" in text:
                    break
                await asyncio.sleep(0.1)
            assert "kontinuum_leader 1.0" in text, text
            assert 'kontinuum_status_writes_total{kind="HTTPRoute",outcome="written"} 1.0' in text
            assert 'kontinuum_source_up{source="kubernetes-config:hub"} 1.0' in text
            assert 'kontinuum_source_up{source="kubernetes:eu"} 1.0' in text

            # SIGTERM, as Kubernetes stops a pod: a clean exit that hands the Lease over.
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 20) == 0, log.read_text()
        released = hub.lease("kontinuum-test", "mesh")
        assert released is not None
        assert released["spec"]["holderIdentity"] == "", released


def refused(*args: str) -> str:
    """What `kontinuum serve ARGS` says on stderr as it refuses its options (exit code 2)."""
    wide = {**os.environ, "COLUMNS": "300"}  # one line per message in typer's error box
    result = subprocess.run(
        [*KONTINUUM, "serve", "--plaintext-xds", *args],
        capture_output=True, text=True, timeout=30, env=wide,
    )  # fmt: skip
    assert result.returncode == 2, result
    return result.stderr


def test_serve_needs_a_fleet_directory_or_a_config_cluster() -> None:
    assert "give a fleet directory, a config cluster, or both" in refused()


def test_serve_refuses_a_lease_name_kubernetes_would_refuse() -> None:
    stderr = refused("--config-cluster", "hub", "--lease-name", "Not_A_Name")
    assert "the Lease's name must be a DNS subdomain" in stderr
