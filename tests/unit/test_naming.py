"""Generated Envoy cluster names parse back into their parts, and nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kontinuum.control.naming import ClusterName, parse_cluster_name

labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")


@given(
    direction=st.sampled_from(["inbound", "outbound"]),
    service=labels,
    namespace=labels,
    port=st.integers(1, 65535),
    target=st.one_of(st.just(""), labels),
)
def test_every_generated_name_parses_back(
    direction: str, service: str, namespace: str, port: int, target: str
) -> None:
    name = ClusterName(direction, service, namespace, port, target)  # type: ignore[arg-type]
    assert parse_cluster_name(str(name)) == name


def test_the_documented_shape() -> None:
    name = ClusterName("outbound", "hello", "demo", 8080, "eu-central")
    assert str(name) == "outbound|8080|eu-central|hello.demo.svc.clusterset.local"
    assert name.host == "hello.demo.svc.clusterset.local"
    assert str(ClusterName("inbound", "hello", "demo", 80)) == (
        "inbound|80||hello.demo.svc.cluster.local"
    )


@pytest.mark.parametrize(
    "name",
    [
        "kontinuum-xds",
        "outbound|0||hello.demo.svc.clusterset.local",
        "outbound|70000||hello.demo.svc.clusterset.local",
        "outbound|80||hello.demo.svc.cluster.local",
        "inbound|80||hello.demo.svc.clusterset.local",
        "outbound|80||Hello.demo.svc.clusterset.local",
        "outbound|80|eu_central|hello.demo.svc.clusterset.local",
        "outbound|80||hello.svc.clusterset.local",
    ],
)
def test_foreign_names_are_not_parsed(name: str) -> None:
    assert parse_cluster_name(name) is None
