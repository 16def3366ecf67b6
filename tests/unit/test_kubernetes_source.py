"""The pure parts of the Kubernetes source: objects to documents, the cluster view's sync and
staleness, debounce, backoff. (Against simulated clusters: tests/e2e/test_kubernetes_source.py.)
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kontinuum.control.fleet import parse_cluster_objects
from kontinuum.control.model import KubernetesAccess, ServiceExport
from kontinuum.discovery.kube_view import (
    ENDPOINT_SLICE,
    KINDS,
    SERVICE,
    SERVICE_EXPORT,
    Changed,
    ClusterView,
    Debouncer,
    Failed,
    Heard,
    Listed,
    object_body,
    object_document,
)
from kontinuum.discovery.kube_watch import Backoff, WatchError, describe
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.source import Health

CREATED = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def service_json(name: str = "web", **metadata: Any) -> dict[str, Any]:
    """A Service as a list answers it: no apiVersion or kind."""
    return {
        "metadata": {"name": name, "namespace": "shop", **metadata},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 80}]},
    }


def slice_json(name: str, *addresses: str, service: str = "web") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a]} for a in addresses],
    }


def export_json(name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "creationTimestamp": "2025-01-31T12:00:00Z",
        },
    }


# --- objects to documents -----------------------------------------------------------------


def test_list_items_get_their_api_version_and_kind() -> None:
    body = object_body(SERVICE, service_json())
    assert body["apiVersion"] == "v1"
    assert body["kind"] == "Service"
    assert object_body(ENDPOINT_SLICE, slice_json("s"))["apiVersion"] == "discovery.k8s.io/v1"
    exported = export_json()
    assert object_body(SERVICE_EXPORT, exported) == exported  # custom objects are complete


def test_managed_fields_are_left_out_and_the_input_kept() -> None:
    raw = service_json(managedFields=[{"manager": "kubectl"}], uid="u-1")
    body = object_body(SERVICE, raw)
    assert body["metadata"] == {"name": "web", "namespace": "shop", "uid": "u-1"}
    assert "managedFields" in raw["metadata"]
    assert "apiVersion" not in raw


def test_a_typed_object_reads_as_its_json() -> None:
    typed = client.V1Service(
        metadata=client.V1ObjectMeta(name="web", namespace="shop", creation_timestamp=CREATED),
        spec=client.V1ServiceSpec(
            cluster_ip="10.0.0.1",
            ports=[client.V1ServicePort(name="http", port=80, target_port=8080)],
        ),
    )
    raw = service_json(creationTimestamp="2025-01-31T12:00:00+00:00")
    raw["spec"]["ports"][0]["targetPort"] = 8080
    assert object_body(SERVICE, typed) == object_body(SERVICE, raw)
    with pytest.raises(TypeError, match="not a Kubernetes object"):
        object_body(SERVICE, 42)


def test_documents_parse_as_the_fleet_files_do() -> None:
    docs = [
        object_document("kubernetes:eu", SERVICE, service_json()),
        object_document("kubernetes:eu", ENDPOINT_SLICE, slice_json("web-1", "10.1.0.1")),
        object_document("kubernetes:eu", SERVICE_EXPORT, export_json()),
    ]
    assert {doc.file for doc in docs} == {"kubernetes:eu"}
    snapshot, errors = parse_cluster_objects("eu", docs)
    assert errors == []
    assert [e.addresses for e in snapshot.endpoints] == [("10.1.0.1",)]
    assert snapshot.exports == (ServiceExport("eu", "shop", "web", CREATED),)


# --- the cluster view ---------------------------------------------------------------------


def synced_view(stale_after: float = 10.0) -> ClusterView:
    view = ClusterView("eu", stale_after)
    view.apply(Listed(SERVICE, [service_json(), service_json("db")]), 0.0, 1000.0)
    view.apply(Listed(ENDPOINT_SLICE, [slice_json("web-1", "10.1.0.1")]), 0.0, 1000.0)
    view.apply(Listed(SERVICE_EXPORT, [export_json()]), 0.0, 1000.0)
    return view


def addresses(view: ClusterView) -> list[str]:
    snapshot = view.snapshot()
    assert snapshot is not None
    return sorted(a for e in snapshot.endpoints for a in e.addresses)


def test_no_snapshot_before_every_kind_was_listed() -> None:
    view = ClusterView("eu", 10.0)
    assert view.apply(Listed(SERVICE, [service_json()]), 0.0, 1000.0) is True
    view.apply(Listed(ENDPOINT_SLICE, [slice_json("web-1", "10.1.0.1")]), 0.0, 1000.0)
    assert view.snapshot() is None
    status = view.status(0.0)
    assert status.health is Health.STARTING
    assert status.detail == "listing ServiceExports"
    assert view.last_sync is None
    assert view.apply(Listed(SERVICE_EXPORT, []), 0.0, 1000.0) is True
    assert addresses(view) == ["10.1.0.1"]
    assert view.last_sync == 1000.0
    assert view.objects == 2
    assert view.status(0.0).health is Health.HEALTHY


def test_a_failure_before_the_first_sync_is_in_the_status() -> None:
    view = ClusterView("eu", 10.0)
    view.apply(Failed(SERVICE, "the API server answered 403 Forbidden"), 0.0, 1000.0)
    status = view.status(0.0)
    assert status.health is Health.STARTING
    assert status.detail == (
        "listing Services, EndpointSlices, ServiceExports (Services: the API server answered "
        "403 Forbidden; retrying)"
    )


def test_watch_events_change_the_view() -> None:
    view = synced_view()
    assert view.apply(Changed(ENDPOINT_SLICE, "ADDED", slice_json("web-2", "10.1.0.2")), 1, 1)
    assert addresses(view) == ["10.1.0.1", "10.1.0.2"]
    assert view.apply(Changed(ENDPOINT_SLICE, "MODIFIED", slice_json("web-1", "10.1.0.3")), 1, 1)
    assert addresses(view) == ["10.1.0.2", "10.1.0.3"]
    assert view.apply(Changed(ENDPOINT_SLICE, "DELETED", slice_json("web-2")), 1, 1)
    assert addresses(view) == ["10.1.0.3"]
    assert not view.apply(Changed(ENDPOINT_SLICE, "DELETED", slice_json("web-2")), 1, 1)
    assert not view.apply(
        Changed(ENDPOINT_SLICE, "MODIFIED", slice_json("web-1", "10.1.0.3")), 1, 1
    )
    assert not view.apply(Heard(SERVICE), 2.0, 1002.0)
    assert view.last_sync == 1002.0


def test_an_invalid_object_is_left_out_and_reported() -> None:
    view = synced_view()
    view.apply(Changed(ENDPOINT_SLICE, "ADDED", slice_json("bad", "10.1.0.300")), 1, 1)
    view.apply(
        Changed(ENDPOINT_SLICE, "ADDED", slice_json("orphan", "10.1.0.4", service="x")), 1, 1
    )
    assert addresses(view) == ["10.1.0.1"]
    status = view.status(1.0)
    assert status.health is Health.DEGRADED
    assert status.detail == "2 invalid object(s) left out"
    assert [str(e) for e in status.errors] == [
        "kubernetes:eu: EndpointSlice shop/bad: endpoints[0].addresses[0]: "
        "must be a valid IPv4 address, got '10.1.0.300'",
        "kubernetes:eu: EndpointSlice shop/orphan: metadata.labels[kubernetes.io/service-name]: "
        "no Service shop/x in cluster eu",
    ]


def test_out_of_sync_serves_the_last_view_stale_then_drops_its_endpoints() -> None:
    view = synced_view(stale_after=10.0)
    before = view.snapshot()
    assert before is not None
    assert not before.stale
    assert view.apply(Failed(ENDPOINT_SLICE, "cannot reach the API server: refused"), 5.0, 1005.0)
    assert view.apply(Failed(SERVICE, "cannot reach the API server: refused"), 5.1, 1005.1) is False
    stale = view.snapshot()
    assert stale is not None
    assert stale.stale
    assert stale.endpoints == before.endpoints
    assert stale.services == before.services
    status = view.status(7.0)
    assert status.health is Health.DEGRADED
    assert status.detail == (
        "out of sync with the API server since 1970-01-01T00:16:45Z (EndpointSlices, Services: "
        "cannot reach the API server: refused): serving its last view, marked stale; its "
        "endpoints are dropped in 8 s"
    )
    assert view.deadline == 15.0

    # What a relisted kind brings is not shown until every kind is back.
    view.apply(Listed(SERVICE, [service_json()]), 6.0, 1006.0)
    assert view.snapshot() == stale

    assert not view.expire(14.9)
    assert view.expire(15.0)
    assert view.deadline is None
    dropped = view.snapshot()
    assert dropped is not None
    assert dropped.stale
    assert dropped.endpoints == ()
    assert dropped.services == before.services
    assert dropped.exports == before.exports
    assert "for more than 10 s, so its endpoints are dropped" in view.status(16.0).detail
    assert view.last_sync == 1000.0

    assert view.apply(Listed(ENDPOINT_SLICE, [slice_json("web-1", "10.1.0.9")]), 20.0, 1020.0)
    back = view.snapshot()
    assert back is not None
    assert not back.stale
    assert [s.name for s in back.services] == ["web"]  # db went while it was away
    assert addresses(view) == ["10.1.0.9"]
    assert view.status(20.0).health is Health.HEALTHY
    assert view.last_sync == 1020.0


def test_a_flap_within_the_debounce_yields_nothing() -> None:
    """What `KubernetesSource.updates()` does: touch on change, snapshot when due, yield
    only what differs from the last yielded."""
    view = synced_view()
    debouncer = Debouncer(after=0.1, limit=1.0)
    yielded = view.snapshot()
    for now, event in [
        (1.00, Failed(SERVICE, "refused")),
        (1.03, Listed(SERVICE, [service_json(), service_json("db")])),
        (1.05, Failed(ENDPOINT_SLICE, "refused")),
        (1.08, Listed(ENDPOINT_SLICE, [slice_json("web-1", "10.1.0.1")])),
    ]:
        assert debouncer.deadline is None or not debouncer.due(now)
        if view.apply(event, now, 1000 + now):
            debouncer.touch(now)
    assert not debouncer.due(1.17)
    assert debouncer.due(1.19)
    assert view.snapshot() == yielded


# --- debounce and backoff -----------------------------------------------------------------


def test_the_debouncer_waits_for_a_pause_and_cuts_long_bursts() -> None:
    debouncer = Debouncer(after=0.1, limit=1.0)
    assert debouncer.deadline is None
    assert not debouncer.due(5.0)
    for tick in range(30):  # a change every 50 ms, for 1.5 s
        now = tick * 0.05
        if debouncer.due(now):
            break
        debouncer.touch(now)
    assert now == pytest.approx(1.0)  # cut at `limit`
    debouncer.reset()
    debouncer.touch(2.0)
    debouncer.touch(2.05)
    assert debouncer.deadline == pytest.approx(2.15)


def test_backoff_doubles_with_jitter_within_its_bounds() -> None:
    for seed in range(50):
        backoff = Backoff(0.5, 30.0, random.Random(seed))
        delays = [backoff.next() for _ in range(12)]
        assert all(0.5 <= d <= 30.0 for d in delays)
        assert 0.5 <= delays[0] <= 1.0
        assert 1.0 <= delays[1] <= 2.0
        assert 2.0 <= delays[2] <= 4.0
        assert all(15.0 <= d <= 30.0 for d in delays[6:])
        backoff.reset()
        assert backoff.next() <= 1.0
    spread = {round(Backoff(1.0, 8.0, random.Random(s)).next(), 6) for s in range(20)}
    assert len(spread) > 10  # jittered, not the same delay for every watcher
    flat = Backoff(2.0, 2.0)
    assert {flat.next() for _ in range(5)} == {2.0}
    huge = Backoff(0.5, 30.0)
    huge.attempts = 5000
    assert 15.0 <= huge.next() <= 30.0
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(0.0, 1.0)


def test_failures_are_described_in_a_few_words() -> None:
    status = {"kind": "Status", "code": 403, "message": 'services is forbidden: User "x"'}
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps(status).encode()
    assert describe(forbidden) == (
        'the API server answered 403 Forbidden: services is forbidden: User "x"'
    )
    assert describe(ApiException(status=0, reason="SSLError: bad cert")) == (
        "cannot reach the API server: SSLError: bad cert"
    )
    refused = urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused")  # type: ignore[arg-type]
    assert describe(refused).startswith("cannot reach the API server: ")
    assert describe(refused).endswith(": [Errno 111] Connection refused")
    assert (
        describe(WatchError("500 InternalError: etcd"))
        == "the watch failed: 500 InternalError: etcd"
    )


# --- the source ---------------------------------------------------------------------------


def test_the_source_checks_its_options() -> None:
    access = KubernetesAccess()
    assert KubernetesSource("eu", access).name == "kubernetes:eu"
    with pytest.raises(ValueError, match="stale_after"):
        KubernetesSource("eu", access, stale_after=0)
    with pytest.raises(ValueError, match="backoff"):
        KubernetesSource("eu", access, backoff=(2.0, 1.0))
    with pytest.raises(ValueError, match="debounce"):
        KubernetesSource("eu", access, debounce=-1)
    assert len(KINDS) == 3


@pytest.mark.parametrize("in_cluster", [False, True])
async def test_a_configuration_that_does_not_load_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_cluster: bool
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "no-such-kubeconfig"
    access = KubernetesAccess(kubeconfig=str(missing), in_cluster=in_cluster)
    source = KubernetesSource("eu", access, backoff=(0.01, 0.02))
    task = asyncio.create_task(anext(source.updates()))
    try:
        for _ in range(200):
            if "cannot load" in source.status().detail:
                break
            await asyncio.sleep(0.01)
        status = source.status()
        assert status.health is Health.STARTING
        where = "the pod's service account" if in_cluster else str(missing)
        assert status.detail.startswith(f"cannot load the client configuration ({where}): ")
        assert not task.done()  # still trying
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_new_stale_after_applies_to_the_running_view() -> None:
    source = KubernetesSource("eu", KubernetesAccess(), stale_after=300)
    running = source.view
    assert isinstance(running, ClusterView)
    assert running.stale_after == 300
    source.retune(KubernetesAccess(stale_after=5))
    assert (source.stale_after, running.stale_after) == (5, 5)  # the view in use, too
    assert source.new_view().stale_after == 5
