"""A zone's intermediate CA: what a zone's key may sign, limited to its own site.

A zone serving its site's proxies issues their certificates and its xDS server's. With the
fleet's root key it could mint any identity of the fleet, another zone's among them, so it
is given an intermediate CA instead (`kontinuum ca intermediate`), signed by the fleet's CA
and limited by it:

- **Its site is named as a SPIFFE ID**: the intermediate's one URI SAN is the zone's own
  identity, `spiffe://<trust domain>/ns/kontinuum-system/sa/zone-<site>` (the identity its
  client certificate proves to the global). The X.509-SVID spec lets a signing certificate
  be an SVID; naming the zone this way needs no private extension, reads as what it is in
  `openssl x509 -text`, and is parsed by the same code as every workload's SPIFFE ID. A
  verifier that finds a leaf issued by such a CA knows the leaf's *issuing site*, and lets
  it claim that site only (`CertificateAuthority.issuing_site`): a zone's stream of its
  site at the global, an xDS node of its cluster.
- **Not the control plane's identity, nor another zone's**: it refuses to issue
  `ns/kontinuum-system/sa/kontinuum`, what the global's xDS server presents, and every
  `ns/kontinuum-system/sa/zone-*` but its own, which it issues for its xDS server's
  certificate only (never a workload's over SDS); the zone's xDS server presents the
  zone's own identity, which `kontinuum bootstrap` pins (besides the control plane's) for
  the proxies of that site only, so other sites' Envoys refuse an honest zone's xDS server
  in the handshake. No proxy may hold any of these identities (xDS admission).
- **It signs no further CA**: basicConstraints `CA:TRUE, pathlen:0`, which every TLS stack
  enforces during the handshake; kontinuum's own checks accept a leaf only when the zone
  CA issued it directly, and refuse to load a CA below a zone CA.
- **Its host names, when the operator lists them** (`--dns-name`): a NameConstraints
  extension (critical) permits those DNS names (each with its subdomains, RFC 5280) and
  excludes every IP address (0.0.0.0/0 and ::/0), so a server certificate it signs for any
  other host, the global's among them, fails verification in every client that checks the
  server's host name against the chain: gRPC (the zone's channel to the global, gRPC xDS
  clients), OpenSSL (the zone's check of the global), the `cryptography` verifier. Envoy
  checks no host name of its xDS server, only the URI SAN it pins, so toward Envoys the
  constraint protects nothing; the identity pin does (above). URI SANs
  (SPIFFE IDs) are another name form, which DNS and IP constraints leave alone, so the
  workloads' certificates are as before. Without the list there is no constraint, and such
  a certificate passes the handshake (the zone's separate check of the global still
  refuses it). No URI constraint: it could permit the trust domain only (RFC 5280 matches a
  URI constraint against the host, for `spiffe://` the trust domain), which every check of
  a SPIFFE ID in the fleet matches already, it cannot tell paths (sites) apart, and common
  verifiers refuse a certificate under it (the `cryptography` verifier does).

What it cannot limit: SPIFFE IDs of the data plane are trust-domain wide, as in Istio; a
zone's intermediate can still sign `ns/<any namespace>/sa/<any account>` certificates for
its own site's proxies, and peers outside kontinuum's checks (Envoys) accept them. Its key
can sign the control plane's identity by hand (the refusal above is this code's, not the
certificate's), which Envoys, pinning identities and not issuers, would accept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kontinuum.security.spiffe import SpiffeId

ZONE_NAMESPACE: Final = "kontinuum-system"
ZONE_ACCOUNT_PREFIX: Final = "zone-"
# The control plane's own service account (in ZONE_NAMESPACE): the global's identity,
# which a zone's CA never issues.
CONTROL_PLANE_ACCOUNT: Final = "kontinuum"
# What a zone CA with host names may not name at all: any IP address.
EVERY_ADDRESS: Final = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def zone_identity(trust_domain: str, site: str) -> SpiffeId:
    """The SPIFFE ID of `site`'s zone: `ns/kontinuum-system/sa/zone-<site>`."""
    return SpiffeId(trust_domain, ZONE_NAMESPACE, f"{ZONE_ACCOUNT_PREFIX}{site}")


def zone_site_of(identity: SpiffeId) -> str | None:
    """The site whose zone `identity` is (`ns/kontinuum-system/sa/zone-<site>`), or None.
    Every such identity is reserved: no proxy holds one, and a zone CA issues its own
    site's only, for its xDS server."""
    if identity.namespace != ZONE_NAMESPACE:
        return None
    if not identity.service_account.startswith(ZONE_ACCOUNT_PREFIX):
        return None
    return identity.service_account[len(ZONE_ACCOUNT_PREFIX) :]


def reserved_refusal(identity: SpiffeId) -> str | None:
    """Why no proxy may hold `identity` (nor a token name it), or None: the control plane's
    and the zones' identities are what proxies pin as their xDS server."""
    if is_control_plane(identity):
        return f"{identity} is the control plane's own identity"
    if (site := zone_site_of(identity)) is not None:
        return (
            f"{identity} is the identity of the zone of site {site!r}, which that site's "
            "proxies pin as their xDS server"
        )
    return None


def issuance_refusal(
    identity: SpiffeId, cluster: str | None, issuing_site: str | None, server: bool
) -> str | None:
    """Why a CA (a zone's of `issuing_site`, or the fleet's when None) may not issue a
    certificate of a zone's identity `identity` for `cluster` (`server`: an xDS server's,
    no cluster), or None. A zone's CA issues its own zone's identity for its xDS server
    only; the fleet's CA issues `zone-<site>` as a zone's credential, of cluster `site`."""
    site = zone_site_of(identity)
    if site is None:
        return None
    if issuing_site is not None:
        if site != issuing_site:
            return (
                f"the zone CA of site {issuing_site} does not issue the identity of another "
                f"zone, {identity}"
            )
        if not server:
            return (
                f"the zone CA of site {issuing_site} issues its zone's identity {identity} "
                "for its own xDS server certificate only"
            )
        return None
    if server or cluster != site:
        asked = "a server" if server else f"cluster {cluster}" if cluster else "no cluster"
        return (
            f"{identity} is the identity of the zone of site {site}: the fleet's CA issues "
            f"it as that zone's credential, of cluster {site} only (--cluster {site}), not "
            f"for {asked}"
        )
    return None


def is_control_plane(identity: SpiffeId) -> bool:
    """Whether `identity` is the control plane's, `ns/kontinuum-system/sa/kontinuum`."""
    return (identity.namespace, identity.service_account) == (
        ZONE_NAMESPACE,
        CONTROL_PLANE_ACCOUNT,
    )


def zone_site(certificate: x509.Certificate) -> str | None:
    """The site a CA certificate is limited to (its URI SAN is a zone's SPIFFE ID), or None:
    not a zone's CA (a leaf, the fleet's root or a fleet intermediate)."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    if not constraints.value.ca:
        return None
    for uri in names.value.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            identity = SpiffeId.parse(uri)
        except ValueError:
            continue
        if (site := zone_site_of(identity)) is not None:
            return site
    return None


def zone_ca_certificate(
    identity: SpiffeId,
    site: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    not_before: datetime,
    not_after: datetime,
    dns_names: Sequence[str] = (),
) -> x509.Certificate:
    """The intermediate CA certificate of `site`'s zone (see the module doc), signed by
    `issuer` (the fleet's CA); with `dns_names`, limited to naming those hosts."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.trust_domain),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, f"kontinuum zone CA {site}"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    try:
        own = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        authority = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(own)
    except x509.ExtensionNotFound:
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
            critical=False,
        )
    )
    if dns_names:
        constraints = x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(name) for name in dns_names],
            excluded_subtrees=[x509.IPAddress(network) for network in EVERY_ADDRESS],
        )
        builder = builder.add_extension(constraints, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def host_refusal(certificate: x509.Certificate, host: str) -> str | None:
    """Why a certificate issued by the CA `certificate` may not name `host` (a DNS name or
    an IP address) under the CA's name constraints, or None when it may: the check TLS
    stacks make (RFC 5280: a DNS constraint permits the name and its subdomains)."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
    permitted = constraints.value.permitted_subtrees or ()
    excluded = constraints.value.excluded_subtrees or ()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        if any(isinstance(n, x509.DNSName) and _under(name, n.value) for n in excluded):
            return "its name constraints exclude it"
        allowed = [n.value for n in permitted if isinstance(n, x509.DNSName)]
        if allowed and not any(_under(name, value) for value in allowed):
            return f"it permits DNS names under {', '.join(allowed)} only"
        return None
    if any(address in network for network in _networks(excluded)):
        return "its name constraints exclude IP addresses"
    networks = _networks(permitted)
    if networks and not any(address in network for network in networks):
        return "it is not in the networks it permits"
    return None


def _networks(
    names: Sequence[x509.GeneralName],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The IP networks among a name constraint's subtrees."""
    return [
        n.value
        for n in names
        if isinstance(n, x509.IPAddress)
        and isinstance(n.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
    ]


def _under(name: str, constraint: str) -> bool:
    """Whether DNS `name` is `constraint` or a subdomain of it (RFC 5280 section 4.2.1.10;
    a constraint starting with a dot permits subdomains only)."""
    constraint = constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith(f".{constraint}")


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `certificate` directly."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def leaf_issuing_site(
    leaf: x509.Certificate,
    candidates: list[x509.Certificate],
    fleet_signer: x509.Certificate,
    now: datetime,
) -> str | None:
    """Who issued `leaf`: `fleet_signer` (None), or the zone CA of a site among
    `candidates` (the site), which `fleet_signer` issued and which issued the leaf
    directly; ValueError when neither did."""
    if issued_by(leaf, fleet_signer):
        return None
    for issuer in candidates:
        site = zone_site(issuer)
        if site is None or not issued_by(leaf, issuer):
            continue
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.path_length != 0:
            raise ValueError(f"the zone CA of site {site} is not limited to pathlen 0")
        if not issued_by(issuer, fleet_signer):
            raise ValueError(f"the zone CA of site {site} is not issued by this fleet's CA")
        if not issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
            raise ValueError(f"the zone CA of site {site} is not valid at {now}")
        return site
    raise ValueError(
        "not issued by this fleet's CA nor by a zone CA it issued (another CA under the same root?)"
    )
