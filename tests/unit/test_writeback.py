"""What a running fleet writes back, and when: nothing while a cluster has not been seen,
for at most the settle time, and then a round by itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from kontinuum.control.model import (
    ClusterSite,
    Fleet,
    KubernetesAccess,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.mesh import Mesh
from kontinuum.writeback import StatusOptions, StatusRuntime
from kontinuum.xds import SnapshotCache

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
ALL = [
    "ServiceExport shop/api in eu",
    "ServiceExport shop/web in eu",
    "ServiceExport shop/web in us",
]


def fleet() -> Fleet:
    """web exported from eu and us, api from eu only; both clusters read through APIs."""

    def site(name: str, *services: str) -> SiteSnapshot:
        found = tuple(Service(name, "shop", s, (ServicePort(80, "http"),)) for s in services)
        exports = tuple(ServiceExport(name, "shop", s, CREATED) for s in services)
        return SiteSnapshot(name, found, (), exports)

    sites = tuple(ClusterSite(n, access=KubernetesAccess(context=n)) for n in ("eu", "us"))
    return Fleet(sites, (site("eu", "api", "web"), site("us", "web")))


def runtime(unreported: set[str], settle: float = 30.0) -> StatusRuntime:
    mesh = Mesh(SnapshotCache())
    mesh.apply(fleet())
    return StatusRuntime(mesh, StatusOptions(settle=settle), None, lambda: unreported)


def written(status: StatusRuntime) -> list[str]:
    return sorted(str(d.ref) for d in status.desired())


async def test_every_export_once_every_cluster_was_seen() -> None:
    assert written(runtime(set())) == ALL


async def test_nothing_while_a_cluster_was_not_seen() -> None:
    assert written(runtime({"us"})) == []


async def test_a_cluster_never_seen_holds_back_only_for_the_settle_time() -> None:
    unreported = {"us"}
    status = runtime(unreported, settle=0.3)
    assert written(status) == []
    assert not status.sync.due
    await asyncio.sleep(0.1)
    assert not status.sync.due
    for _ in range(50):  # a round is due when the wait ends, by itself
        if status.sync.due:
            break
        await asyncio.sleep(0.02)
    assert status.sync.due, "no round came due when the wait ended"
    assert written(status) == ALL  # us never answered: the others are written all the same
