"""Where a cluster's objects come from: ClusterProfile annotations read into `access`."""

from __future__ import annotations

import pytest

from kontinuum.control.fleet import parse_fleet_objects
from kontinuum.control.model import (
    DnsAccess,
    DnsService,
    KubernetesAccess,
    SiteAccess,
    ZoneAccess,
)
from kontinuum.control.objects import Document
from kontinuum.control.site_access import dns_site


def access(**annotations: str) -> tuple[SiteAccess | None, list[str]]:
    body = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {
            "name": "eu",
            "namespace": "fleet",
            "annotations": {
                f"kontinuum.io/{k.replace('_', '-')}": v for k, v in annotations.items()
            },
        },
    }
    sites, errors = parse_fleet_objects([Document("clusters.yaml", body)])
    return (sites[0].access if sites else None), [str(e) for e in errors]


def test_no_source_means_the_fleet_files() -> None:
    assert access() == (None, [])


def test_a_kubernetes_cluster() -> None:
    found = access(source="kubernetes", kubeconfig="/etc/k/eu.yaml", context="eu-admin")
    assert found == (KubernetesAccess("/etc/k/eu.yaml", "eu-admin"), [])
    assert access(source="kubernetes", in_cluster="true") == (KubernetesAccess(in_cluster=True), [])


def test_how_long_a_lost_cluster_keeps_its_endpoints() -> None:
    assert access(source="kubernetes")[0] == KubernetesAccess(stale_after=300.0)
    assert access(source="kubernetes", stale_after="5m") == (KubernetesAccess(stale_after=300), [])
    assert access(source="kubernetes", stale_after="90s")[0] == KubernetesAccess(stale_after=90)


def test_a_zone_site() -> None:
    assert access(source="zone") == (ZoneAccess(stale_after=300.0), [])
    assert access(source="zone", stale_after="2m") == (ZoneAccess(stale_after=120.0), [])
    assert access(source="zone", stale_after="never")[1] == [
        "clusters.yaml: ClusterProfile eu: metadata.annotations[kontinuum.io/stale-after]: "
        "must be a duration above zero such as 300s or 5m, got 'never'"
    ]


def test_a_dns_site() -> None:
    found = access(
        source="dns",
        dns_domain="edge.example.net.",
        dns_server="127.0.0.1:5353",
        dns_services="demo/hello:http, demo/hello:dns/UDP",
    )
    services = (DnsService("demo", "hello", "http"), DnsService("demo", "hello", "dns", "UDP"))
    assert found == (DnsAccess("edge.example.net", "127.0.0.1:5353", services), [])


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ({"source": "ftp"}, 'must be "kubernetes", "dns" or "zone", got \'ftp\''),
        ({"source": "kubernetes", "in_cluster": "yes"}, '"true" or "false"'),
        ({"source": "kubernetes", "stale_after": "soon"}, "above zero such as 300s or 5m"),
        ({"source": "kubernetes", "stale_after": "0s"}, "got '0s'"),
        ({"source": "dns", "dns_services": "demo/a:http"}, "dns-domain]: required"),
        (
            {"source": "dns", "dns_domain": "x.net", "dns_services": "hello"},
            "'hello' is not <namespace>/<name>:<port>[/<protocol>]",
        ),
        (
            {
                "source": "dns",
                "dns_domain": "x.net",
                "dns_server": "nowhere",
                "dns_services": "a/b:c",
            },
            "must be HOST:PORT",
        ),
        (
            {"source": "dns", "dns_domain": "x.net", "dns_services": "a/b:c/HTTP"},
            "protocol must be",
        ),
    ],
)
def test_bad_annotations_name_the_field(annotations: dict[str, str], problem: str) -> None:
    _, errors = access(**annotations)
    assert any(problem in e for e in errors), errors
    assert all("clusters.yaml: ClusterProfile" in e for e in errors)


def test_a_zones_dns_flags_read_as_the_annotations_of_the_same_names() -> None:
    found, problems = dns_site("edge.example.net.", "10.20.0.53:53", "demo/hello:http, x/y:dns/UDP")
    assert problems == []
    assert found == DnsAccess(
        "edge.example.net",
        "10.20.0.53:53",
        (DnsService("demo", "hello", "http"), DnsService("x", "y", "dns", "UDP")),
    )
    found, problems = dns_site("edge.example.net", "nowhere", "demo/hello")
    assert found is None
    assert problems == [
        "dns-server: must be HOST:PORT, got 'nowhere'",
        "dns-services: 'demo/hello' is not <namespace>/<name>:<port>[/<protocol>]",
        "dns-services: must name at least one service port",
    ]
