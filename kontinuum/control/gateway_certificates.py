"""The certificates of HTTPS listeners: `v1 Secret`s read and checked, and each listener's
`tls.certificateRefs` resolved to them, with the status the Gateway API asks for. Pure: no I/O.

A Secret is read from the fleet-wide objects (the fleet files' *.yaml or a config cluster),
in the namespace that owns it:

    apiVersion: v1
    kind: Secret
    metadata: {name: www-example-com, namespace: demo}
    type: kubernetes.io/tls
    data: {tls.crt: <base64 PEM chain>, tls.key: <base64 PEM key>}   # or stringData: PEM

What the API server would refuse is a `ConfigError` (and the Secret is left out): a field of
the wrong type, `data` that is not base64, more than 1 MiB of data. What it accepts but a
listener cannot serve is kept with its `problem`: another `type`, a missing `tls.crt` or
`tls.key`, a chain or key that is not PEM, a key that does not belong to the first
certificate, or a key Envoy refuses to serve with (RSA under 2048 bits, EC of a curve other
than P-256, P-384 or P-521): Envoy would reject the secret, and with it every listener of
the port. No message ever holds any of the Secret's data.

A listener's certificate refs resolve (`listener_certificates`) when each names group ""
kind Secret, the Secret exists and can serve, and a Secret in another namespace than the
Gateway's is granted by a ReferenceGrant of its namespace from Gateways of the Gateway's
namespace to that Secret (or every Secret). Otherwise the listener's `ResolvedRefs` is
False: `RefNotPermitted` for a reference no grant allows, else `InvalidCertificateRef`.

The Secrets a site needs (`secrets_by_site`, what the global sends a zone) are those the
HTTPS listeners of the site's Gateways may name: a ref of group "" kind Secret, in the
Gateway's namespace or granted as above, whether or not the Secret exists or can serve (the
zone finds that out as the global does). A Gateway runs at the one site its label
`kontinuum.io/cluster` names.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from kontinuum.control.model import Grant, reference_granted
from kontinuum.control.objects import ObjectReader
from kontinuum.control.plane import Condition
from kontinuum.control.routing import (
    CORE_GROUP,
    CertificateRef,
    Gateway,
    GatewayListener,
    TlsSecret,
)

TLS_TYPE: Final = "kubernetes.io/tls"
CERTIFICATE_KEY: Final = "tls.crt"
PRIVATE_KEY_KEY: Final = "tls.key"
MAX_SECRET_BYTES: Final = 1024 * 1024  # the API server's limit for a Secret's data
# The keys Envoy serves with (BoringSSL): RSA of at least 2048 bits, EC of these curves.
MIN_RSA_BITS: Final = 2048
ENVOY_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _data(obj: ObjectReader) -> dict[str, bytes]:
    """`data` (base64) overlaid with `stringData`, as the API server merges them."""
    found: dict[str, bytes] = {}
    data = obj.mapping(obj.body, "data", "data")
    for key, value in data.items():
        if not isinstance(value, str):
            obj.error(f"data[{key}]", "must be a base64 string")
            continue
        try:
            found[str(key)] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            obj.error(f"data[{key}]", "must be base64 (the value is not shown)")
    strings = obj.mapping(obj.body, "stringData", "stringData")
    for key, value in strings.items():
        if not isinstance(value, str):
            obj.error(f"stringData[{key}]", "must be a string")
        else:
            found[str(key)] = value.encode()
    if sum(len(v) for v in found.values()) > MAX_SECRET_BYTES:
        obj.error("data", f"holds more than {MAX_SECRET_BYTES} bytes, a Secret's limit")
    return found


def certificate_problem(chain: bytes, key: bytes) -> str:
    """Why a PEM chain and key cannot serve TLS ('' when they can)."""
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        return f"{CERTIFICATE_KEY} is not a PEM certificate chain"
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return f"{PRIVATE_KEY_KEY} is not an unencrypted PEM private key"
    except Exception:
        return f"{PRIVATE_KEY_KEY} is not a private key kontinuum can read"
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) != certificates[0].public_key().public_bytes(*spki):
        return f"{PRIVATE_KEY_KEY} does not belong to the first certificate of {CERTIFICATE_KEY}"
    return _unservable_key(certificates[0].public_key())


def _unservable_key(public: object) -> str:
    """Why Envoy would refuse to serve with this key ('' when it would not). Envoy rejects
    the whole secret, and a listener port whose secret it rejects serves none of its
    listeners, so such a key is caught here."""
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            return (
                f"the first certificate of {CERTIFICATE_KEY} has an RSA key of "
                f"{public.key_size} bits: Envoy serves {MIN_RSA_BITS} bits or more"
            )
        return ""
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ENVOY_CURVES:
            return (
                f"the first certificate of {CERTIFICATE_KEY} has an EC key of curve "
                f"{public.curve.name}: Envoy serves {', '.join(ENVOY_CURVES.values())} only"
            )
        return ""
    if isinstance(public, ed25519.Ed25519PublicKey):
        return ""
    return (
        f"the first certificate of {CERTIFICATE_KEY} has a key Envoy cannot serve with "
        "(RSA, EC P-256, P-384, P-521 and Ed25519 keys only)"
    )


def read_secret(obj: ObjectReader) -> TlsSecret:
    """A Secret of the fleet-wide objects (see the module doc); errors go to `obj`."""
    secret_type = obj.string(obj.body, "type", "type") or "Opaque"
    data = _data(obj)
    chain, key = data.get(CERTIFICATE_KEY, b""), data.get(PRIVATE_KEY_KEY, b"")
    if secret_type != TLS_TYPE:
        problem = f"its type is {secret_type}, not {TLS_TYPE}"
        chain = key = b""  # nothing of a Secret no listener can use is kept
    elif not chain or not key:
        missing = [k for k, v in ((CERTIFICATE_KEY, chain), (PRIVATE_KEY_KEY, key)) if not v]
        problem = f"it has no {' and no '.join(missing)}"
    else:
        problem = certificate_problem(chain, key)
    return TlsSecret(obj.namespace, obj.name, obj.doc.file, chain, key, problem)


# --- listeners -------------------------------------------------------------------------------

SecretKey = tuple[str, str]  # (namespace, name)


def _granted(gateway: Gateway, namespace: str, name: str, grants: Iterable[Grant]) -> bool:
    return reference_granted(grants, "Gateway", gateway.namespace, "Secret", namespace, name)


def _refusal(gateway: Gateway, ref: CertificateRef, grants: Iterable[Grant]) -> Condition | None:
    """Why a listener of `gateway` may not name `ref` as a certificate, whatever the Secret
    holds (its `ResolvedRefs`), or None when it may."""
    if ref.namespace != gateway.namespace and not _granted(
        gateway, ref.namespace, ref.name, grants
    ):
        message = (
            f"{ref} is in another namespace and no ReferenceGrant of {ref.namespace} "
            f"allows Gateways of {gateway.namespace} to name it"
        )
        return Condition("ResolvedRefs", "False", "RefNotPermitted", message)
    if (ref.group, ref.kind) != (CORE_GROUP, "Secret"):
        message = f'{ref}: a certificate is a Secret (group "") only'
        return Condition("ResolvedRefs", "False", "InvalidCertificateRef", message)
    return None


def listener_certificates(
    gateway: Gateway,
    listener: GatewayListener,
    secrets: dict[tuple[str, str], TlsSecret],
    grants: Iterable[Grant],
) -> tuple[tuple[TlsSecret, ...], Condition | None]:
    """The Secrets an HTTPS listener serves, or the `ResolvedRefs` condition why it cannot
    (None for a listener that terminates no TLS)."""
    if listener.protocol != "HTTPS":
        return (), None
    if not listener.certificate_refs:
        message = "tls.certificateRefs names no certificate: kontinuum needs one to terminate TLS"
        return (), Condition("ResolvedRefs", "False", "InvalidCertificateRef", message)
    found: list[TlsSecret] = []
    grants = tuple(grants)
    for ref in listener.certificate_refs:
        if (refused := _refusal(gateway, ref, grants)) is not None:
            return (), refused
        secret = secrets.get((ref.namespace, ref.name))
        if secret is None:
            message = f"no {ref}"
            return (), Condition("ResolvedRefs", "False", "InvalidCertificateRef", message)
        if secret.problem:
            message = f"{ref} cannot serve TLS: {secret.problem}"
            return (), Condition("ResolvedRefs", "False", "InvalidCertificateRef", message)
        found.append(secret)
    return tuple(found), None


def named_secrets(gateway: Gateway, grants: Iterable[Grant]) -> set[SecretKey]:
    """Every Secret an HTTPS listener of `gateway` may name as its certificate (by the
    checks of `listener_certificates` that do not look at the Secret): whether or not it
    exists or can serve, and whether or not the listener's other refs resolve."""
    grants = tuple(grants)
    return {
        (ref.namespace, ref.name)
        for listener in gateway.listeners
        if listener.protocol == "HTTPS"
        for ref in listener.certificate_refs
        if _refusal(gateway, ref, grants) is None
    }


def secrets_by_site(
    gateways: Iterable[Gateway], grants: Iterable[Grant]
) -> dict[str, frozenset[SecretKey]]:
    """The Secrets each site's Gateways may serve (`named_secrets`), by site: a Gateway
    runs at the one cluster its label `kontinuum.io/cluster` names (the label is required,
    so no Gateway runs at every site). Costs the Gateways' refs and the grants once."""
    # Only a grant from Gateways to Secrets can allow a certificate ref; `reference_granted`
    # looks at those of the Gateway's own namespace only.
    from_gateways: dict[str, list[Grant]] = {}
    for grant in grants:
        if (grant.from_kind, grant.to_kind) == ("Gateway", "Secret"):
            from_gateways.setdefault(grant.consumer, []).append(grant)
    found: dict[str, set[SecretKey]] = {}
    for gateway in gateways:
        if named := named_secrets(gateway, from_gateways.get(gateway.namespace, ())):
            found.setdefault(gateway.cluster, set()).update(named)
    return {site: frozenset(keys) for site, keys in found.items()}
