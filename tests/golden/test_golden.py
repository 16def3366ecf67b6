"""Golden tests of the translator (the way Envoy Gateway tests `internal/xds/translator`).

Each `<case>.in.yaml` describes services, a view, its site and options (`SidecarOptions`'
fields; `mtls: {trust_domain: ...}` for workload mTLS), and optionally `gateway_api`:
Gateway API objects (routes, ReferenceGrants, LocalityPolicies) as the fleet files hold
them. An endpoint with `mutual_tls: true` requires mTLS. The translation is written as
`<case>.out.yaml` (every resource through `MessageToDict`, with its `@type`, and the routes'
status conditions) and compared exactly.
`pytest tests/golden --update-golden` rewrites the outputs and deletes
outputs whose input is gone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import any_pb2, json_format

from kontinuum.control.gateway_api import parse_routing
from kontinuum.control.grants import parse_grants
from kontinuum.control.model import ClusterSite, ServiceRef
from kontinuum.control.objects import Document
from kontinuum.control.plane import (
    Locality,
    PlaneEndpoint,
    PlanePort,
    PlaneService,
    ProxyView,
    ServicePlane,
)
from kontinuum.control.route_binding import RouteBinding, bind_routes
from kontinuum.control.routing_state import mesh_routing
from kontinuum.control.translate import (
    OutlierDetection,
    SidecarOptions,
    Translation,
    translate_sidecar,
)
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.control.translate.gateways import east_west_gateway, ingress_gateway
from kontinuum.control.translate.networks import NetworkGateway, Networks
from kontinuum.control.translate.options import WorkloadTls

HERE = Path(__file__).parent
CASES = sorted(p.name.removesuffix(".in.yaml") for p in HERE.glob("*.in.yaml"))


def _endpoint(raw: dict[str, Any]) -> PlaneEndpoint:
    locality = Locality(
        raw["cluster"], raw.get("region", ""), raw.get("zone", ""), raw.get("network", "")
    )
    return PlaneEndpoint(
        raw["address"],
        raw["port"],
        locality,
        raw.get("ready", True),
        mutual_tls=raw.get("mutual_tls", False),
    )


def _port(raw: dict[str, Any]) -> PlanePort:
    return PlanePort(
        port=raw["port"],
        name=raw.get("name", ""),
        protocol=raw.get("protocol", "TCP"),
        app_protocol=raw.get("app_protocol"),
        endpoints=tuple(_endpoint(e) for e in raw.get("endpoints", ())),
    )


def _service(raw: dict[str, Any]) -> PlaneService:
    return PlaneService(
        namespace=raw["namespace"],
        name=raw["name"],
        workspace=raw.get("workspace", raw["namespace"]),
        ports=tuple(_port(p) for p in raw.get("ports", ())),
        scope=raw.get("scope", ""),
    )


def _options(raw: dict[str, Any]) -> SidecarOptions:
    inbound = raw.get("inbound_service")
    outlier = raw.get("outlier_detection", {})
    mtls = raw.get("mtls")
    return SidecarOptions(
        outbound_port=raw.get("outbound_port", 15001),
        connect_timeout=timedelta(seconds=raw.get("connect_timeout_s", 1)),
        outlier_detection=None if outlier is None else OutlierDetection(**outlier),
        api_listeners=raw.get("api_listeners", True),
        inbound_service=(
            None
            if inbound is None
            else (ServiceRef(inbound["namespace"], inbound["name"]), inbound["port"])
        ),
        inbound_port=raw.get("inbound_port"),
        inbound_listen_port=raw.get("inbound_listen_port", 15006),
        inbound_listen_address=raw.get("inbound_listen_address", "127.0.0.1"),
        mtls=None if mtls is None else WorkloadTls(**mtls),
        inbound_consumers=tuple(raw.get("inbound_consumers", ())),
        inbound_principals=tuple(raw.get("inbound_principals", ())),
    )


Case = tuple[list[PlaneService], ProxyView, ClusterSite | None, SidecarOptions, MeshRouting]


def _routing(
    raw: list[dict[str, Any]], services: list[PlaneService], site: ClusterSite | None
) -> tuple[MeshRouting, RouteBinding]:
    docs = [Document("gateway-api.yaml", body, i) for i, body in enumerate(raw, start=1)]
    config, errors = parse_routing(docs)
    grants, grant_errors = parse_grants(docs)
    assert errors + grant_errors == [], errors + grant_errors
    sites = tuple({e.locality.cluster for s in services for p in s.ports for e in p.endpoints})
    plane = ServicePlane(
        sites=tuple(
            site if site is not None and site.name == name else ClusterSite(name)
            for name in sorted(set(sites) | ({site.name} if site else set()))
        ),
        services=tuple(services),
        grants=grants,
    )
    binding = bind_routes(config, plane, grants)
    return mesh_routing(binding), binding


def _networks(raw: dict[str, Any]) -> Networks:
    gateways = {g["cluster"]: NetworkGateway(**g) for g in raw.get("gateways", ())}
    return Networks(raw.get("clusters", {}), gateways)


def load_case(path: Path) -> tuple[Case, RouteBinding | None]:
    raw = yaml.safe_load(path.read_text())
    site_raw = raw.get("site")
    site = None if site_raw is None else ClusterSite(**site_raw)
    services = [_service(s) for s in raw.get("services", ())]
    routing, binding = MeshRouting(), None
    if raw.get("gateway_api"):
        routing, binding = _routing(raw["gateway_api"], services, site)
    if raw.get("networks"):
        routing = replace(routing, networks=_networks(raw["networks"]))
    case = (
        services,
        ProxyView(**raw["view"]),
        site,
        _options(raw.get("options") or {}),
        routing,
    )
    return case, binding


def translate_case(name: str) -> tuple[Translation, RouteBinding | None]:
    """A sidecar view, or with `role: gateway` / `role: ingress` in the case, a gateway's."""
    return translate_path(HERE / f"{name}.in.yaml")


def translate_path(path: Path) -> tuple[Translation, RouteBinding | None]:
    """`translate_case` of a case file anywhere."""
    case, binding = load_case(path)
    services, view, site, options, routing = case
    if view.role == "gateway":
        (gateway,) = routing.networks.gateways.values()
        return east_west_gateway(services, gateway, options), binding
    if view.role == "ingress":
        assert binding is not None
        (bound,) = binding.gateways
        return ingress_gateway(bound, binding.routes, view, site, options, routing), binding
    return translate_sidecar(*case), binding


def _statuses(binding: RouteBinding) -> list[dict[str, Any]]:
    return [
        {
            "route": f"{status.kind} {status.namespace}/{status.name}",
            "parents": {
                str(parent.ref): [
                    f"{c.type}={c.status} {c.reason}: {c.message}" for c in parent.conditions
                ]
                for parent in status.parents
            },
        }
        for status in binding.statuses
    ]


def to_yaml(translation: Translation, binding: RouteBinding | None = None) -> str:
    resources = []
    for message in translation.resources:
        packed = any_pb2.Any()
        packed.Pack(message)
        # Through JSON text: plain dicts and lists, whatever containers protobuf returns.
        text = json_format.MessageToJson(packed, preserving_proto_field_name=True)
        resources.append(json.loads(text))
    document: dict[str, Any] = {"errors": list(translation.errors), "resources": resources}
    if binding is not None:
        document["route_statuses"] = _statuses(binding)
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, width=100)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool) -> None:
    actual = to_yaml(*translate_case(case))
    out = HERE / f"{case}.out.yaml"
    if update_golden:
        out.write_text(actual)
        return
    assert out.exists(), f"{out.name} is missing: run pytest tests/golden --update-golden"
    assert actual == out.read_text(), f"{case}: run pytest tests/golden --update-golden, review"


def test_no_orphaned_outputs(update_golden: bool) -> None:
    orphans = [p for p in HERE.glob("*.out.yaml") if p.name.removesuffix(".out.yaml") not in CASES]
    if update_golden:
        for orphan in orphans:
            orphan.unlink()
        return
    assert not orphans, f"outputs without input (run --update-golden): {orphans}"


def test_translation_is_deterministic() -> None:
    for case in CASES:
        (services, view, site, options, routing), _ = load_case(HERE / f"{case}.in.yaml")
        if view.role != "sidecar":
            continue
        first = translate_sidecar(services, view, site, options, routing)
        again = translate_sidecar(list(reversed(services)), view, site, options, routing)
        assert [m.SerializeToString(deterministic=True) for m in first.resources] == [
            m.SerializeToString(deterministic=True) for m in again.resources
        ], case
