"""HTTPS listeners: their `tls` parsed as the CRDs say, Secrets read and checked, and each
listener's certificate refs resolved with the conditions of the Gateway API."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
import yaml
from envoy.config.core.v3 import base_pb2

from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.gateway_api import parse_routing
from kontinuum.control.gateway_certificates import secrets_by_site
from kontinuum.control.grants import parse_grants
from kontinuum.control.model import Fleet, Grant
from kontinuum.control.objects import Document
from kontinuum.control.route_binding import RouteBinding, bind_routes
from kontinuum.control.routing import CertificateRef, TlsSecret
from kontinuum.control.routing_state import RoutingState
from kontinuum.mesh import Mesh
from kontinuum.xds import Peer, SnapshotCache
from kontinuum.xds.types import SECRET
from tests.support.fleet import cluster_profile, load_into
from tests.support.server_certs import TestCa, tls_secret
from tests.unit.test_route_binding import PLANE, gateway_route, summary

CA = TestCa()
WWW = CA.issue("www.example.com")
OTHER = CA.issue("other.example.com")

HTTPS_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: demo
  labels: {kontinuum.io/cluster: eu}
spec:
  gatewayClassName: kontinuum
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: www.example.com
    tls: {certificateRefs: [{name: www}]}
"""


def docs(*texts: str) -> list[Document]:
    bodies = yaml.safe_load_all("\n---\n".join(texts))
    return [Document("fleet.yaml", body, i) for i, body in enumerate(bodies, start=1)]


def errors_of(*texts: str) -> list[str]:
    _, errors = parse_routing(docs(*texts))
    return [str(e) for e in errors]


def secret_of(text: str) -> TlsSecret:
    config, errors = parse_routing(docs(text))
    assert errors == []
    (secret,) = config.secrets
    return secret


def bind(*texts: str, grants: tuple[Grant, ...] = ()) -> RouteBinding:
    config, errors = parse_routing(docs(*texts))
    assert errors == []
    return bind_routes(config, PLANE, grants)


def listener(binding: RouteBinding, name: str = "https") -> dict[str, tuple[str, str, str]]:
    (status,) = binding.gateway_statuses
    (found,) = [li for li in status.listeners if li.name == name]
    return summary(found.conditions)


# --- Secrets ---------------------------------------------------------------------------------


def test_a_tls_secret_is_read_from_data_or_string_data() -> None:
    secret = secret_of(tls_secret("demo", "www", WWW.certificate, WWW.key))
    assert (secret.namespace, secret.name, secret.problem) == ("demo", "www", "")
    assert (secret.certificate, secret.key) == (WWW.certificate, WWW.key)
    assert WWW.key.decode()[40:80] not in repr(secret)
    text = f"""apiVersion: v1
kind: Secret
metadata: {{name: www, namespace: demo}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{textwrap.indent(WWW.certificate.decode(), "    ")}
  tls.key: |
{textwrap.indent(WWW.key.decode(), "    ")}
"""
    from_strings = secret_of(text)
    assert from_strings.problem == ""
    assert from_strings.certificate.strip() == WWW.certificate.strip()


@pytest.mark.parametrize(
    ("certificate", "key", "secret_type", "problem"),
    [
        (
            WWW.certificate,
            OTHER.key,
            "kubernetes.io/tls",
            "tls.key does not belong to the first certificate of tls.crt",
        ),
        (
            b"not a certificate",
            WWW.key,
            "kubernetes.io/tls",
            "tls.crt is not a PEM certificate chain",
        ),
        (
            WWW.certificate,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "kubernetes.io/tls",
            "tls.key is not an unencrypted PEM private key",
        ),
        (WWW.certificate, WWW.key, "Opaque", "its type is Opaque, not kubernetes.io/tls"),
        (WWW.certificate, b"", "kubernetes.io/tls", "it has no tls.key"),
    ],
)
def test_a_secret_that_cannot_serve_says_why_without_its_data(
    certificate: bytes, key: bytes, secret_type: str, problem: str
) -> None:
    text = tls_secret("demo", "www", certificate, key).replace("kubernetes.io/tls", secret_type)
    if not key:
        text = "\n".join(line for line in text.splitlines() if "tls.key" not in line)
    secret = secret_of(text)
    assert secret.problem == problem
    binding = bind(HTTPS_GATEWAY, text)
    assert listener(binding)["ResolvedRefs"] == (
        "False",
        "InvalidCertificateRef",
        f"Secret demo/www cannot serve TLS: {problem}",
    )


def test_a_secret_that_is_not_base64_is_an_error_that_does_not_show_it() -> None:
    text = tls_secret("demo", "www", WWW.certificate, WWW.key)
    text = text.replace("tls.key: ", "tls.key: '%%%SECRET")
    text = text.rstrip("\n") + "'\n"
    assert errors_of(text) == [
        "fleet.yaml: Secret demo/www: data[tls.key]: must be base64 (the value is not shown)"
    ]


# --- listener tls, as the CRDs validate it ---------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "    tls: {certificateRefs: [{name: www}]}\n",
            "",
            "spec.listeners[0].tls: required for protocol HTTPS (its certificateRefs)",
        ),
        (
            "tls: {certificateRefs: [{name: www}]}",
            "tls: {mode: Passthrough, certificateRefs: [{name: www}]}",
            "spec.listeners[0].tls.mode: must be Terminate for protocol HTTPS",
        ),
        (
            "tls: {certificateRefs: [{name: www}]}",
            "tls: {mode: Terminate}",
            "spec.listeners[0].tls: certificateRefs or options must be set for mode Terminate",
        ),
        (
            "tls: {certificateRefs: [{name: www}]}",
            "tls: {mode: Reencrypt, certificateRefs: [{name: www}]}",
            "spec.listeners[0].tls.mode: must be one of Terminate, Passthrough, got 'Reencrypt'",
        ),
    ],
)
def test_listener_tls_rules(old: str, new: str, message: str) -> None:
    text = HTTPS_GATEWAY.replace(old, new)
    assert text != HTTPS_GATEWAY
    assert errors_of(text) == [f"fleet.yaml: Gateway demo/ingress: {message}"]


def test_certificate_refs_default_to_secrets_of_the_gateway_namespace() -> None:
    text = HTTPS_GATEWAY.replace(
        "[{name: www}]", '[{name: www}, {group: "", kind: Secret, name: b, namespace: certs}]'
    )
    config, errors = parse_routing(docs(text))
    assert errors == []
    (https,) = config.gateways[0].listeners
    assert (https.tls_mode, https.certificate_refs) == (
        "Terminate",
        (CertificateRef("demo", "www"), CertificateRef("certs", "b")),
    )


# --- resolution and status -------------------------------------------------------------------


def test_a_listener_with_its_secret_is_programmed_with_it() -> None:
    binding = bind(
        HTTPS_GATEWAY, tls_secret("demo", "www", WWW.certificate, WWW.key), gateway_route()
    )
    assert listener(binding) == {
        "Accepted": ("True", "Accepted", ""),
        "ResolvedRefs": ("True", "ResolvedRefs", ""),
        "Programmed": ("True", "Programmed", ""),
        "Conflicted": ("False", "NoConflicts", ""),
    }
    (bound,) = binding.gateways
    (https,) = bound.listeners
    assert [s.name for s in bound.certificates_of(https)] == ["www"]


def test_a_missing_secret_leaves_the_listener_unprogrammed() -> None:
    binding = bind(HTTPS_GATEWAY, gateway_route())
    assert listener(binding) == {
        "Accepted": ("True", "Accepted", ""),
        "ResolvedRefs": ("False", "InvalidCertificateRef", "no Secret demo/www"),
        "Programmed": ("False", "Invalid", "its certificates cannot be used (see ResolvedRefs)"),
        "Conflicted": ("False", "NoConflicts", ""),
    }
    (status,) = binding.gateway_statuses
    assert summary(status.conditions) == {
        "Accepted": ("True", "Accepted", ""),
        "Programmed": ("False", "Invalid", "no listener is programmed"),
    }
    (bound,) = binding.gateways
    assert bound.listeners == ()


def test_a_reference_that_is_not_a_secret_is_an_invalid_certificate_ref() -> None:
    text = HTTPS_GATEWAY.replace("{name: www}", "{kind: ConfigMap, name: www}")
    binding = bind(text, tls_secret("demo", "www", WWW.certificate, WWW.key))
    assert listener(binding)["ResolvedRefs"] == (
        "False",
        "InvalidCertificateRef",
        'ConfigMap demo/www: a certificate is a Secret (group "") only',
    )


GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-of-demo, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: demo}]
  to: [{group: "", kind: Secret, name: www}]
"""


def test_a_secret_of_another_namespace_needs_a_reference_grant() -> None:
    cross = HTTPS_GATEWAY.replace("{name: www}", "{name: www, namespace: certs}")
    secret = tls_secret("certs", "www", WWW.certificate, WWW.key)
    refused = bind(cross, secret)
    assert listener(refused)["ResolvedRefs"] == (
        "False",
        "RefNotPermitted",
        "Secret certs/www is in another namespace and no ReferenceGrant of certs allows "
        "Gateways of demo to name it",
    )
    grants, errors = parse_grants(docs(GRANT))
    assert errors == []
    assert grants == (Grant("certs", "demo", "www", "Gateway", "Secret"),)
    assert listener(bind(cross, secret, grants=grants))["ResolvedRefs"] == (
        "True",
        "ResolvedRefs",
        "",
    )
    # A grant of another Secret, or to routes, allows nothing here.
    other, _ = parse_grants(docs(GRANT.replace("name: www", "name: api")))
    assert listener(bind(cross, secret, grants=other))["ResolvedRefs"][1] == "RefNotPermitted"
    routes, _ = parse_grants(docs(GRANT.replace("kind: Gateway", "kind: HTTPRoute")))
    assert listener(bind(cross, secret, grants=routes))["ResolvedRefs"][1] == "RefNotPermitted"
    # Granted, a missing Secret is an invalid reference.
    assert listener(bind(cross, grants=grants))["ResolvedRefs"] == (
        "False",
        "InvalidCertificateRef",
        "no Secret certs/www",
    )


def test_a_namespace_grant_cannot_open_secrets() -> None:
    text = GRANT.replace(
        "{group: gateway.networking.k8s.io, kind: Gateway", '{group: "", kind: Namespace'
    )
    _, errors = parse_grants(docs(text))
    assert [str(e) for e in errors] == [
        "fleet.yaml: ReferenceGrant certs/gateways-of-demo: spec.to[0].kind: a Secret can be "
        "granted to Gateways only (from Gateway): a Namespace grant opens Services"
    ]


def test_listeners_of_one_port_share_a_protocol() -> None:
    text = HTTPS_GATEWAY + "  - {name: plain, port: 443, protocol: HTTP}\n"
    binding = bind(text, tls_secret("demo", "www", WWW.certificate, WWW.key))
    plain = listener(binding, "plain")
    message = "port 443 is HTTPS for an earlier listener: listeners of one port share a protocol"
    assert plain["Conflicted"] == ("True", "ProtocolConflict", message)
    assert plain["Accepted"] == ("False", "ProtocolConflict", message)
    assert listener(binding)["Programmed"] == ("True", "Programmed", "")
    (bound,) = binding.gateways
    assert [li.name for li in bound.listeners] == ["https"]


def test_a_tls_listener_stays_unsupported() -> None:
    text = HTTPS_GATEWAY.replace("protocol: HTTPS", "protocol: TLS").replace(
        "tls: {", "tls: {mode: Passthrough, "
    )
    assert listener(bind(text))["Accepted"] == (
        "False",
        "UnsupportedProtocol",
        "kontinuum serves HTTP and HTTPS listeners only, not TLS (TLS passthrough to TLSRoutes)",
    )


def test_no_key_material_in_any_status() -> None:
    text = tls_secret("demo", "www", WWW.certificate, OTHER.key)
    binding = bind(HTTPS_GATEWAY, text)
    rendered = repr(binding.gateway_statuses) + repr(binding.gateways)
    body = base64.b64encode(OTHER.key).decode()
    assert OTHER.key.decode().splitlines()[1][:40] not in rendered
    assert body[:40] not in rendered


# --- in the mesh: a renewed Secret reaches the gateways that serve it, as SDS alone ----------


def _https_gateway(name: str, secret: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: demo
  labels: {{kontinuum.io/cluster: eu}}
spec:
  gatewayClassName: kontinuum
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: {secret}}}]}}
"""


def _ingress_node(gateway: str) -> base_pb2.Node:
    result = base_pb2.Node(id=gateway, cluster="eu")
    result.metadata.update(proxy_metadata(namespace="demo", role="ingress", gateway=gateway))
    return result


def test_a_renewed_secret_changes_only_the_secret_of_the_gateways_that_serve_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "clusters" / "eu").mkdir(parents=True)
    (tmp_path / "clusters.yaml").write_text(cluster_profile("eu", "eu-central-1"))
    (tmp_path / "gateways.yaml").write_text(
        _https_gateway("front-a", "a") + "---\n" + _https_gateway("front-b", "b")
    )
    (tmp_path / "a.yaml").write_text(tls_secret("demo", "a", WWW.certificate, WWW.key))
    (tmp_path / "b.yaml").write_text(tls_secret("demo", "b", OTHER.certificate, OTHER.key))
    mesh = Mesh(SnapshotCache())
    load_into(mesh, tmp_path)
    view_a = mesh.resolve_view(_ingress_node("front-a"), Peer(address="test"))
    view_b = mesh.resolve_view(_ingress_node("front-b"), Peer(address="test"))
    before_a, before_b = mesh.cache.snapshot(view_a), mesh.cache.snapshot(view_b)
    assert before_a is not None
    assert set(before_a.resources(SECRET)) == {"kubernetes-gateway://demo/a"}

    renewed = CA.issue("www.example.com")
    (tmp_path / "a.yaml").write_text(tls_secret("demo", "a", renewed.certificate, renewed.key))
    load_into(mesh, tmp_path)
    after_a = mesh.cache.snapshot(view_a)
    assert after_a is not None
    assert after_a.changes_from(before_a) == {SECRET: frozenset({"kubernetes-gateway://demo/a"})}
    assert mesh.cache.snapshot(view_b) is before_b  # not even translated again


def test_a_secret_that_turns_bad_keeps_its_last_good_version_serving() -> None:
    state = RoutingState()
    good = tls_secret("demo", "www", WWW.certificate, WWW.key)
    plane = PLANE

    def update(*texts: str) -> RouteBinding:
        routing, errors = parse_routing(docs(*texts))
        assert errors == []
        state.update(Fleet(sites=plane.sites, routing=routing), plane)
        return state.binding

    first = update(HTTPS_GATEWAY, good)
    (bound,) = first.gateways
    (served,) = bound.certificates_of(bound.listeners[0])
    # Renewed with the key of another certificate: the last good one keeps serving.
    mismatched = update(HTTPS_GATEWAY, tls_secret("demo", "www", WWW.certificate, OTHER.key))
    (bound,) = mismatched.gateways
    assert bound.certificates_of(bound.listeners[0]) == (served,)
    assert listener(mismatched)["ResolvedRefs"] == (
        "False",
        "InvalidCertificateRef",
        "Secret demo/www cannot serve TLS: tls.key does not belong to the first certificate of "
        "tls.crt; its last good version stays in force",
    )
    assert listener(mismatched)["Programmed"] == ("True", "Programmed", "")
    # Deleted, it is gone; one never good serves nothing.
    assert update(HTTPS_GATEWAY).gateways[0].listeners == ()
    never = update(HTTPS_GATEWAY, tls_secret("demo", "www", WWW.certificate, OTHER.key))
    assert never.gateways[0].listeners == ()
    assert listener(never)["ResolvedRefs"][2].endswith("of tls.crt")


def test_client_certificate_validation_is_not_accepted_rather_than_ignored() -> None:
    text = HTTPS_GATEWAY.replace(
        "tls: {certificateRefs: [{name: www}]}",
        "tls: {certificateRefs: [{name: www}], frontendValidation: "
        "{caCertificateRefs: [{kind: ConfigMap, name: ca}]}}",
    )
    binding = bind(text, tls_secret("demo", "www", WWW.certificate, WWW.key))
    assert listener(binding)["Accepted"] == (
        "False",
        "UnsupportedValue",
        "tls.frontendValidation (client certificates) is not supported: the listener would "
        "admit clients it was asked to refuse",
    )
    assert binding.gateways == ()


# --- which site needs which Secret -----------------------------------------------------------


def _site_gateway(name: str, site: str, listeners: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: demo
  labels: {{kontinuum.io/cluster: {site}}}
spec:
  gatewayClassName: kontinuum
  listeners:
{textwrap.indent(textwrap.dedent(listeners).strip(), "  ")}
"""


def _by_site(*texts: str, grants: str = "") -> dict[str, set[tuple[str, str]]]:
    config, errors = parse_routing(docs(*texts))
    assert errors == []
    granted, grant_errors = parse_grants(docs(grants)) if grants else ((), [])
    assert grant_errors == []
    found = secrets_by_site(config.gateways, granted)
    return {site: set(keys) for site, keys in found.items()}


def test_each_site_needs_the_secrets_its_gateways_https_listeners_may_name() -> None:
    edge = _site_gateway(
        "front",
        "edge",
        """
        - {name: a, port: 443, protocol: HTTPS, hostname: a.example.com,
           tls: {certificateRefs: [{name: a}, {name: missing}]}}
        - {name: plain, port: 80, protocol: HTTP}
        - {name: cross, port: 8443, protocol: HTTPS, hostname: c.example.com,
           tls: {certificateRefs: [{name: www, namespace: certs}]}}
        - {name: ungranted, port: 9443, protocol: HTTPS, hostname: u.example.com,
           tls: {certificateRefs: [{name: api, namespace: certs}]}}
        - {name: not-a-secret, port: 10443, protocol: HTTPS, hostname: n.example.com,
           tls: {certificateRefs: [{kind: ConfigMap, name: cm}]}}
        """,
    )
    eu = _site_gateway(
        "eu-front",
        "eu",
        """
        - {name: b, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: b}]}}
        """,
    )
    # Same-namespace refs count whether or not the Secret exists (the zone finds out as the
    # global does); a ref of another namespace only with a grant from Gateways of demo to
    # that Secret; a ref of another kind never; a Gateway counts for its own site only.
    assert _by_site(edge, eu, grants=GRANT) == {
        "edge": {("demo", "a"), ("demo", "missing"), ("certs", "www")},
        "eu": {("demo", "b")},
    }
    # Without the grant (or with one of another Secret, or to routes), certs/www is not needed.
    expected = {"edge": {("demo", "a"), ("demo", "missing")}, "eu": {("demo", "b")}}
    assert _by_site(edge, eu) == expected
    assert _by_site(edge, eu, grants=GRANT.replace("name: www", "name: api")) == {
        "edge": {("demo", "a"), ("demo", "missing"), ("certs", "api")},
        "eu": {("demo", "b")},
    }
    assert _by_site(edge, eu, grants=GRANT.replace("kind: Gateway", "kind: HTTPRoute")) == expected
    # A grant from Gateways of another namespace allows nothing to demo's.
    assert _by_site(edge, eu, grants=GRANT.replace("namespace: demo", "namespace: other")) == (
        expected
    )
    # A Gateway that names no Secret any more: its site needs none.
    assert _by_site(_site_gateway("eu-front", "eu", "- {name: p, port: 80, protocol: HTTP}")) == {}


def test_the_secrets_a_site_needs_are_those_its_listeners_resolve_with() -> None:
    """What `secrets_by_site` selects is all the translation looks up: binding with only the
    selected Secrets resolves every listener as binding with all of them does."""
    gateway = HTTPS_GATEWAY + (
        "  - {name: cross, port: 8443, protocol: HTTPS, "
        "tls: {certificateRefs: [{name: www, namespace: certs}]}}\n"
    )
    secrets = [
        tls_secret("demo", "www", WWW.certificate, WWW.key),
        tls_secret("certs", "www", OTHER.certificate, OTHER.key),
        tls_secret("demo", "unused", OTHER.certificate, OTHER.key),
    ]
    grants, _ = parse_grants(docs(GRANT))
    config, errors = parse_routing(docs(gateway, *secrets))
    assert errors == []
    needed = secrets_by_site(config.gateways, grants)["eu"]
    assert needed == {("demo", "www"), ("certs", "www")}
    kept = [s for s in secrets if any(f"name: {n}, namespace: {ns}" in s for ns, n in needed)]
    everything = bind(gateway, *secrets, grants=grants)
    selected = bind(gateway, *kept, grants=grants)
    assert len(kept) == 2
    assert selected.gateway_statuses == everything.gateway_statuses
    assert selected.gateways == everything.gateways


def test_a_zone_s_mesh_reports_the_gateways_of_its_own_site_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A zone is not sent the Secrets of other sites' Gateways: their listeners cannot
    resolve there, which is the global's to report, not the zone's."""
    (tmp_path / "clusters" / "eu").mkdir(parents=True)
    (tmp_path / "clusters" / "edge").mkdir(parents=True)
    (tmp_path / "clusters.yaml").write_text(
        cluster_profile("eu", "eu-central-1") + "---\n" + cluster_profile("edge", "eu-west-1")
    )
    edge = _https_gateway("front-edge", "missing-edge").replace(
        "kontinuum.io/cluster: eu", "kontinuum.io/cluster: edge"
    )
    (tmp_path / "gateways.yaml").write_text(
        _https_gateway("front-eu", "missing-eu") + "---\n" + edge
    )
    with caplog.at_level("WARNING", logger="kontinuum.mesh"):
        load_into(Mesh(SnapshotCache(), site="edge"), tmp_path)
    assert "no Secret demo/missing-edge" in caplog.text
    assert "front-eu" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="kontinuum.mesh"):
        load_into(Mesh(SnapshotCache()), tmp_path)  # the global reports every site's
    assert "no Secret demo/missing-edge" in caplog.text
    assert "no Secret demo/missing-eu" in caplog.text
