"""The pure parts of `kontinuum.kube`: Lease expiry and records, the status fields rendered
from decisions, and which objects get which status."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from kubernetes.client import V1Lease  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from kontinuum.control.gateway_binding import GatewayStatus, ListenerStatus, PolicyStatus
from kontinuum.control.plane import Condition, ExportStatus
from kontinuum.control.route_binding import ParentStatus, RouteBinding, RouteStatus
from kontinuum.control.routing import ParentRef, Rejection
from kontinuum.kube.conditions import (
    CONTROLLER,
    conditions_json,
    export_status,
    gateway_status,
    policy_status,
    rfc3339,
    route_status,
)
from kontinuum.kube.desired import export_statuses, routing_statuses
from kontinuum.kube.lease import (
    LeaderElection,
    LeaseConfig,
    LeaseRecord,
    claim,
    default_identity,
    still_held,
)

T0 = datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(seconds=3)


# --- Lease --------------------------------------------------------------------------------


def test_a_lease_is_held_for_its_duration_since_its_record_was_first_seen() -> None:
    record = LeaseRecord("a", 15, T0, T0)
    assert still_held(record, observed_at=100.0, now=100.0)
    assert still_held(record, observed_at=100.0, now=114.9)
    assert not still_held(record, observed_at=100.0, now=115.0)


def test_a_lease_held_by_nobody_is_free() -> None:
    assert not still_held(LeaseRecord("", 15, T0, T0), observed_at=100.0, now=100.0)


def test_expiry_ignores_the_wall_clock_of_the_record() -> None:
    """A renewTime far in the past (a skewed leader clock) does not expire a fresh record."""
    old = LeaseRecord("a", 15, T0 - timedelta(days=1), T0 - timedelta(days=1))
    assert still_held(old, observed_at=100.0, now=101.0)


def test_taking_an_absent_lease() -> None:
    assert claim(None, "a", 15, T0) == LeaseRecord("a", 15, T0, T0, 0)


def test_renewing_keeps_acquire_time_and_transitions() -> None:
    held = LeaseRecord("a", 15, T0, T0, 4)
    assert claim(held, "a", 15, T1) == LeaseRecord("a", 15, T0, T1, 4)


def test_taking_over_counts_a_transition() -> None:
    held = LeaseRecord("a", 15, T0, T0, 4)
    assert claim(held, "b", 15, T1) == LeaseRecord("b", 15, T1, T1, 5)
    released = LeaseRecord("", 1, T0, T0, 5)
    assert claim(released, "b", 15, T1).transitions == 6


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"lease_duration": 1.5}, "whole seconds"),
        ({"lease_duration": 0}, "whole seconds"),
        ({"lease_duration": 10, "renew_deadline": 10}, "greater than renew_deadline"),
        ({"renew_deadline": 2, "retry_period": 2}, "retry_period"),
        ({"name": "Leader"}, "the Lease's name must be a DNS subdomain"),
        ({"namespace": "kontinuum.system"}, "the Lease's namespace must be a DNS label"),
    ],
)
def test_inconsistent_settings_are_refused(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        LeaseConfig(**options)


def test_default_timings_are_client_go_s() -> None:
    config = LeaseConfig()
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10, 2)
    assert (config.namespace, config.name) == ("kontinuum-system", "kontinuum-leader")


def test_identities_differ_per_process_on_one_host() -> None:
    first, second = default_identity(), default_identity()
    assert first != second
    assert first.rsplit("_", 1)[0] == second.rsplit("_", 1)[0]


def test_a_record_round_trips_through_a_lease_spec() -> None:
    record = LeaseRecord("a", 15, T0, T1, 2)
    assert LeaseRecord.of(V1Lease(spec=record.spec())) == record
    assert LeaseRecord.of(V1Lease()) == LeaseRecord()


# --- status fields ------------------------------------------------------------------------

VALID = Condition("Valid", "True", "Valid", "the Service to export exists")
CONFLICT = Condition("Conflict", "True", "PortConflict", "ports differ")
NO_CONFLICT = Condition("Conflict", "False", "NoConflicts")
ACCEPTED = Condition("Accepted", "True", "Accepted", "attached")
RESOLVED = Condition("ResolvedRefs", "True", "ResolvedRefs")


def test_conditions_render_as_metav1_conditions() -> None:
    assert conditions_json((VALID, NO_CONFLICT), None, T0, 3) == [
        {
            "type": "Valid",
            "status": "True",
            "reason": "Valid",
            "message": "the Service to export exists",
            "lastTransitionTime": "2026-01-05T09:00:00Z",
            "observedGeneration": 3,
        },
        {
            "type": "Conflict",
            "status": "False",
            "reason": "NoConflicts",
            "message": "",
            "lastTransitionTime": "2026-01-05T09:00:00Z",
            "observedGeneration": 3,
        },
    ]
    assert "observedGeneration" not in conditions_json((VALID,), None, T0, None)[0]


def test_the_transition_time_is_the_objects_while_the_status_stays() -> None:
    held = conditions_json((VALID, NO_CONFLICT), None, T0, 1)
    reworded = Condition("Valid", "True", "Valid", "another message")
    now = conditions_json((reworded, CONFLICT, ACCEPTED), held, T1, 2)
    assert [c["lastTransitionTime"] for c in now] == [
        "2026-01-05T09:00:00Z",  # same status, new message: the time stays
        "2026-01-05T09:00:03Z",  # status changed
        "2026-01-05T09:00:03Z",  # new
    ]
    assert now[0]["message"] == "another message"


def test_a_held_condition_without_a_time_gets_one() -> None:
    held = [{"type": "Valid", "status": "True"}]
    assert conditions_json((VALID,), held, T1, None)[0]["lastTransitionTime"] == rfc3339(T1)


def test_times_are_utc_whole_seconds() -> None:
    assert rfc3339(datetime(2026, 1, 5, 10, 0, 0, 999999, tzinfo=UTC)) == "2026-01-05T10:00:00Z"
    plus_two = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 1, 5, 11, tzinfo=plus_two)) == "2026-01-05T09:00:00Z"


def test_export_conditions_observe_the_objects_generation() -> None:
    obj = {"metadata": {"generation": 4}, "status": {"conditions": [{"type": "Other"}]}}
    status = export_status((VALID,))(obj, T0)
    assert [c["type"] for c in status["conditions"]] == ["Valid"]  # owned whole
    assert status["conditions"][0]["observedGeneration"] == 4


def route(*parents: ParentStatus, generation: int = 2, file: str = "hub") -> RouteStatus:
    return RouteStatus("HTTPRoute", "shop", "web", file, generation, parents)


SERVICE_PARENT = ParentRef("Service", "shop", "web", group="")
GATEWAY_PARENT = ParentRef("Gateway", "edge", "public", section_name="https", port=443)


def test_route_parents_keep_other_controllers_and_their_own_times() -> None:
    other = {"parentRef": {"kind": "Gateway", "name": "x"}, "controllerName": "example.com/c"}
    first = route_status(route(ParentStatus(SERVICE_PARENT, (ACCEPTED,))))({}, T0)
    held = {"status": {"parents": [other, *first["parents"]]}}
    status = route(
        ParentStatus(SERVICE_PARENT, (ACCEPTED, RESOLVED)),
        ParentStatus(GATEWAY_PARENT, (ACCEPTED,)),
    )
    parents = route_status(status)(held, T1)["parents"]
    assert parents[0] == other
    assert [p["controllerName"] for p in parents[1:]] == [CONTROLLER, CONTROLLER]
    assert parents[2]["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": "edge",
        "name": "public",
        "sectionName": "https",
        "port": 443,
    }
    times = [c["lastTransitionTime"] for c in parents[1]["conditions"]]
    assert times == ["2026-01-05T09:00:00Z", "2026-01-05T09:00:03Z"]
    assert parents[2]["conditions"][0]["lastTransitionTime"] == "2026-01-05T09:00:03Z"
    assert {c["observedGeneration"] for p in parents[1:] for c in p["conditions"]} == {2}


def test_a_parent_no_longer_named_loses_its_entry() -> None:
    both = route(
        ParentStatus(SERVICE_PARENT, (ACCEPTED,)), ParentStatus(GATEWAY_PARENT, (ACCEPTED,))
    )
    held = {"status": route_status(both)({}, T0)}
    parents = route_status(route(ParentStatus(SERVICE_PARENT, (ACCEPTED,))))(held, T1)["parents"]
    assert [p["parentRef"]["kind"] for p in parents] == ["Service"]


def test_gateway_status_has_its_conditions_and_listeners() -> None:
    listener = ListenerStatus("http", ("HTTPRoute", "GRPCRoute"), 3, (ACCEPTED,))
    status = GatewayStatus("edge", "public", "hub", 5, (ACCEPTED,), (listener,))
    rendered = gateway_status(status)({}, T0)
    assert rendered["conditions"][0]["observedGeneration"] == 5
    assert rendered["listeners"] == [
        {
            "name": "http",
            "supportedKinds": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
            ],
            "attachedRoutes": 3,
            "conditions": conditions_json((ACCEPTED,), None, T0, 5),
        }
    ]


def test_policy_status_has_an_ancestor_per_target() -> None:
    statuses = [
        PolicyStatus("shop", "spread", "hub", ("Service", "web"), (ACCEPTED,), 2),
        PolicyStatus("shop", "spread", "hub", ("ServiceImport", "api"), (ACCEPTED,), 2),
    ]
    ancestors = policy_status(statuses)({}, T0)["ancestors"]
    assert [a["ancestorRef"] for a in ancestors] == [
        {"group": "", "kind": "Service", "namespace": "shop", "name": "web"},
        {
            "group": "multicluster.x-k8s.io",
            "kind": "ServiceImport",
            "namespace": "shop",
            "name": "api",
        },
    ]
    assert ancestors[0]["conditions"][0]["observedGeneration"] == 2


# --- which objects get which status -------------------------------------------------------


def test_exports_are_written_only_in_clusters_read_through_their_api() -> None:
    exports = [
        ExportStatus("eu", "shop", "web", (VALID,)),
        ExportStatus("edge", "shop", "web", (VALID,)),  # described by files
    ]
    (desired,) = export_statuses(exports, {"eu"})
    assert str(desired.ref) == "ServiceExport shop/web in eu"
    assert desired.ref.plural == "serviceexports"


def test_only_the_config_clusters_routing_objects_are_written_there() -> None:
    gateway = GatewayStatus("edge", "public", "hub", 1, (ACCEPTED,), ())
    policy = PolicyStatus("shop", "spread", "hub", ("Service", "web"), (ACCEPTED,), 1)
    from_files = route(file="routes.yaml")
    binding = RouteBinding(
        statuses=(route(ParentStatus(SERVICE_PARENT, (ACCEPTED,))), from_files),
        gateway_statuses=(gateway,),
        policy_statuses=(policy,),
    )
    refs = [str(d.ref) for d in routing_statuses(binding, "hub")]
    assert refs == [
        "HTTPRoute shop/web in hub",
        "Gateway edge/public in hub",
        "LocalityPolicy shop/spread in hub",
    ]


def test_a_rejected_route_says_so_on_every_parent() -> None:
    status = route(ParentStatus(SERVICE_PARENT, (ACCEPTED, RESOLVED)), generation=2)
    problem = "spec.rules[0].matches[0].path.value: must start with '/'"
    rejection = Rejection("HTTPRoute", "shop", "web", 3, (problem,))
    (desired,) = routing_statuses(RouteBinding(statuses=(status,)), "hub", [rejection])
    rendered = desired.render({}, T0)["parents"][0]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in rendered] == [
        ("Accepted", "False", "UnsupportedValue"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]
    assert rendered[0]["message"] == (
        "spec.rules[0].matches[0].path.value: must start with '/'; its last accepted version "
        "(generation 2) stays in force"
    )
    # Accepted is about the newest version; ResolvedRefs about the version in force
    assert [c["observedGeneration"] for c in rendered] == [3, 2]


# --- stepping down in time --------------------------------------------------------------


class FlakyLeases:
    """A Lease API that renews `good` times, then fails at once (`mode="fail"`) or hangs
    until released (`mode="hang"`); it records when each successful renewal was sent."""

    def __init__(self, good: int, mode: str) -> None:
        self.good, self.mode = good, mode
        self.sent: list[float] = []
        self.release = threading.Event()
        self._lease: V1Lease | None = None
        self._version = 0

    def _store(self, lease: V1Lease) -> V1Lease:
        self._version += 1
        lease.metadata.resource_version = str(self._version)
        self._lease = lease
        return lease

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> V1Lease:
        if self._lease is None:
            raise ApiException(status=404, reason="NotFound")
        return self._lease

    def create_namespaced_lease(self, namespace: str, body: V1Lease, **_: Any) -> V1Lease:
        self.sent.append(time.monotonic())
        return self._store(body)

    def replace_namespaced_lease(self, name: str, ns: str, body: V1Lease, **_: Any) -> V1Lease:
        started = time.monotonic()
        if len(self.sent) >= self.good:
            if self.mode == "hang":
                self.release.wait(10)
            raise ApiException(status=503, reason="ServiceUnavailable")
        self.sent.append(started)
        return self._store(body)


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_a_leader_steps_down_at_the_renew_deadline_after_its_last_renewal_was_sent(
    mode: str,
) -> None:
    """With periods that do not divide the deadline, stepping down still comes at
    `renew_deadline` after the last successful renewal was sent, never later."""
    config = LeaseConfig(lease_duration=3, renew_deadline=1.0, retry_period=0.45)
    leases = FlakyLeases(good=3, mode=mode)
    stepped_down: list[float] = []

    def changed(leading: bool) -> None:
        if not leading:
            stepped_down.append(time.monotonic())

    async def client() -> object:
        return object()

    election = LeaderElection(
        client, config, identity="a", on_change=changed, coordination=lambda _: leases
    )
    task = asyncio.create_task(election.run())
    try:
        for _ in range(300):
            if stepped_down:
                break
            await asyncio.sleep(0.01)
        assert stepped_down, "never stepped down"
        late = stepped_down[0] - leases.sent[-1]
        assert 0.95 <= late <= config.renew_deadline + 0.1, late
        assert len(leases.sent) == 3
    finally:
        leases.release.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_route_never_valid_is_refused_on_the_parents_it_names() -> None:
    problem = "spec.rules[0].matches[0].path.value: must start with '/'"
    rejection = Rejection(
        "HTTPRoute", "shop", "web", 1, (problem,), kept=False, parents=(SERVICE_PARENT,)
    )
    (desired,) = routing_statuses(RouteBinding(), "hub", [rejection])
    assert str(desired.ref) == "HTTPRoute shop/web in hub"
    (parent,) = desired.render({}, T0)["parents"]
    assert parent["parentRef"]["name"] == "web"
    (condition,) = parent["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "UnsupportedValue")
    assert condition["message"] == f"{problem}; it is not served"
    assert condition["observedGeneration"] == 1


def test_gateways_and_policies_say_when_their_newest_version_is_refused() -> None:
    listener = ListenerStatus("http", ("HTTPRoute",), 1, (ACCEPTED,))
    gateway = GatewayStatus("edge", "public", "hub", 4, (ACCEPTED, RESOLVED), (listener,))
    policy = PolicyStatus("shop", "spread", "hub", ("Service", "web"), (ACCEPTED,), 2)
    rejections = [
        Rejection("Gateway", "edge", "public", 5, ("spec.listeners[0].port: required",)),
        Rejection("LocalityPolicy", "shop", "spread", 3, ("spec: one of weights or failover",)),
        Rejection(
            "LocalityPolicy",
            "shop",
            "new",
            1,
            ("spec.weights[0].weight: too big",),
            kept=False,
            targets=(("Service", "api"),),
        ),
    ]
    binding = RouteBinding(gateway_statuses=(gateway,), policy_statuses=(policy,))
    by_ref = {str(d.ref): d for d in routing_statuses(binding, "hub", rejections)}
    public = by_ref["Gateway edge/public in hub"].render({}, T0)
    accepted = public["conditions"][0]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == (
        "Accepted",
        "False",
        "Invalid",
    )
    assert accepted["message"].endswith("its last accepted version (generation 4) stays in force")
    assert [c["observedGeneration"] for c in public["conditions"]] == [5, 4]
    assert public["listeners"][0]["attachedRoutes"] == 1  # the version in force's
    spread = by_ref["LocalityPolicy shop/spread in hub"].render({}, T0)["ancestors"][0]
    assert spread["conditions"][0]["reason"] == "Invalid"
    new = by_ref["LocalityPolicy shop/new in hub"].render({}, T0)["ancestors"]
    assert [a["ancestorRef"]["name"] for a in new] == ["api"]


def test_kontinuums_gateway_classes_are_accepted() -> None:
    (desired,) = routing_statuses(RouteBinding(), "hub", gateway_classes=["kontinuum"])
    assert (str(desired.ref), desired.ref.namespace) == ("GatewayClass kontinuum in hub", "")
    (condition,) = desired.render({"metadata": {"generation": 2}}, T0)["conditions"]
    assert (condition["type"], condition["status"], condition["observedGeneration"]) == (
        "Accepted",
        "True",
        2,
    )


def test_status_is_written_only_on_parents_kontinuum_knows() -> None:
    """A route's entry for a parent Gateway that neither the files nor the config cluster
    declare is nobody's to write; a disowned route keeps no entry of kontinuum's."""
    known = GatewayStatus("edge", "public", "files.yaml", 1, (ACCEPTED,), ())
    unknown = ParentRef("Gateway", "edge", "nowhere")
    status = route(ParentStatus(GATEWAY_PARENT, (ACCEPTED,)), ParentStatus(unknown, (ACCEPTED,)))
    binding = RouteBinding(statuses=(status,), gateway_statuses=(known,))
    found = {
        str(d.ref): d
        for d in routing_statuses(binding, "hub", disowned=[("HTTPRoute", "shop", "gone")])
    }
    (parent,) = found["HTTPRoute shop/web in hub"].render({}, T0)["parents"]
    assert parent["parentRef"]["name"] == "public"
    held = {"status": {"parents": [{"parentRef": {"name": "x"}, "controllerName": CONTROLLER}]}}
    assert found["HTTPRoute shop/gone in hub"].render(held, T0) == {"parents": []}
