"""Leader election and status writes against simulated clusters that take writes
(tests/support/kube_writes.py: kmock's API emulator over real HTTP, spoken to by the
official client).

Every wait is bounded; the Lease lasts 1 s and is renewed every 0.2 s, so a takeover
after a leader stops takes about a second and the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (  # type: ignore[import-untyped]
    CoordinationV1Api,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from kontinuum.control.mcs import build_plane
from kontinuum.control.model import (
    ClusterSite,
    Fleet,
    KubernetesAccess,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.control.plane import Condition, ServicePlane
from kontinuum.control.route_binding import ParentStatus, RouteBinding, RouteStatus
from kontinuum.control.routing import ParentRef
from kontinuum.discovery.kube_watch import new_api_client
from kontinuum.kube import DesiredStatus, KubeClients, LeaderElection, LeaseConfig, StatusWriter
from kontinuum.kube.desired import export_statuses, routing_statuses
from tests.support.kube import service, service_export, write_kubeconfig
from tests.support.kube_writes import WritableKubeCluster
from tests.support.net import eventually

pytestmark = pytest.mark.e2e

FAST = LeaseConfig(lease_duration=1, renew_deadline=0.6, retry_period=0.2)
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
T1 = datetime(2026, 1, 6, 9, tzinfo=UTC)


async def seconds_until(check: Callable[[], bool], what: str, timeout: float = 3.0) -> float:
    """How long until `check()` holds; fails after `timeout` seconds."""
    started = time.monotonic()
    await eventually(check, timeout, what=what)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(*elections: LeaderElection) -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    """Each election's `run()` in a task (by identity), all cancelled and awaited at the end."""
    tasks = {e.identity: asyncio.create_task(e.run()) for e in elections}
    try:
        yield tasks
    finally:
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def cluster() -> AsyncIterator[WritableKubeCluster]:
    async with WritableKubeCluster("eu") as eu:
        yield eu


@pytest.fixture
def client(cluster: WritableKubeCluster, tmp_path: Path) -> Callable[[], Awaitable[Any]]:
    """The cluster's client, as a LeaderElection asks for it."""
    config = write_kubeconfig(tmp_path / "kubeconfig", [cluster])
    made = new_api_client(KubernetesAccess(kubeconfig=str(config), context=cluster.name))

    async def connect() -> Any:
        return made

    return connect


def holder(cluster: WritableKubeCluster) -> str | None:
    lease = cluster.lease("kontinuum-leader")
    return None if lease is None else lease["spec"].get("holderIdentity")


# --- leader election ------------------------------------------------------------------------


async def test_of_two_candidates_exactly_one_leads(
    cluster: WritableKubeCluster, client: Any
) -> None:
    changes: list[tuple[str, bool]] = []

    def candidate(name: str) -> LeaderElection:
        def changed(leading: bool) -> None:
            changes.append((name, leading))

        return LeaderElection(client, FAST, identity=name, on_change=changed)

    a, b = candidate("a"), candidate("b")
    async with running(a, b):
        await eventually(lambda: a.is_leader or b.is_leader, what="one leads")
        await asyncio.sleep(1.5)  # longer than the Lease: the other would have taken it by now
        leaders = [e.identity for e in (a, b) if e.is_leader]
        assert len(leaders) == 1
        assert holder(cluster) == leaders[0]
        assert changes == [(leaders[0], True)]
        lease = cluster.lease("kontinuum-leader")
        assert lease is not None
        assert lease["spec"]["leaseDurationSeconds"] == 1
        assert lease["spec"]["leaseTransitions"] == 0
        assert cluster.lease_writes["replaced"] >= 5  # renewed every 0.2 s


async def test_when_the_leader_stops_the_other_takes_over_after_the_lease_expires(
    cluster: WritableKubeCluster, client: Any
) -> None:
    a = LeaderElection(client, FAST, identity="a")
    b = LeaderElection(client, FAST, identity="b")
    async with running(a) as tasks:
        await eventually(lambda: a.is_leader, what="a leads")
        async with running(b):
            await asyncio.sleep(0.5)
            assert not b.is_leader
            await stop(tasks["a"])
            assert not a.is_leader
            took = await seconds_until(lambda: b.is_leader, "b leads")
            # b waits for the record to stay unchanged for the Lease's duration (1 s)
            assert 0.5 < took < 2.5
            assert holder(cluster) == "b"
            lease = cluster.lease("kontinuum-leader")
            assert lease is not None
            assert lease["spec"]["leaseTransitions"] == 1
            assert b.term == 1


async def test_a_leader_that_releases_on_cancel_hands_over_at_once(
    cluster: WritableKubeCluster, client: Any
) -> None:
    config = LeaseConfig(
        lease_duration=5, renew_deadline=0.6, retry_period=0.2, release_on_cancel=True
    )
    a = LeaderElection(client, config, identity="a")
    b = LeaderElection(client, config, identity="b")
    async with running(a) as tasks:
        await eventually(lambda: a.is_leader, what="a leads")
        async with running(b):
            await asyncio.sleep(0.3)
            await stop(tasks["a"])
            took = await seconds_until(lambda: b.is_leader, "b leads")
            assert took < 2.5  # not the 5 s of the Lease: released, it lasts 1 s
            assert holder(cluster) == "b"


async def test_a_leader_steps_down_when_another_holds_the_lease(
    cluster: WritableKubeCluster, client: Any
) -> None:
    a = LeaderElection(client, FAST, identity="a")
    async with running(a):
        await eventually(lambda: a.is_leader, what="a leads")
        lease = cluster.lease("kontinuum-leader")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "intruder"
        cluster._store("kontinuum-system", "kontinuum-leader", lease, lease)
        await eventually(lambda: not a.is_leader, 1.0, what="a steps down")


async def test_a_leader_that_cannot_renew_steps_down_at_the_renew_deadline(
    cluster: WritableKubeCluster, client: Any
) -> None:
    a = LeaderElection(client, FAST, identity="a")
    async with running(a):
        await eventually(lambda: a.is_leader, what="a leads")
        await cluster.stop()  # the API server is gone: renewals fail
        took = await seconds_until(lambda: not a.is_leader, "a steps down", 2.0)
        assert took < FAST.lease_duration  # before anyone else may take the Lease
        await cluster.start()
        await eventually(lambda: a.is_leader, what="a leads again")
        assert a.term == 2


async def test_a_replace_at_an_old_resource_version_is_a_conflict(
    cluster: WritableKubeCluster, client: Any
) -> None:
    """The emulator's compare-and-swap, which the election's safety rests on."""
    api = CoordinationV1Api(await client())
    body = V1Lease(
        metadata=V1ObjectMeta(name="x", namespace="kontinuum-system"),
        spec=V1LeaseSpec(holder_identity="a", lease_duration_seconds=1),
    )
    created = await asyncio.to_thread(api.create_namespaced_lease, "kontinuum-system", body)
    first = await asyncio.to_thread(api.replace_namespaced_lease, "x", "kontinuum-system", created)
    assert first.metadata.resource_version != created.metadata.resource_version
    with pytest.raises(ApiException) as raised:
        await asyncio.to_thread(api.replace_namespaced_lease, "x", "kontinuum-system", created)
    assert raised.value.status == 409
    with pytest.raises(ApiException) as again:
        await asyncio.to_thread(api.create_namespaced_lease, "kontinuum-system", body)
    assert again.value.status == 409


# --- status writes -------------------------------------------------------------------------


class Leading:
    """A Leadership that leads from the start, in the term a test sets."""

    def __init__(self, term: int = 1) -> None:
        self.is_leader = True
        self.term = term


def plane_of(eu_port: int) -> ServicePlane:
    """`shop/web` exported from eu (port `eu_port`, newer) and us (http:80, older)."""

    def site(cluster: str, port: int, created: datetime) -> SiteSnapshot:
        web = Service(cluster, "shop", "web", (ServicePort(port, "http"),))
        return SiteSnapshot(cluster, (web,), (), (ServiceExport(cluster, "shop", "web", created),))

    eu, us = ClusterSite("eu"), ClusterSite("us")
    return build_plane(Fleet((eu, us), (site("eu", eu_port, T1), site("us", 80, T0))))


def conditions(cluster: WritableKubeCluster, kind: str = "ServiceExport") -> dict[str, Any]:
    found = cluster.object(kind, "shop", "web")
    assert found is not None
    return {c["type"]: c for c in found.get("status", {}).get("conditions", [])}


@contextlib.asynccontextmanager
async def two_clusters(tmp_path: Path) -> AsyncIterator[tuple[WritableKubeCluster, ...]]:
    """eu and us, each holding Service and ServiceExport shop/web."""
    async with WritableKubeCluster("eu") as eu, WritableKubeCluster("us") as us:
        for c in (eu, us):
            c.put(service("web"), service_export("web"))
        yield eu, us


def clients_of(tmp_path: Path, *clusters: WritableKubeCluster) -> KubeClients:
    config = write_kubeconfig(tmp_path / "kubeconfig", clusters)
    clients = KubeClients()
    clients.know({c.name: KubernetesAccess(str(config), c.name) for c in clusters})
    return clients


def exports(plane: ServicePlane, name: str = "web") -> list[DesiredStatus]:
    found = export_statuses(plane.exports, {"eu", "us"})
    return [replace(d, ref=replace(d.ref, name=name)) for d in found]


class Ticks:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_leader_writes_export_conditions_once(tmp_path: Path) -> None:
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        election = LeaderElection(lambda: clients("eu"), FAST, identity="a")
        follower = LeaderElection(lambda: clients("eu"), FAST, identity="b")
        writer, idle = StatusWriter(clients, election), StatusWriter(clients, follower)
        async with running(election):
            await eventually(lambda: election.is_leader, what="a leads")
            async with running(follower):
                assert (await idle.write(exports(plane_of(81)))).outcomes == {}  # not leading
                round_ = await writer.write(exports(plane_of(81)))
                assert round_.outcomes == {"written": 2}

                conflict = conditions(eu)["Conflict"]
                assert (conflict["status"], conflict["reason"]) == ("True", "PortConflict")
                assert "clash with the ports of the export in cluster us" in conflict["message"]
                assert conflict["lastTransitionTime"].endswith("Z")
                assert conflict["observedGeneration"] == 1
                assert set(conditions(eu)) == {"Valid", "Conflict", "Ready"}
                assert conditions(us)["Conflict"]["status"] == "False"

                reads = eu.reads["ServiceExport"]
                assert (await writer.write(exports(plane_of(81)))).outcomes == {}  # unchanged
                await asyncio.sleep(0.5)
                assert (await idle.write(exports(plane_of(81)))).outcomes == {}
                assert eu.reads["ServiceExport"] == reads  # not even read again
                assert (len(eu.status_patches), len(us.status_patches)) == (1, 1)
        clients.close()


async def test_a_new_term_reads_and_rewrites_nothing_that_is_right(tmp_path: Path) -> None:
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        leadership = Leading()
        writer = StatusWriter(clients, leadership, clock=lambda: T0)
        assert (await writer.write(exports(plane_of(81)))).outcomes == {"written": 2}
        leadership.term = 2  # another may have written in between: read again
        later = StatusWriter(clients, leadership, clock=lambda: T1)
        assert (await later.write(exports(plane_of(81)))).outcomes == {"unchanged": 2}
        assert (len(eu.status_patches), len(us.status_patches)) == (1, 1)
        assert conditions(eu)["Valid"]["lastTransitionTime"] == "2026-01-05T09:00:00Z"
        clients.close()


async def test_the_transition_time_moves_only_when_the_status_changes(tmp_path: Path) -> None:
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        times = iter([T0, T0, T1])
        writer = StatusWriter(clients, Leading(), clock=lambda: next(times))
        await writer.write(exports(plane_of(81)))  # eu conflicts, at T0
        assert (await writer.write(exports(plane_of(80)))).outcomes == {"written": 1}  # at T1
        resolved = conditions(eu)
        assert resolved["Conflict"]["status"] == "False"
        assert resolved["Conflict"]["lastTransitionTime"] == "2026-01-06T09:00:00Z"
        assert resolved["Valid"]["lastTransitionTime"] == "2026-01-05T09:00:00Z"  # unchanged
        assert len(eu.status_patches) == 2
        clients.close()


async def test_an_object_changed_between_read_and_write_is_written_again(tmp_path: Path) -> None:
    """The resourceVersion read is a precondition: a write over a newer version is refused
    (409) and the next round writes from that version."""
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        entered, proceed = threading.Event(), threading.Event()
        (desired,) = [d for d in exports(plane_of(81)) if d.ref.api == "eu"]
        render = desired.render

        def slow(obj: Mapping[str, Any], now: datetime) -> dict[str, Any]:
            entered.set()
            proceed.wait(5)
            return render(obj, now)

        ticks = Ticks()
        writer = StatusWriter(clients, Leading(), monotonic=ticks)
        pending = asyncio.create_task(writer.write([replace(desired, render=slow)]))
        await eventually(entered.is_set, what="the writer read the export")
        labelled = service_export("web")
        labelled["metadata"]["labels"] = {"team": "shop"}  # someone else writes meanwhile
        eu.put(labelled)
        proceed.set()
        assert (await pending).outcomes == {"conflict": 1}
        assert "Conflict" not in conditions(eu)
        assert writer.next_retry() == 1.0  # a conflict is retried soon, without backoff
        assert (await writer.write([desired])).outcomes == {}  # not yet
        ticks.now = 1.0
        assert (await writer.write([desired])).outcomes == {"written": 1}
        assert conditions(eu)["Conflict"]["status"] == "True"
        export = eu.object("ServiceExport", "shop", "web")
        assert export is not None
        assert export["metadata"]["labels"] == {"team": "shop"}  # the other write stays
        clients.close()


async def test_an_unreachable_cluster_delays_only_its_own_objects(tmp_path: Path) -> None:
    """eu does not answer: its first object fails, its second is not even tried this round,
    us is written meanwhile; eu's are tried again after the backoff, and written."""
    async with two_clusters(tmp_path) as (eu, us):
        eu.put(service("api"), service_export("api"))
        us.put(service("api"), service_export("api"))
        us.remove("ServiceExport", "shop", "web")  # gone since the plane was built
        clients = clients_of(tmp_path, eu, us)
        ticks = Ticks()
        writer = StatusWriter(clients, Leading(), monotonic=ticks)
        desired = [*exports(plane_of(81)), *exports(plane_of(81), "api")]
        await eu.stop()
        outcome = await writer.write(desired)
        assert outcome.outcomes == {"failed": 1, "deferred": 1, "gone": 1, "written": 1}
        assert us.reads["ServiceExport"] == 2
        await eu.start()
        assert (await writer.write(desired)).outcomes == {}  # not due yet
        ticks.now = 5.0
        assert (await writer.write(desired)).outcomes == {"written": 2}
        assert eu.reads["ServiceExport"] == 2
        assert conditions(eu)["Conflict"]["status"] == "True"
        clients.close()


async def test_a_refused_write_backs_off_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """403 (RBAC without `serviceexports/status` patch) is an error in the log, once; it is
    tried again after 5 s, 10 s, ... in case the RBAC is fixed, and then written."""
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        ticks = Ticks()
        writer = StatusWriter(clients, Leading(), monotonic=ticks)
        (desired,) = [d for d in exports(plane_of(81)) if d.ref.api == "eu"]
        eu.refuse_status = 403
        with caplog.at_level(logging.DEBUG, logger="kontinuum.kube.status"):
            assert (await writer.write([desired])).outcomes == {"refused": 1}
            ticks.now = 5.0
            assert (await writer.write([desired])).outcomes == {"refused": 1}
            assert writer.next_retry() == 15.0  # 5 s, then 10 s
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert "403 Forbidden" in errors[0].getMessage()
        assert "RBAC in deploy/" in errors[0].getMessage()
        eu.refuse_status = None
        ticks.now = 15.0
        assert (await writer.write([desired])).outcomes == {"written": 1}
        assert writer.totals["ServiceExport", "refused"] == 2
        clients.close()


async def test_a_resource_without_a_status_subresource_is_reported(tmp_path: Path) -> None:
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        writer = StatusWriter(clients, Leading())
        (desired,) = [d for d in exports(plane_of(81)) if d.ref.api == "eu"]
        eu.refuse_status = 404  # the object is there, its status/ is not
        assert (await writer.write([desired])).outcomes == {"refused": 1}
        clients.close()


async def test_a_resync_repairs_a_status_someone_else_changed(tmp_path: Path) -> None:
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        writer = StatusWriter(clients, Leading())
        assert (await writer.write(exports(plane_of(81)))).outcomes == {"written": 2}
        cleared = eu.object("ServiceExport", "shop", "web")
        assert cleared is not None
        del cleared["status"]
        eu.put(cleared)
        assert (await writer.write(exports(plane_of(81)))).outcomes == {}  # remembered
        writer.forget()
        assert (await writer.write(exports(plane_of(81)))).outcomes == {
            "written": 1,
            "unchanged": 1,
        }
        assert conditions(eu)["Conflict"]["status"] == "True"
        clients.close()


async def test_route_status_keeps_the_entries_of_other_controllers(tmp_path: Path) -> None:
    other = {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.com/another-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
    }
    async with WritableKubeCluster("hub") as hub:
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}]},
            "status": {"parents": [other]},
        }
        hub.put(route)
        clients = clients_of(tmp_path, hub)
        accepted = Condition("Accepted", "True", "Accepted", "attached")
        status = RouteStatus(
            "HTTPRoute",
            "shop",
            "web",
            "hub",
            1,
            (ParentStatus(ParentRef("Service", "shop", "web", group=""), (accepted,)),),
        )
        binding = RouteBinding(statuses=(status,))
        writer = StatusWriter(clients, Leading())
        assert (await writer.write(routing_statuses(binding, "hub"))).outcomes == {"written": 1}
        written = hub.object("HTTPRoute", "shop", "web")
        assert written is not None
        parents = written["status"]["parents"]
        assert parents[0] == other
        assert parents[1]["controllerName"] == "kontinuum.io/gateway-controller"
        assert parents[1]["parentRef"] == {
            "group": "",
            "kind": "Service",
            "namespace": "shop",
            "name": "web",
        }
        assert parents[1]["conditions"][0]["observedGeneration"] == 1
        clients.close()


async def test_a_decision_taken_back_after_a_failure_leaves_nothing_due(tmp_path: Path) -> None:
    """D1 written, D2 fails, back to D1: nothing is due any more (no busy loop waiting
    for a retry of D2)."""
    async with two_clusters(tmp_path) as (eu, us):
        clients = clients_of(tmp_path, eu, us)
        ticks = Ticks()
        writer = StatusWriter(clients, Leading(), monotonic=ticks)
        first = [d for d in exports(plane_of(81)) if d.ref.api == "eu"]
        second = [d for d in exports(plane_of(80)) if d.ref.api == "eu"]
        assert (await writer.write(first)).outcomes == {"written": 1}
        await eu.stop()
        assert (await writer.write(second)).outcomes == {"failed": 1}
        assert writer.next_retry() == 5.0
        assert (await writer.write(first)).outcomes == {}  # already written
        assert writer.next_retry() is None
        clients.close()


async def test_one_objects_trouble_does_not_stop_the_others_of_its_api(tmp_path: Path) -> None:
    """A failure of one object's own (here its renderer) is that object's: the objects
    after it in the same cluster are written in the same round."""
    async with two_clusters(tmp_path) as (eu, us):
        for name in ("a", "b"):
            eu.put(service(name), service_export(name))
        clients = clients_of(tmp_path, eu, us)
        writer = StatusWriter(clients, Leading())
        (web,) = [d for d in exports(plane_of(81)) if d.ref.api == "eu"]

        def broken(obj: Mapping[str, Any], now: datetime) -> dict[str, Any]:
            raise ValueError("a renderer's bug")

        first = replace(web, ref=replace(web.ref, name="a"), render=broken)
        rest = [replace(web, ref=replace(web.ref, name=n)) for n in ("b", "web")]
        outcome = await writer.write([first, *rest])
        assert outcome.outcomes == {"failed": 1, "written": 2}
        clients.close()
