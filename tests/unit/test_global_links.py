"""The global replicas a zone dials (`kontinuum.federation.global_links`): `--global` read
as several HOST:PORT, a name counting as one replica per address, and the site's objects
published to each link, each sending only what differs from what its replica holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.federation.global_links import (
    Links,
    global_entries,
    resolve,
)
from kontinuum.federation.objects import SiteObject, site_object


def test_global_names_several_replicas_comma_separated_each_once() -> None:
    assert global_entries("a.example:18002, 10.0.0.2:18002,[::1]:18002,a.example:18002") == [
        ("a.example", 18002),
        ("10.0.0.2", 18002),
        ("::1", 18002),
    ]
    for wrong in ("a.example", "a.example:0", "a.example:x", ":18002", "a:1,"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            global_entries(wrong)


def test_an_address_is_one_replica_and_a_name_one_per_address() -> None:
    targets, problems = resolve([("127.0.0.1", 18002), ("::1", 18003)])
    assert problems == []
    assert [(t.target, t.server_name) for t in targets] == [
        ("ipv4:127.0.0.1:18002", ""),
        ("ipv6:[::1]:18003", ""),
    ]
    addresses = {
        str(info[4][0]) for info in socket.getaddrinfo("localhost", 1, type=socket.SOCK_STREAM)
    }
    targets, problems = resolve([("localhost", 18002)])
    assert problems == []
    assert len(targets) == len(addresses)
    # each address's certificate is checked against the name, not the address
    assert {t.server_name for t in targets} == {"localhost"}
    assert {t.shown for t in targets} == {f"localhost:18002 ({a})" for a in addresses}
    targets, _ = resolve([("localhost", 18002)], server_name="global.example.net")
    assert {t.server_name for t in targets} == {"global.example.net"}


def test_a_name_that_cannot_be_looked_up_is_said() -> None:
    targets, problems = resolve([("no-such-host.invalid", 18002), ("127.0.0.1", 18002)])
    assert [t.target for t in targets] == ["ipv4:127.0.0.1:18002"]
    assert len(problems) == 1
    assert problems[0].startswith("cannot look up no-such-host.invalid")


def hello(port: int) -> SiteObject:
    return site_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": "demo"},
            "spec": {"ports": [{"name": "http", "port": port}]},
        }
    )


def test_each_link_sends_what_its_replica_lacks() -> None:
    links = Links()
    first, second = links.link("a"), links.link("b")
    links.publish([hello(80)])
    assert first.wake.is_set()
    assert second.wake.is_set()
    assert not links.connected
    first.publisher.connect({})
    held = hello(80)
    second.publisher.connect({held.name: held.version})
    assert links.connected
    assert links.connected_links() == 2
    assert links.pending() == 1  # the first replica lacks it
    sent = first.publisher.response()
    assert sent is not None
    assert [r.name for r in sent.resources] == ["Service/demo/hello"]
    empty = second.publisher.response()
    assert empty is not None
    assert list(empty.resources) == []
    first.publisher.answer(discovery_pb2.DeltaDiscoveryRequest(response_nonce=sent.nonce))
    assert links.stats.objects_sent == 1
    assert links.stats.acks == 1
    links.drop("b")
    assert len(links) == 1
    assert not links.is_up("b")


def default_ids(**env: str) -> set[str]:
    """The default replica ids of two processes started with `env` (and no POD_NAME but
    the one given)."""
    code = "from kontinuum.federation.global_links import default_replica_id as d; print(d())"
    environment = {k: v for k, v in os.environ.items() if k != "POD_NAME"} | env
    return {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env=environment,
        ).stdout.strip()
        for _ in range(2)
    }


def test_a_zone_replica_restarted_on_its_host_keeps_its_default_id() -> None:
    # Two processes on one host (a container restarted in its pod): one id, the host name.
    assert default_ids() == {socket.gethostname()}


def test_a_zone_replica_s_default_id_is_its_pod_name_when_given() -> None:
    # With hostNetwork the host name is the node's: POD_NAME (the downward API) tells pods
    # apart, and a container restarted in its pod keeps it.
    assert default_ids(POD_NAME="zone-edge-paris-7f9c") == {"zone-edge-paris-7f9c"}
    assert default_ids(POD_NAME="") == {socket.gethostname()}
