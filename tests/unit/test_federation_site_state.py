"""A zone's word on its own view of its site (`site/<site>` on ZoneToGlobal): what the
zone publishes while its source is out of sync, and what the global accepts of it."""

from __future__ import annotations

import json

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.federation.objects import (
    ObjectError,
    received_site_state,
    site_object,
    stale_site,
    version_of,
)
from kontinuum.federation.publisher import Publisher
from kontinuum.federation.v1.federation_pb2 import SiteService

SINCE = 1_790_000_000.25


def test_the_state_says_the_site_stale_since_when_as_the_global_sends_zones() -> None:
    state = stale_site("edge-paris", SINCE)
    assert state.name == "site/edge-paris"
    assert json.loads(state.message.snapshot_json) == {
        "cluster": "edge-paris", "services": [], "endpoints": [], "exports": [], "stale": True,
    }  # fmt: skip
    assert stale_site("edge-paris", SINCE).version == state.version  # content is the version
    received = received_site_state("edge-paris", state.name, state.version, state.message)
    assert received.stale_since == pytest.approx(SINCE)


@pytest.mark.parametrize(
    ("site", "name", "change", "why"),
    [
        ("lyon", "site/edge-paris", None, "its own site only"),
        ("edge-paris", "site/edge-paris", "version", "SHA-256"),
        ("edge-paris", "site/edge-paris", "fresh", "only while stale"),
        ("edge-paris", "site/edge-paris", "service", "names no service"),
        ("edge-paris", "site/edge-paris", "json", "not a site's snapshot JSON"),
    ],
)
def test_a_state_not_the_zones_own_stale_one_is_refused(
    site: str, name: str, change: str | None, why: str
) -> None:
    message = SiteService()
    message.CopyFrom(stale_site("edge-paris", SINCE).message)
    if change == "fresh":
        message.ClearField("stale_since")
    elif change == "service":
        message.name = "hello"
    elif change == "json":
        message.snapshot_json = b"{}"
    version = "0" * 64 if change == "version" else version_of(message)
    with pytest.raises(ObjectError, match=why):
        received_site_state(site, name, version, message)


def test_the_publisher_sends_the_state_with_the_objects_and_its_removal_once_in_sync() -> None:
    service = site_object({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello", "namespace": "demo"},
    })  # fmt: skip
    state = stale_site("edge-paris", SINCE)
    publisher = Publisher()
    publisher.publish([service, state])
    publisher.connect({service.name: service.version})
    response = publisher.response()
    assert response is not None
    assert [(r.name, r.resource.type_url) for r in response.resources] == [
        ("site/edge-paris", "type.googleapis.com/kontinuum.federation.v1.SiteService")
    ]
    publisher.answer(discovery_pb2.DeltaDiscoveryRequest(response_nonce=response.nonce))
    publisher.publish([service])
    removal = publisher.response()
    assert removal is not None
    assert (list(removal.removed_resources), len(removal.resources)) == (["site/edge-paris"], 0)
