"""The fleet's certificate authority: X.509-SVIDs for proxies and for the xDS server.

The CA is kontinuum's own (`ca.crt` + `ca.key`, a self-signed root) or one an existing PKI
already runs: a cert-manager CA Secret mounted as a directory (`tls.crt` + `tls.key`, and
`ca.crt` its root when `tls.crt` is an intermediate). Certificates follow the X.509-SVID
spec, so Envoy, gRPC and any SPIFFE-aware peer accept them; the cluster a proxy may claim is
bound in its certificate's subject OU. A zone's CA is an intermediate of the fleet's, limited
to its site (`kontinuum.security.zone_ca`): what it issues may claim that site only.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeAlias, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from kontinuum.control.objects import dns_subdomain
from kontinuum.security.spiffe import SCHEME, SpiffeId, trust_domain_error
from kontinuum.security.zone_ca import (
    host_refusal,
    is_control_plane,
    issuance_refusal,
    issued_by,
    leaf_issuing_site,
    zone_ca_certificate,
    zone_identity,
    zone_site,
)

CaKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CaPublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
CLOCK_SKEW: Final = timedelta(seconds=60)  # certificates start this early: peers' clocks drift
# A new root starts an hour early, so that what it issues right away can start early too.
ROOT_BACKDATE: Final = timedelta(hours=1)
_MAX_OU: Final = 64  # X.509 ub-organizational-unit-name
_LAYOUTS: Final = (
    "a CA directory holds ca.crt and ca.key (kontinuum's own CA) or tls.crt and tls.key "
    "(a cert-manager CA Secret, with ca.crt its root)"
)


class CaError(Exception):
    """The CA cannot be used, or refuses a request; the message says why."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who a certificate or bootstrap token names: a workload and the cluster it runs in;
    and until when the credential holds (not part of who it is)."""

    spiffe_id: SpiffeId
    cluster: str | None
    expires: datetime | None = field(default=None, compare=False)
    # The site of the zone CA that issued it (it may claim that site only); None when the
    # fleet's CA itself did.
    issuing_site: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate and its key, as a proxy's TLS context needs them."""

    spiffe_id: SpiffeId
    cluster: str | None
    certificate_chain_pem: bytes  # the leaf, then any intermediates; never the root
    private_key_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime
    # When it was issued: `not_before` is earlier, for peers whose clocks lag.
    issued_at: datetime | None = None

    def renew_at(self, fraction: float = 0.5) -> datetime:
        """When `fraction` of the lifetime (from issuance) is over: renewing then leaves
        time to retry."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"renewal fraction {fraction} is not between 0 and 1")
        start = max(self.issued_at or self.not_before, self.not_before)
        return start + (self.not_after - start) * fraction


def utc(now: datetime | None) -> datetime:
    """`now` in UTC (it must be timezone-aware), or the current time when None."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _key_usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CaError(f"cannot read {path}: {error.strerror}") from None


def _certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError as error:
        raise CaError(f"{path} holds no PEM certificate: {error}") from None


def _private_key(path: Path) -> CaKey:
    """The key in `path`, refused when others may open it or its group may change it.

    Reading by the file's group is allowed, as PostgreSQL allows it for its key: that is
    how Kubernetes mounts a Secret for a non-root container (`fsGroup`, mode 0440).
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        raise CaError(f"cannot read {path}: {error.strerror}") from None
    if mode & 0o037:
        raise CaError(
            f"{path} may be read by others or changed by its group (mode {mode:04o}): chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as error:
        raise CaError(f"{path} holds no unencrypted PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaError(f"{path} holds a {type(key).__name__}: a CA key must be EC or RSA")
    return key


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(certificate: x509.Certificate, kind: type[E]) -> E | None:
    """The certificate's extension of `kind`, if it has one."""
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_authority(path: Path, certificate: x509.Certificate, now: datetime) -> None:
    """Refuse a certificate that may not sign others, or not now."""
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CaError(f"{path}: {_name(certificate)} is not a CA (no BasicConstraints CA:TRUE)")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        raise CaError(f"{path}: {_name(certificate)} may not sign certificates (no keyCertSign)")
    if now < certificate.not_valid_before_utc:
        raise CaError(
            f"{path}: {_name(certificate)} is not valid before {certificate.not_valid_before_utc}"
        )
    if now > certificate.not_valid_after_utc:
        raise CaError(f"{path}: {_name(certificate)} expired at {certificate.not_valid_after_utc}")


def _uris(certificate: x509.Certificate) -> list[str]:
    names = _extension(certificate, x509.SubjectAlternativeName)
    return [] if names is None else names.get_values_for_type(x509.UniformResourceIdentifier)


def _check_trust_domain(path: Path, certificate: x509.Certificate, trust_domain: str) -> None:
    """A CA certificate that names a trust domain (its spiffe:// URI) must name this one."""
    named = {
        uri[len(SCHEME) :].split("/")[0] for uri in _uris(certificate) if uri.startswith(SCHEME)
    }
    if named and trust_domain not in named:
        raise CaError(
            f"{path} is a CA of trust domain {', '.join(sorted(named))}, not {trust_domain}"
        )


class CertificateAuthority:
    """Signs the fleet's certificates with one key; build it with `generate` or `load`.

    `signer` is the certificate of `key`; `intermediates` lead from it to `roots[0]`, and
    `roots` are what peers trust (the signer itself when it is a root). The key stays in
    `_signing_key`, read only by this package (tokens are signed with it) and never shown.
    """

    __slots__ = (
        "_chain",
        "_expires",
        "_fleet_signer",
        "_roots",
        "_signer",
        "_signing_key",
        "_site",
        "_starts",
        "_td",
    )

    def __init__(
        self,
        trust_domain: str,
        key: CaKey,
        signer: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        roots: Sequence[x509.Certificate] = (),
    ) -> None:
        if problem := trust_domain_error(trust_domain):
            raise ValueError(problem)
        self._td = trust_domain
        self._signing_key = key
        self._signer = signer
        self._roots = tuple(roots) or (signer,)
        self._chain = () if signer in self._roots else (signer, *intermediates)
        path = (*self._chain, self._roots[0])
        # A zone's CA: the site it is limited to, and the fleet's CA that issued it.
        self._site = zone_site(signer) if self._chain else None
        self._fleet_signer = signer if self._site is None else path[1]
        self._starts = max(c.not_valid_before_utc for c in path)
        self._expires = min(c.not_valid_after_utc for c in path)

    def __repr__(self) -> str:
        return (
            f"CertificateAuthority(trust_domain={self._td!r}, signer={_name(self._signer)!r}, "
            f"not_after={self._expires.isoformat()})"
        )

    @classmethod
    def generate(
        cls, trust_domain: str, *, validity: timedelta = timedelta(days=3650)
    ) -> CertificateAuthority:
        """A new self-signed EC P-256 root for `trust_domain`."""
        if problem := trust_domain_error(trust_domain):
            raise ValueError(problem)
        if validity <= timedelta(0):
            raise ValueError(f"a CA validity of {validity} is not positive")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, "kontinuum root CA"),
            ]
        )
        uri = x509.UniformResourceIdentifier(f"{SCHEME}{trust_domain}")
        root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - ROOT_BACKDATE)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.SubjectAlternativeName([uri]), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(trust_domain, key, root)

    @classmethod
    def load(cls, directory: Path, trust_domain: str) -> CertificateAuthority:
        """The CA kept in `directory`, in kontinuum's layout or a cert-manager CA Secret's."""
        if not directory.is_dir():
            raise CaError(f"{directory} is not a directory: {_LAYOUTS}")
        cert_manager = (directory / "tls.crt").exists() or (directory / "tls.key").exists()
        cert_file, key_file = (
            (directory / "tls.crt", directory / "tls.key")
            if cert_manager
            else (directory / "ca.crt", directory / "ca.key")
        )
        for path in (cert_file, key_file):
            if not path.exists():
                raise CaError(f"{path} is missing: {_LAYOUTS}")
        now = datetime.now(UTC)
        key = _private_key(key_file)
        certificates = _certificates(cert_file)
        signer = certificates[0]
        _check_authority(cert_file, signer, now)
        if _spki(key.public_key()) != _spki(signer.public_key()):
            raise CaError(f"{key_file} is not the key of {_name(signer)} in {cert_file}")
        _check_trust_domain(cert_file, signer, trust_domain)
        if not cert_manager:
            if not issued_by(signer, signer):
                raise CaError(
                    f"{cert_file} is not self-signed: put an intermediate CA in tls.crt and "
                    "tls.key, with its root in ca.crt"
                )
            return cls(trust_domain, key, signer, roots=certificates)
        chain = [c for c in certificates if not issued_by(c, c)]  # tls.crt may end in the root
        if not chain:
            return cls(trust_domain, key, signer)
        for lower, upper in itertools.pairwise(chain):
            _check_authority(cert_file, upper, now)
            if not issued_by(lower, upper):
                raise CaError(f"{cert_file}: {_name(lower)} is not issued by {_name(upper)}")
            if (site := zone_site(upper)) is not None:
                raise CaError(
                    f"{cert_file}: {_name(lower)} is issued by the zone CA of site {site}, "
                    "which signs no further CA (pathlen 0)"
                )
        return cls(trust_domain, key, signer, chain[1:], _roots_of(directory, chain[-1], now))

    def save(self, directory: Path) -> None:
        """Write `ca.crt` and `ca.key` (owner-only) into `directory`; never overwrite a key."""
        if self._chain:
            raise CaError(
                f"this CA is an intermediate of {_name(self._roots[0])}: it stays where its "
                "issuer keeps it (a cert-manager Secret), kontinuum saves only its own root"
            )
        key_file = directory / "ca.key"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # an existing directory too: nobody else lists the key
        key_pem = self._signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CaError(f"{key_file} exists: refusing to overwrite a CA key") from None
        except OSError as error:
            raise CaError(f"cannot create {key_file}: {error.strerror}") from None
        with os.fdopen(descriptor, "wb") as out:
            out.write(key_pem)
        cert_file = directory / "ca.crt"
        cert_file.write_bytes(self.trust_bundle_pem)
        cert_file.chmod(0o644)

    @property
    def not_after(self) -> datetime:
        """When this CA can issue no more: the earliest end of its signer's chain."""
        return self._expires

    @property
    def trust_domain(self) -> str:
        return self._td

    @property
    def site(self) -> str | None:
        """The site this CA is limited to when it is a zone's intermediate; None for the
        fleet's CA."""
        return self._site

    @property
    def trust_bundle_pem(self) -> bytes:
        """The root certificate(s) peers trust."""
        return b"".join(_pem(root) for root in self._roots)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._roots[0]

    @property
    def public_key(self) -> CaPublicKey:
        """The public half of the signing key: what checks a bootstrap token."""
        return self._signing_key.public_key()

    def issue_workload(
        self,
        spiffe_id: SpiffeId,
        cluster: str | None,
        validity: timedelta,
        *,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """The X.509-SVID of a workload; `cluster` goes into its subject OU."""
        return self._issue(spiffe_id, cluster, [], validity, utc(now), server=False)

    def issue_server(
        self,
        spiffe_id: SpiffeId,
        hosts: Sequence[str],
        validity: timedelta,
        *,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """An X.509-SVID that also names the hosts (DNS names or IP addresses) it serves, so
        clients that verify a server by its address accept it."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            if refusal := self.host_refusal(host):
                raise CaError(refusal)
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                if problem := dns_subdomain(host):
                    raise ValueError(f"host {problem}") from None
                names.append(x509.DNSName(host))
        return self._issue(spiffe_id, None, names, validity, utc(now), server=True)

    def host_refusal(self, host: str) -> str | None:
        """Why a server certificate of this CA may not name `host`, or None: the name
        constraints of its chain (a zone CA's `--dns-name`) would fail it in every TLS
        handshake."""
        for certificate in self._chain:
            if refusal := host_refusal(certificate, host):
                site = zone_site(certificate)
                who = _name(certificate) if site is None else f"the zone CA of site {site}"
                return f"{who} may not name {host}: {refusal}"
        return None

    def _issue(
        self,
        spiffe_id: SpiffeId,
        cluster: str | None,
        hosts: list[x509.GeneralName],
        validity: timedelta,
        now: datetime,
        *,
        server: bool,
    ) -> IssuedCertificate:
        if spiffe_id.trust_domain != self._td:
            raise CaError(f"{spiffe_id} is not of trust domain {self._td}, which this CA signs")
        if validity <= timedelta(0):
            raise ValueError(f"a certificate validity of {validity} is not positive")
        if cluster is not None and not 0 < len(cluster) <= _MAX_OU:
            raise ValueError(f"cluster {cluster!r} must be 1 to {_MAX_OU} characters long")
        if self._site is not None and is_control_plane(spiffe_id):
            raise CaError(
                f"the zone CA of site {self._site} does not issue the control plane's identity "
                f"{spiffe_id}: its xDS server presents {zone_identity(self._td, self._site)}"
            )
        if refusal := issuance_refusal(spiffe_id, cluster, self._site, server):
            raise CaError(refusal)
        if self._site is not None and cluster not in (None, self._site):
            raise CaError(
                f"the zone CA of site {self._site} issues certificates of cluster "
                f"{self._site} only, not {cluster}"
            )
        if not self._starts <= now < self._expires:
            raise CaError(f"the CA is valid from {self._starts} until {self._expires}, not {now}")
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._td)]
        if cluster is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster))
        subject = x509.Name(attributes)
        names = [x509.UniformResourceIdentifier(str(spiffe_id)), *hosts]
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        leaf = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._signer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(max(now - CLOCK_SKEW, self._starts))
            .not_valid_after(min(now + validity, self._expires))
            # X.509-SVID: the SAN is critical exactly when the subject is empty
            .add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._signing_key, hashes.SHA256())
        )
        return self._issued(spiffe_id, cluster, leaf, key, now)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        own = _extension(self._signer, x509.SubjectKeyIdentifier)
        if own is None:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.public_key)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(own)

    def issue_zone_ca(
        self,
        site: str,
        validity: timedelta,
        *,
        dns_names: Sequence[str] = (),
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """An intermediate CA for `site`'s zone, limited to its site
        (`kontinuum.security.zone_ca`) and, with `dns_names`, to naming those hosts (and
        their subdomains) in server certificates; its chain leads to this CA's roots."""
        if self._site is not None:
            raise CaError(
                f"this is the zone CA of site {self._site}: it signs no further CA (pathlen 0); "
                "issue the intermediate with the fleet's CA"
            )
        if validity <= timedelta(0):
            raise ValueError(f"a CA validity of {validity} is not positive")
        for name in dns_names:
            if problem := dns_subdomain(name):
                raise ValueError(f"the DNS name {problem}")
        moment = utc(now)
        if not self._starts <= moment < self._expires:
            raise CaError(
                f"the CA is valid from {self._starts} until {self._expires}, not {moment}"
            )
        identity = zone_identity(self._td, site)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = zone_ca_certificate(
            identity,
            site,
            key.public_key(),
            self._signer,
            self._signing_key,
            # Early, so that what the zone issues right away can start early too.
            max(moment - ROOT_BACKDATE, self._starts),
            min(moment + validity, self._expires),
            tuple(dict.fromkeys(dns_names)),
        )
        return self._issued(identity, site, certificate, key, moment)

    def _issued(
        self,
        spiffe_id: SpiffeId,
        cluster: str | None,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        now: datetime,
    ) -> IssuedCertificate:
        """`certificate` with its chain up to (not including) the roots, and its key."""
        return IssuedCertificate(
            spiffe_id=spiffe_id,
            cluster=cluster,
            certificate_chain_pem=_pem(certificate) + b"".join(_pem(c) for c in self._chain),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            issued_at=now,
        )

    def issuing_site(
        self, certificate_chain_pem: bytes, *, now: datetime | None = None
    ) -> str | None:
        """Who issued the (first) certificate of a chain: the fleet's CA (None), or the zone
        CA of a site (the site), which the fleet's CA issued and which issued the leaf
        directly; CaError when neither did.

        The TLS handshake trusts the roots; with a root shared beyond the mesh (a corporate
        PKI, a cert-manager ClusterIssuer), other CAs under it could issue SPIFFE IDs of
        this trust domain too. Only the fleet CA's and its zones' are the fleet's.
        """
        try:
            leaf, *presented = x509.load_pem_x509_certificates(certificate_chain_pem)
        except ValueError:
            raise CaError("not a PEM certificate") from None
        own = [self._signer] if self._site is not None else []
        try:
            return leaf_issuing_site(leaf, [*presented, *own], self._fleet_signer, utc(now))
        except ValueError as error:
            raise CaError(str(error)) from None

    def verify(self, certificate_chain_pem: bytes, *, now: datetime | None = None) -> PeerIdentity:
        """Who a certificate chain (leaf first) names, if it chains to this CA's roots and is
        valid `now`; CaError saying why not. TLS handshakes verify on their own (gRPC): this
        is for checks outside one."""
        try:
            leaf, *intermediates = x509.load_pem_x509_certificates(certificate_chain_pem)
        except ValueError as error:
            raise CaError(f"not a PEM certificate chain: {error}") from None
        verifier = (
            PolicyBuilder().store(Store(list(self._roots))).time(utc(now)).build_client_verifier()
        )
        try:
            path = verifier.verify(leaf, intermediates).chain
        except VerificationError as error:
            raise CaError(f"certificate refused by the {self._td} CA: {error}") from None
        try:
            identity = _identity(leaf, self._td)
        except ValueError as error:
            raise CaError(str(error)) from None
        # The path the verifier built holds up to the roots (pathlen included): a zone CA
        # that issued the leaf limits it to its site. Its issuer is read from that path, not
        # from the certificates presented: a presented one with the same subject and key (a
        # zone's key can make one naming any site) would otherwise speak for it.
        site = zone_site(path[1]) if len(path) > 1 else None
        return PeerIdentity(identity.spiffe_id, identity.cluster, identity.expires, site)


def _roots_of(directory: Path, top: x509.Certificate, now: datetime) -> list[x509.Certificate]:
    """The roots in ca.crt, the one that issued `top` (an intermediate's chain) first."""
    roots_file = directory / "ca.crt"
    if not roots_file.exists():
        raise CaError(f"{roots_file} is missing: it holds the root of {_name(top)}")
    roots = _certificates(roots_file)
    issuer = next((root for root in roots if issued_by(top, root)), None)
    if issuer is None:
        raise CaError(
            f"the issuer of {_name(top)} ({top.issuer.rfc4514_string()}) is not in {roots_file}"
        )
    _check_authority(roots_file, issuer, now)
    return [issuer, *(root for root in roots if root != issuer)]


def _identity(certificate: x509.Certificate, trust_domain: str) -> PeerIdentity:
    if _extension(certificate, x509.SubjectAlternativeName) is None:
        raise ValueError(
            f"certificate {_name(certificate)!r} has no subject alternative name: an X.509-SVID "
            "names its SPIFFE ID in a URI SAN"
        )
    uris = _uris(certificate)
    if len(uris) != 1:
        raise ValueError(
            f"certificate has {len(uris)} URI SANs ({', '.join(uris) or 'none'}): an X.509-SVID "
            "has exactly one, its SPIFFE ID"
        )
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except ValueError as error:
        raise ValueError(f"certificate URI SAN {error}") from None
    if spiffe_id.trust_domain != trust_domain:
        raise ValueError(
            f"certificate of trust domain {spiffe_id.trust_domain}, "
            f"this fleet trusts {trust_domain}"
        )
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(units) > 1:
        raise ValueError(f"certificate {_name(certificate)!r} names more than one cluster (OU)")
    cluster = str(units[0].value) if units else None
    return PeerIdentity(spiffe_id, cluster, certificate.not_valid_after_utc)


def identity_of(certificate_pem: bytes, trust_domain: str) -> PeerIdentity:
    """Who the first certificate of a PEM names (its SPIFFE ID and the cluster in its OU);
    ValueError saying why when it names no workload of `trust_domain`. Checks no signature:
    use it on a certificate the TLS handshake (or `CertificateAuthority.verify`) accepted."""
    try:
        certificates = x509.load_pem_x509_certificates(certificate_pem)
    except ValueError as error:
        raise ValueError(f"not a PEM certificate: {error}") from None
    return _identity(certificates[0], trust_domain)
