"""Gateway HTTP conformance over HTTPS listeners: upstream's HTTPRouteHTTPSListener,
GatewaySecretReferenceGrantAllInNamespace, GatewaySecretReferenceGrantSpecific,
GatewaySecretMissingReferenceGrant, GatewaySecretInvalidReferenceGrant,
GatewayInvalidTLSConfiguration and HTTPRouteRedirectPortAndScheme cases (this suite's own
names). Certificates come from a test CA; a client trusts that CA only and sends the Host's
name as SNI, so an answer shows that the listener presented the certificate for that name."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kontinuum.control.gateway_binding import ListenerStatus
from tests.conformance.base import APP_BACKEND, INFRA, WEB_BACKEND, case_gateway, http_route
from tests.conformance.harness import Conformance, Expected, Request
from tests.support.server_certs import TestCa, tls_secret

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa("gateway conformance CA")


def secret(ca: TestCa, name: str, *hostnames: str, namespace: str = INFRA) -> str:
    """A `kubernetes.io/tls` Secret with a certificate for `hostnames`."""
    issued = ca.issue(*hostnames)
    return tls_secret(namespace, name, issued.certificate, issued.key)


def https_listener(name: str, port: int, hostname: str, refs: str) -> str:
    """An HTTPS listener of `hostname` whose `tls.certificateRefs` are `refs` (flow style)."""
    return f"""  - name: {name}
    port: {port}
    protocol: HTTPS
    hostname: {hostname}
    tls: {{certificateRefs: {refs}}}
    allowedRoutes: {{namespaces: {{from: Same}}}}
"""


def listener_status(conformance: Conformance, gateway: str, name: str) -> ListenerStatus:
    (found,) = [s for s in conformance.gateway_status(gateway).listeners if s.name == name]
    return found


def condition(status: ListenerStatus, kind: str) -> tuple[str, str]:
    (found,) = [c for c in status.conditions if c.type == kind]
    return found.status, found.reason


def test_https_listener(conformance: Conformance, ca: TestCa) -> None:
    """HTTPRouteHTTPSListener (core): routes attached to HTTPS listeners are served over TLS,
    each listener with the certificate of its hostname."""
    port = conformance.free_port()
    conformance.apply(
        secret(ca, "orchard-cert", "orchard.example"),
        secret(ca, "grove-cert", "grove.example"),
        case_gateway(
            "secure",
            https_listener("orchard", port, "orchard.example", "[{name: orchard-cert}]")
            + https_listener("grove", port, "grove.example", "[{kind: Secret, name: grove-cert}]"),
        ),
        http_route(
            "orchard",
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
            parents="[{name: secure, sectionName: orchard}]",
        ),
        http_route(
            "grove",
            "  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
            parents="[{name: secure, sectionName: grove}]",
        ),
    )
    for name in ("orchard", "grove"):
        status = listener_status(conformance, "secure", name)
        assert condition(status, "ResolvedRefs") == ("True", "ResolvedRefs")
        assert condition(status, "Programmed") == ("True", "Programmed")
        assert status.attached_routes == 1
    conformance.gateway("secure")
    pem = ca.pem
    conformance.expect_all(
        port,
        [
            (Request("orchard.example", ca=pem), Expected(backend="infra-backend-v1")),
            (Request("grove.example", ca=pem), Expected(backend="infra-backend-v2")),
            (Request(f"grove.example:{port}", ca=pem), Expected(backend="infra-backend-v2")),
        ],
    )


def certificate_grant(name: str, *, from_namespace: str = INFRA, to_name: str | None) -> str:
    """A grant in the web-backend namespace of its Secrets (`to_name`, or all) to the
    Gateways of `from_namespace`."""
    name_field = "" if to_name is None else f", name: {to_name}"
    return f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: {name}, namespace: {WEB_BACKEND}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {from_namespace}}}]
  to: [{{group: "", kind: Secret{name_field}}}]
"""


def test_certificates_of_another_namespace(conformance: Conformance, ca: TestCa) -> None:
    """GatewaySecretMissingReferenceGrant, GatewaySecretInvalidReferenceGrant (core),
    GatewaySecretReferenceGrantAllInNamespace and GatewaySecretReferenceGrantSpecific
    (core): a listener may use another namespace's Secret only where a grant of that
    namespace allows its Gateway's namespace, for that Secret or all of them."""
    port = conformance.free_port()
    objects = (
        secret(ca, "shared-cert", "shared.example", namespace=WEB_BACKEND),
        case_gateway(
            "borrowing",
            https_listener(
                "https",
                port,
                "shared.example",
                f"[{{name: shared-cert, namespace: {WEB_BACKEND}}}]",
            ),
        ),
        http_route(
            "borrowing",
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
            parents="[{name: borrowing}]",
        ),
    )
    not_permitted = ("False", "RefNotPermitted")
    for grants, resolved in (
        ((), not_permitted),
        (
            (
                certificate_grant(
                    "other-namespace",
                    from_namespace=APP_BACKEND,
                    to_name=None,
                ),
            ),
            not_permitted,
        ),
        ((certificate_grant("other-secret", to_name="another-cert"),), not_permitted),
        ((certificate_grant("all-secrets", to_name=None),), ("True", "ResolvedRefs")),
        ((certificate_grant("this-secret", to_name="shared-cert"),), ("True", "ResolvedRefs")),
    ):
        assert conformance.apply(*objects, *grants) == ()
        status = listener_status(conformance, "borrowing", "https")
        assert condition(status, "ResolvedRefs") == resolved, grants
        if resolved == not_permitted:
            continue
        assert condition(status, "Programmed") == ("True", "Programmed")
        conformance.gateway("borrowing")
        conformance.expect(
            port, Request("shared.example", ca=ca.pem), Expected(backend="infra-backend-v1")
        )


def test_invalid_certificate_refs(conformance: Conformance, ca: TestCa) -> None:
    """GatewayInvalidTLSConfiguration (core): a certificateRef to a Secret that does not
    exist, of another group or kind, or whose certificate is not one, is
    `ResolvedRefs=False InvalidCertificateRef`."""
    garbage = base64.b64encode(b"not a certificate").decode()
    malformed = f"""apiVersion: v1
kind: Secret
metadata: {{name: malformed-cert, namespace: {INFRA}}}
type: kubernetes.io/tls
data: {{tls.crt: {garbage}, tls.key: {garbage}}}
"""
    refs = {
        "missing": "[{name: no-such-cert}]",
        "other-group": "[{group: certs.example.com, kind: Secret, name: valid-cert}]",
        "other-kind": "[{kind: ConfigMap, name: valid-cert}]",
        "malformed": "[{name: malformed-cert}]",
    }
    ports = conformance.free_ports(len(refs))
    listeners = "".join(
        https_listener(name, port, f"{name}.example", ref)
        for (name, ref), port in zip(refs.items(), ports, strict=True)
    )
    assert (
        conformance.apply(
            secret(ca, "valid-cert", "valid.example"),
            malformed,
            case_gateway("badly-certified", listeners),
        )
        == ()
    )
    for name in refs:
        status = listener_status(conformance, "badly-certified", name)
        assert condition(status, "ResolvedRefs") == ("False", "InvalidCertificateRef"), name


def test_redirect_port_and_scheme(conformance: Conformance, ca: TestCa) -> None:
    """HTTPRouteRedirectPortAndScheme (extended): a redirect keeps the listener's scheme and
    port unless it sets them; a scheme it sets brings that scheme's well-known port, which
    the Location leaves out, as it does a port it sets that is the scheme's well-known one."""
    plain, secure = conformance.free_ports(2)
    rules = """  - matches: [{path: {type: PathPrefix, value: /keep}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: moved.example}}]
  - matches: [{path: {type: PathPrefix, value: /port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: moved.example, port: 80}}]
  - matches: [{path: {type: PathPrefix, value: /port-9090}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: moved.example, port: 9090}}]
  - matches: [{path: {type: PathPrefix, value: /to-https}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: moved.example, scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /to-https-443}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: moved.example, scheme: https, port: 443}
  - matches: [{path: {type: PathPrefix, value: /to-https-9443}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: moved.example, scheme: https, port: 9443}
  - matches: [{path: {type: PathPrefix, value: /to-http}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: moved.example, scheme: http}}]
"""
    conformance.apply(
        secret(ca, "redirects-cert", "redirects.example"),
        case_gateway(
            "redirecting",
            f"""  - name: plain
    port: {plain}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
"""
            + https_listener("secure", secure, "redirects.example", "[{name: redirects-cert}]"),
        ),
        http_route("redirects", rules, parents="[{name: redirecting}]"),
    )
    conformance.gateway("redirecting")

    def location(port: int, path: str, ca_pem: bytes | None) -> str:
        reply = conformance.expect(
            port, Request("redirects.example", path, ca=ca_pem), Expected(status=302)
        )
        return reply.headers["location"]

    from_plain = {
        "/keep": f"http://moved.example:{plain}/keep",
        "/port-80": "http://moved.example/port-80",
        "/port-9090": "http://moved.example:9090/port-9090",
        "/to-https": "https://moved.example/to-https",
        "/to-https-443": "https://moved.example/to-https-443",
        "/to-https-9443": "https://moved.example:9443/to-https-9443",
    }
    from_secure = {
        "/keep": f"https://moved.example:{secure}/keep",
        "/to-http": "http://moved.example/to-http",
        "/port-9090": "https://moved.example:9090/port-9090",
        "/to-https": "https://moved.example/to-https",
    }
    for path, want in from_plain.items():
        assert location(plain, path, None) == want, path
    for path, want in from_secure.items():
        assert location(secure, path, ca.pem) == want, path


def test_a_redirect_without_a_hostname_leaves_out_the_host_s_port(
    conformance: Conformance, ca: TestCa
) -> None:
    """HTTPRouteRedirectPortAndScheme (extended), for redirects that keep the request's
    hostname: the Location's port follows the listener and the redirect, never the port of
    the request's Host (which the backend receives unmodified, so it is still there)."""
    plain, secure = conformance.free_ports(2)
    rules = "".join(
        f"""  - matches: [{{path: {{type: PathPrefix, value: /{path}}}}}]
    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]
"""
        for path, redirect in {
            "keep": "{statusCode: 302}",
            "port-80": "{port: 80}",
            "port-443": "{port: 443}",
            "port-9090": "{port: 9090}",
            "to-http": "{scheme: http}",
            "to-https": "{scheme: https}",
            "to-https-9443": "{scheme: https, port: 9443}",
        }.items()
    )
    conformance.apply(
        secret(ca, "same-host-cert", "same-host.example"),
        case_gateway(
            "redirecting-same-host",
            f"""  - name: plain
    port: {plain}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
"""
            + https_listener("secure", secure, "same-host.example", "[{name: same-host-cert}]"),
        ),
        http_route("same-host-redirects", rules, parents="[{name: redirecting-same-host}]"),
    )
    conformance.gateway("redirecting-same-host")
    from_plain = {
        "/keep": f"http://same-host.example:{plain}/keep",
        "/port-80": "http://same-host.example/port-80",
        "/port-443": "http://same-host.example:443/port-443",
        "/port-9090": "http://same-host.example:9090/port-9090",
        "/to-http": "http://same-host.example/to-http",
        "/to-https": "https://same-host.example/to-https",
        "/to-https-9443": "https://same-host.example:9443/to-https-9443",
    }
    from_secure = {
        "/keep": f"https://same-host.example:{secure}/keep",
        "/port-443": "https://same-host.example/port-443",
        "/port-80": "https://same-host.example:80/port-80",
        "/to-http": "http://same-host.example/to-http",
        "/to-https": "https://same-host.example/to-https",
    }
    for host in ("same-host.example", "same-host.example:1234", f"same-host.example:{plain}"):
        for path, want in from_plain.items():
            reply = conformance.expect(plain, Request(host, path), Expected(status=302))
            assert reply.headers["location"] == want, (host, path)
    for host in ("same-host.example", "same-host.example:1234", f"same-host.example:{secure}"):
        for path, want in from_secure.items():
            request = Request(host, path, ca=ca.pem)
            reply = conformance.expect(secure, request, Expected(status=302))
            assert reply.headers["location"] == want, (host, path)


def _self_signed(hostname: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """A Secret of a certificate for `hostname` signed by its own `key`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return tls_secret(
        INFRA, f"{hostname.split('.')[0]}-cert", certificate.public_bytes(pem), private
    )


def test_keys_envoy_cannot_serve(conformance: Conformance, ca: TestCa) -> None:
    """GatewayInvalidTLSConfiguration's malformed Secret, for keys that parse but that Envoy
    refuses to serve with (an RSA key under 2048 bits, an EC key of a curve other than P-256,
    P-384 or P-521): the listener is `ResolvedRefs=False InvalidCertificateRef` and not
    served, and the listener beside it on the same port serves on."""
    port = conformance.free_port()
    keys = {
        "short": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "koblitz": ec.generate_private_key(ec.SECP256K1()),
    }
    assert (
        conformance.apply(
            *(_self_signed(f"{name}.example", key) for name, key in keys.items()),
            secret(ca, "sound-cert", "sound.example"),
            case_gateway(
                "weakly-certified",
                "".join(
                    https_listener(name, port, f"{name}.example", f"[{{name: {name}-cert}}]")
                    for name in ("sound", *keys)
                ),
            ),
            http_route(
                "sound",
                "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
                parents="[{name: weakly-certified}]",
            ),
        )
        == ()
    )
    for name in keys:
        status = listener_status(conformance, "weakly-certified", name)
        assert condition(status, "ResolvedRefs") == ("False", "InvalidCertificateRef"), name
        assert condition(status, "Programmed") == ("False", "Invalid"), name
    conformance.gateway("weakly-certified")
    conformance.expect(
        port, Request("sound.example", ca=ca.pem), Expected(backend="infra-backend-v1")
    )
