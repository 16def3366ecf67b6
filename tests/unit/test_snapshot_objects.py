"""A site's snapshot as the standard objects a zone publishes
(`kontinuum.federation.snapshot_objects`): read back as fleet files are, they give the
snapshot's services, endpoints and exports again."""

from __future__ import annotations

from kontinuum.control.fleet import assemble_cluster, read_cluster_documents
from kontinuum.control.model import DnsService, Endpoint, EndpointPort, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.dns import SrvRecord, site_snapshot
from kontinuum.federation.objects import site_object
from kontinuum.federation.snapshot_objects import snapshot_bodies


def read_back(snapshot: SiteSnapshot) -> SiteSnapshot:
    documents = [Document("zone", body, i + 1) for i, body in enumerate(snapshot_bodies(snapshot))]
    objects = read_cluster_documents(snapshot.cluster, documents)
    assert [e for o in objects for e in o.errors] == []
    again, errors = assemble_cluster(snapshot.cluster, objects)
    assert errors == []
    return again


def test_a_dns_sites_snapshot_reads_back_the_same() -> None:
    services = (
        DnsService("demo", "hello", "http"),
        DnsService("demo", "hello", "grpc"),
        DnsService("infra", "resolver", "dns", "UDP"),
    )
    snapshot, _ = site_snapshot(
        "edge-lyon",
        "edge.example.net",
        services,
        {
            "_http._tcp.hello.edge.example.net": (
                SrvRecord(0, 10, 8080, "vm-1.hello.edge.example.net"),
                SrvRecord(0, 10, 8081, "vm-2.hello.edge.example.net"),
            ),
            "_grpc._tcp.hello.edge.example.net": (
                SrvRecord(0, 10, 9090, "vm-1.hello.edge.example.net"),
            ),
            "_dns._udp.resolver.edge.example.net": (SrvRecord(0, 0, 53, "ns.edge.example.net"),),
        },
        {
            "vm-1.hello.edge.example.net": ("10.20.1.11", "2001:db8:20::11"),
            "vm-2.hello.edge.example.net": ("10.20.1.12",),
            "ns.edge.example.net": ("10.20.0.53",),
        },
    )
    again = read_back(snapshot)
    assert again.services == snapshot.services
    assert sorted(again.endpoints, key=repr) == sorted(snapshot.endpoints, key=repr)
    assert again.exports == snapshot.exports
    names = [site_object(body).name for body in snapshot_bodies(snapshot)]
    assert names == [
        "Service/demo/hello",
        "Service/infra/resolver",
        "EndpointSlice/demo/hello-grpc-9090-ipv4",
        "EndpointSlice/demo/hello-http-8080-ipv4",
        "EndpointSlice/demo/hello-http-8081-ipv4",
        "EndpointSlice/demo/hello-grpc-9090-ipv6",
        "EndpointSlice/demo/hello-http-8080-ipv6",
        "EndpointSlice/infra/resolver-dns-53-ipv4",
        "ServiceExport/demo/hello",
        "ServiceExport/infra/resolver",
    ]
    assert snapshot_bodies(snapshot) == snapshot_bodies(snapshot)  # stable: equal versions


def test_more_endpoints_than_a_slice_holds_go_in_several() -> None:
    port = (EndpointPort(8080, "http"),)
    endpoints = tuple(
        Endpoint("edge", "demo", "hello", (f"10.0.{i // 250}.{i % 250 + 1}",), port)
        for i in range(1500)
    )
    names = [
        body["metadata"]["name"]
        for body in snapshot_bodies(SiteSnapshot("edge", endpoints=endpoints))
    ]
    assert names == ["hello-http-8080-ipv4", "hello-http-8080-ipv4-2"]
