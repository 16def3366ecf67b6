"""The zone's delta bookkeeping: only what differs from what the global holds is sent, and
each response is answered by nonce (`kontinuum.federation.publisher`)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.federation.objects import (
    MAX_OBJECT_BYTES,
    TYPE_URL,
    ObjectError,
    SiteObject,
    received_object,
    site_object,
    version_of,
)
from kontinuum.federation.publisher import Publisher
from kontinuum.federation.v1.federation_pb2 import KubeObject


def service(name: str, port: int = 80) -> SiteObject:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }
    return site_object(body)


def sent(response: discovery_pb2.DeltaDiscoveryResponse | None) -> tuple[list[str], list[str]]:
    assert response is not None
    assert response.type_url == TYPE_URL
    return [r.name for r in response.resources], list(response.removed_resources)


def ack(nonce: str) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_URL, response_nonce=nonce)


def nack(nonce: str, message: str) -> discovery_pb2.DeltaDiscoveryRequest:
    request = ack(nonce)
    request.error_detail.code = 3
    request.error_detail.message = message
    return request


def test_the_version_is_the_content_hash_and_names_say_kind_namespace_name() -> None:
    a, again, other = service("a"), service("a"), service("a", port=81)
    assert a.name == "Service/demo/a"
    assert a.version == again.version != other.version
    assert len(a.version) == 64


def test_a_first_stream_sends_everything_once() -> None:
    publisher = Publisher()
    publisher.publish([service("a"), service("b")])
    assert publisher.response() is None  # no stream yet
    publisher.connect({})
    assert sent(publisher.response()) == (["Service/demo/a", "Service/demo/b"], [])
    assert publisher.response() is None  # nothing changed since
    assert publisher.stats.objects_sent == 2


def test_a_reconnect_sends_only_what_differs_from_the_initial_versions() -> None:
    unchanged, changed, new = service("a"), service("b", port=81), service("c")
    publisher = Publisher()
    publisher.publish([unchanged, changed, new])
    publisher.connect(
        {
            unchanged.name: unchanged.version,
            changed.name: service("b").version,  # the global holds the old b
            "Service/demo/gone": "0" * 64,  # and one removed while apart
        }
    )
    assert sent(publisher.response()) == (
        ["Service/demo/b", "Service/demo/c"],
        ["Service/demo/gone"],
    )
    assert (publisher.stats.objects_sent, publisher.stats.removals_sent) == (2, 1)


def test_a_reconnect_with_nothing_changed_sends_one_empty_response() -> None:
    objects = [service("a"), service("b")]
    publisher = Publisher()
    publisher.publish(objects)
    publisher.connect({o.name: o.version for o in objects})
    assert publisher.pending() == 0
    assert sent(publisher.response()) == ([], [])  # the view is complete: say so
    assert publisher.response() is None
    assert publisher.stats.objects_sent == 0


def test_a_change_sends_that_object_and_a_removal_its_name() -> None:
    a, b = service("a"), service("b")
    publisher = Publisher()
    publisher.publish([a, b])
    publisher.connect({})
    publisher.response()
    publisher.publish([service("a", port=8080)])
    assert publisher.pending() == 2
    assert sent(publisher.response()) == (["Service/demo/a"], ["Service/demo/b"])
    assert publisher.pending() == 0


def test_acks_and_nacks_are_matched_by_nonce_and_a_nack_resends_nothing() -> None:
    publisher = Publisher()
    publisher.publish([service("a")])
    publisher.connect({})
    first = publisher.response()
    assert first is not None
    assert publisher.unanswered == 1
    assert publisher.answer(ack("no-such-nonce")) is None  # a stale nonce: ignored
    answer = publisher.answer(ack(first.nonce))
    assert answer is not None
    assert answer.accepted
    assert publisher.answer(ack(first.nonce)) is None  # answered once only

    publisher.publish([service("a", port=81)])
    second = publisher.response()
    assert second is not None
    assert second.nonce != first.nonce
    refused = publisher.answer(nack(second.nonce, "Service/demo/a: spec.ports[0]: bad"))
    assert refused is not None
    assert refused.error == "Service/demo/a: spec.ports[0]: bad"
    assert publisher.response() is None  # no resend loop: only a new change is sent
    assert (publisher.stats.acks, publisher.stats.nacks) == (1, 1)


def test_a_disconnect_forgets_the_stream() -> None:
    publisher = Publisher()
    publisher.publish([service("a")])
    publisher.connect({})
    response = publisher.response()
    assert response is not None
    publisher.disconnect()
    assert not publisher.connected
    assert publisher.response() is None
    assert publisher.answer(ack(response.nonce)) is None


def test_a_received_object_must_be_what_its_name_and_version_say() -> None:
    a = service("a")
    assert received_object(a.name, a.version, a.message).body == a.body
    with pytest.raises(ObjectError, match="named 'Service/demo/b'"):
        received_object("Service/demo/b", a.version, a.message)
    with pytest.raises(ObjectError, match="SHA-256"):
        received_object(a.name, "1", a.message)
    lying = KubeObject()
    lying.CopyFrom(a.message)
    lying.json = (
        b'{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "demo"}}'
    )
    with pytest.raises(ObjectError, match="its JSON is 'Service/demo/x'"):
        received_object(a.name, version_of(lying), lying)
    with pytest.raises(ObjectError, match="is not published"):
        site_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    huge = dict(a.body, data="x" * MAX_OBJECT_BYTES)
    with pytest.raises(ObjectError, match="more than the"):
        site_object(huge)


def test_a_large_change_goes_out_in_responses_under_the_budget() -> None:
    objects = [service(f"s{i}") for i in range(10)]
    publisher = Publisher()
    publisher.publish(objects)
    publisher.connect({"Service/demo/gone": "0" * 64})
    budget = 3 * objects[0].size
    responses = []
    for _ in range(20):  # bounded: 10 objects need 4 responses
        response = publisher.response(budget)
        if response is None:
            break
        responses.append(response)
    assert [(len(r.removed_resources), len(r.resources)) for r in responses] == [
        (1, 2),
        (0, 3),
        (0, 3),
        (0, 2),
    ]
    assert [r.system_version_info for r in responses] == ["partial", "partial", "partial", ""]
    assert sorted(n for r in responses for n in (x.name for x in r.resources)) == sorted(
        o.name for o in objects
    )
    one = publisher.response(budget=1)
    assert one is None  # everything was sent
    publisher.publish([*objects, service("big")])
    single = publisher.response(budget=1)  # an object larger than the budget still goes
    assert single is not None
    assert len(single.resources) == 1
