"""`kontinuum serve` as a user runs it, in a process of its own, stopped and started again,
its fleet files edited under it, with a real Envoy sidecar and real HTTP backends:

- a restart with a typo in a fleet file serves that file's last good version (kept under
  `--state-dir`): traffic through the sidecar never stops, `/readyz` says what is degraded;
- a file caught half-written (truncated, then written whole, as `kubectl get -o yaml >
  file` does) takes nothing out of the mesh;
- a typo in one cluster's file does not hold back a change in another cluster's;
- before its config cluster answers, `serve` already answers: `/readyz` says what it waits
  for and a proxy is asked to retry (UNAVAILABLE), not refused as of an unknown cluster.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.bootstrap import proxy_metadata
from kontinuum.xds import types
from tests.e2e.backends import Backend, Reply, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.routing_fleet import NAMESPACE, endpoint_slice, service
from tests.support.fleet import cluster_profile, rewrite
from tests.support.kube import write_kubeconfig
from tests.support.kube_writes import WritableKubeCluster
from tests.support.net import async_wait_until, free_port, wait_until
from tests.support.security import SOTW_METHOD, node

pytestmark = pytest.mark.e2e

KONTINUUM = [sys.executable, "-m", "kontinuum"]
HELLO = "hello.demo.svc.clusterset.local"
HELLO_CLUSTER = f"outbound|80||{HELLO}"
TYPO = ("port: 80,", "port: eighty,")  # in the Service's `ports`, as `service()` writes it
READY_SECONDS = 30.0  # bounds on waits for a `serve` starting on a busy 2-core machine


def _get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


class Serve:
    """`kontinuum serve --plaintext-xds --no-write-status ARGS` in a process of its own, on
    ports fixed once, so that it can be stopped (SIGTERM, as Kubernetes stops a pod) and
    started again as it was; everything it says is appended to `log`."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args  # what the next `start` runs with
        self.xds_port = free_port()
        self.admin = f"127.0.0.1:{free_port()}"
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    def start(self) -> Serve:
        assert self._process is None, "already running"
        with self.log.open("a") as out:
            command = [
                *KONTINUUM, "serve", "--plaintext-xds", "--no-write-status", *self.args,
                "--xds-address", self.xds_address, "--admin-address", self.admin,
            ]  # fmt: skip
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> None:
        """SIGTERM, and wait for the exit (kill after 20 s); safe to call more than once."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def readyz(self) -> tuple[int, str]:
        """`/readyz` as a probe sees it: (status, body); status 0 while nothing listens."""
        assert self._process is not None, "not running"
        code = self._process.poll()
        assert code is None, f"serve exited with {code}:\n{self.log.read_text()}"
        return _get(f"http://{self.admin}/readyz")

    def ready(self, check: Callable[[str], bool] = lambda _: True) -> str:
        """Wait until `/readyz` is 200 with a body that passes `check`; returns the body."""

        def answered() -> str | None:
            status, body = self.readyz()
            return body if status == 200 and check(body) else None

        found = wait_until(answered, READY_SECONDS, 0.1, f"/readyz of {self.log}")
        assert found is not None
        return found

    def connected_streams(self) -> float | None:
        """How many xDS streams this process serves (`/metrics`), None before it answers."""
        status, text = _get(f"http://{self.admin}/metrics")
        for line in text.splitlines() if status == 200 else ():
            if line.startswith("kontinuum_xds_connected_streams "):
                return float(line.split()[1])
        return None


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[list[str]], Serve]]:
    """Start `kontinuum serve` processes: `started(args)`; every one is stopped at the end."""
    servers: list[Serve] = []

    def start(args: list[str]) -> Serve:
        server = Serve(args, tmp_path / f"serve-{len(servers)}.log")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def _write_fleet(root: Path, sites: Mapping[str, Backend], *, one_file: bool = False) -> Path:
    """One site per entry (all in one region), each with Service `hello` exported
    (`hello.yaml`) and the backend as its endpoint (`hello-endpoints.yaml`, or with
    `one_file` in `hello.yaml` too)."""
    root.mkdir()
    (root / "clusters.yaml").write_text(
        "---\n".join(cluster_profile(name, "eu-central-1") for name in sites)
    )
    for site, backend in sites.items():
        directory = root / "clusters" / site
        directory.mkdir(parents=True)
        declared = service(NAMESPACE, "hello")
        endpoints = endpoint_slice(NAMESPACE, "hello", backend.port)
        if one_file:
            (directory / "hello.yaml").write_text(f"{declared}---\n{endpoints}")
        else:
            (directory / "hello.yaml").write_text(declared)
            (directory / "hello-endpoints.yaml").write_text(endpoints)
    return root


def _typo(path: Path) -> None:
    """Replace `path` with a copy whose Service port is not a number (`port: eighty`)."""
    text = path.read_text()
    assert TYPO[0] in text, text
    rewrite(path, text.replace(*TYPO))


def _sidecar(envoys: StartEnvoy, serve: Serve, cluster: str) -> tuple[Envoy, int]:
    """A sidecar of namespace `demo` in `cluster`, bootstrapped as `kontinuum bootstrap`
    does; returns it and its outbound port."""
    outbound = free_port()
    envoy = envoys(
        view=cluster,
        xds_port=serve.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace=NAMESPACE, role="sidecar", outbound_port=outbound),
    )
    envoy.wait_admin(READY_SECONDS)
    envoy.wait_for(
        lambda: request(outbound, HELLO, timeout=2).status == 200,
        READY_SECONDS,
        f"{HELLO} to answer through the sidecar",
        interval=0.1,
    )
    return envoy, outbound


class Load:
    """GETs to `host` through a sidecar's outbound `port` from a thread of its own, one every
    `interval`, until stopped (at most `limit` of them, for `max_seconds` at most); every
    reply is kept."""

    def __init__(
        self,
        port: int,
        host: str,
        interval: float = 0.05,
        limit: int = 1_000,
        max_seconds: float = 60.0,
    ) -> None:
        self.replies: list[Reply] = []
        self._port, self._host = port, host
        self._interval, self._limit, self._max_seconds = interval, limit, max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        for _ in range(self._limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.replies.append(request(self._port, self._host, timeout=2))
            self._stop.wait(self._interval)

    @property
    def sent(self) -> int:
        return len(self.replies)

    def wait_for(self, count: int) -> None:
        """Until `count` requests in all have been answered (or failed)."""
        wait_until(lambda: self.sent >= count or not self._thread.is_alive(), 30, 0.02)
        assert self.sent >= count, f"the load ended after {self.sent} requests"

    def stop(self) -> list[Reply]:
        self._stop.set()
        self._thread.join(10)
        return list(self.replies)


def _failed(replies: list[Reply], backend: str) -> list[Reply]:
    return [reply for reply in replies if reply.backend != backend]


def _degraded(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith("degraded: ")]


def test_a_restart_with_a_typo_serves_the_files_last_good_version(
    tmp_path: Path,
    backends: Callable[[str], Backend],
    envoys: StartEnvoy,
    started: Callable[[list[str]], Serve],
) -> None:
    backend = backends("hello")
    fleet = _write_fleet(tmp_path / "fleet", {"eu": backend})
    serve = started(["--config", str(fleet), "--state-dir", str(tmp_path / "state")])
    assert serve.ready() == "ready\n"
    envoy, outbound = _sidecar(envoys, serve, "eu")
    load = Load(outbound, HELLO).start()
    load.wait_for(10)

    serve.stop()
    before_restart = load.sent
    _typo(fleet / "clusters" / "eu" / "hello.yaml")
    serve.start()
    body = serve.ready()
    # The sidecar's stream is on the new process: it is served what that process read.
    wait_until(lambda: serve.connected_streams() == 1, READY_SECONDS, 0.1, "Envoy to reconnect")
    envoy.wait_for(lambda: envoy.stat("control_plane.connected_state") == 1, READY_SECONDS)
    reconnected = load.sent
    load.wait_for(reconnected + 40)  # about 2 s of requests after the reconnection
    replies = load.stop()

    assert reconnected > before_restart  # requests went on while no control plane ran
    failed = _failed(replies, "hello")
    assert failed == [], f"{len(failed)} of {len(replies)} failed, the first: {failed[0]}"
    assert envoy.cluster_endpoints(HELLO_CLUSTER) == [backend.port]
    (degraded,) = _degraded(body)
    assert degraded.startswith(f"degraded: static:{fleet}: 1 configuration error"), body
    assert "the last good version of 1 file serves" in degraded
    log = serve.log.read_text()
    assert "clusters/eu/hello.yaml: its last good version stays in force" in log

    # The contrast: started again without the last good versions (another state directory),
    # the file with the typo is read for what is valid in it, and `hello` is gone.
    serve.stop()
    serve.args = ["--config", str(fleet), "--state-dir", str(tmp_path / "another-state")]
    serve.start()
    (degraded,) = _degraded(serve.ready())
    assert "last good" not in degraded
    wait_until(
        lambda: request(outbound, HELLO, timeout=2).status == 404,
        READY_SECONDS,
        what="the sidecar to be told that hello is gone",
    )


def test_a_file_caught_half_written_takes_nothing_out_of_the_mesh(
    tmp_path: Path,
    backends: Callable[[str], Backend],
    envoys: StartEnvoy,
    started: Callable[[list[str]], Serve],
) -> None:
    # All of hello in one file: emptied, it would take hello out of the mesh were it taken
    # for the file's new version.
    fleet = _write_fleet(tmp_path / "fleet", {"eu": backends("hello")}, one_file=True)
    serve = started(["--config", str(fleet), "--state-dir", str(tmp_path / "state")])
    serve.ready()
    _, outbound = _sidecar(envoys, serve, "eu")
    load = Load(outbound, HELLO).start()
    load.wait_for(10)

    declared = fleet / "clusters" / "eu" / "hello.yaml"
    text = declared.read_text()
    seen = "has no objects (being written?)"
    with declared.open("w") as out:  # 0 bytes now, as the shell's `>` leaves it at first
        truncated, sent = time.monotonic(), load.sent

        def held_long_enough() -> bool:  # 1.5 s, and until serve has read it (10 s at most)
            empty_for = time.monotonic() - truncated
            return empty_for > 10 or (empty_for > 1.5 and seen in serve.log.read_text())

        wait_until(held_long_enough, timeout=15)
        sent_while_empty = load.sent - sent
        out.write(text)
    serve.ready(lambda body: not _degraded(body))  # whole again: nothing degraded
    load.wait_for(load.sent + 20)
    replies = load.stop()

    assert sent_while_empty >= 10
    failed = _failed(replies, "hello")
    assert failed == [], f"{len(failed)} of {len(replies)} failed, the first: {failed[0]}"
    assert f"clusters/eu/hello.yaml: {seen}" in serve.log.read_text()


def test_a_typo_in_one_cluster_does_not_hold_back_a_change_in_another(
    tmp_path: Path,
    backends: Callable[[str], Backend],
    envoys: StartEnvoy,
    started: Callable[[list[str]], Serve],
) -> None:
    old, new, beta = backends("alpha-old"), backends("alpha-new"), backends("beta")
    fleet = _write_fleet(tmp_path / "fleet", {"alpha": old, "beta": beta})
    serve = started(["--config", str(fleet), "--state-dir", str(tmp_path / "state")])
    serve.ready()
    envoy, outbound = _sidecar(envoys, serve, "alpha")
    assert envoy.cluster_endpoints(HELLO_CLUSTER) == sorted([old.port, beta.port])

    _typo(fleet / "clusters" / "beta" / "hello.yaml")
    wait_until(
        lambda: "clusters/beta/hello.yaml" in serve.log.read_text(),
        READY_SECONDS,
        what="serve to report the typo",
    )
    # alpha's endpoint changes from one backend to another, the typo in beta still there
    rewrite(
        fleet / "clusters" / "alpha" / "hello-endpoints.yaml",
        endpoint_slice(NAMESPACE, "hello", new.port),
    )
    envoy.wait_for(
        lambda: envoy.cluster_endpoints(HELLO_CLUSTER) == sorted([new.port, beta.port]),
        READY_SECONDS,
        "alpha's new endpoint (and beta's, as it last was) in Envoy's /clusters",
    )
    assert request(outbound, HELLO, timeout=2).backend == "alpha-new"  # its own cluster first
    (degraded,) = _degraded(serve.ready())  # the typo is still there, beta's file held
    assert "the last good version of 1 file serves" in degraded


async def _ads(channel: grpc.aio.Channel, first: Any) -> Any:
    """The first CDS response of a SotW stream whose first request carries node `first`;
    raises grpc.aio.AioRpcError when the stream is refused."""
    call: Any = channel.stream_stream(
        SOTW_METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )
    stream = call(timeout=10)
    await stream.write(discovery_pb2.DiscoveryRequest(node=first, type_url=types.CLUSTER))
    response = await stream.read()
    stream.cancel()
    return response


def _cluster_profile(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": name, "namespace": "fleet"},
    }


async def test_before_the_config_cluster_answers_proxies_are_asked_to_retry(
    tmp_path: Path, started: Callable[[list[str]], Serve]
) -> None:
    async with WritableKubeCluster("hub") as hub:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub])
        hub.put(_cluster_profile("eu"))
        await hub.stop()  # the port is kept for its start again
        serve = started(["--config-cluster", "hub", "--kubeconfig", str(kubeconfig)])

        async def probe() -> tuple[int, str] | None:
            answer = await asyncio.to_thread(serve.readyz)
            return answer if answer[0] else None

        answer = await async_wait_until(probe, READY_SECONDS, 0.1, "/readyz to answer")
        assert answer is not None
        status, body = answer
        assert status == 503
        assert body.splitlines() == [
            "not ready",
            "waiting for the first view of kubernetes-config:hub",
        ]
        sidecar = node("web-1", "eu", "shop")
        async with grpc.aio.insecure_channel(serve.xds_address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _ads(channel, sidecar)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == "the control plane is loading the fleet: retry"

            await hub.start()

            async def ready() -> str | None:
                status, body = await asyncio.to_thread(serve.readyz)
                return body if status == 200 else None

            assert await async_wait_until(ready, READY_SECONDS, 0.1, "ready") == "ready\n"
            response = await _ads(channel, sidecar)
        assert response.type_url == types.CLUSTER
        await asyncio.to_thread(serve.stop)  # while the hub answers its last requests
