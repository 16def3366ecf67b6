"""A zone's intermediate CA in tests, and what a compromised zone signs with its key by hand
(past the checks `CertificateAuthority` makes when it issues)."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kontinuum.security.ca import CertificateAuthority, IssuedCertificate
from kontinuum.security.spiffe import SpiffeId


def zone_authority(
    ca: CertificateAuthority, site: str, dns_names: tuple[str, ...] = ()
) -> tuple[CertificateAuthority, Path]:
    """`site`'s intermediate CA, issued by `ca` (with `dns_names`, limited to naming those
    hosts), as `kontinuum zone --ca-dir` loads it (the directory is a temporary one of its
    own)."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix=f"zone-ca-{site}-"))
    issued = ca.issue_zone_ca(site, timedelta(days=1), dns_names=dns_names)
    write_zone_ca(issued, ca, directory)
    return CertificateAuthority.load(directory, ca.trust_domain), directory


def write_zone_ca(issued: IssuedCertificate, ca: CertificateAuthority, directory: Path) -> None:
    """The layout `kontinuum ca intermediate` writes."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(issued.certificate_chain_pem)
    (directory / "ca.crt").write_bytes(ca.trust_bundle_pem)
    key = directory / "tls.key"
    key.write_bytes(issued.private_key_pem)
    os.chmod(key, 0o600)


def minted(
    signer_dir: Path,
    identity: SpiffeId,
    cluster: str | None,
    *,
    ca: bool = False,
    hosts: tuple[str, ...] = (),
) -> tuple[bytes, bytes]:
    """A certificate (its chain, then its key, as PEM) signed by hand with the key in
    `signer_dir` (a zone's CA directory, or the fleet CA's): a leaf of `cluster` (None: no
    OU, as a server's) naming `hosts` too (DNS names or IP addresses), or with `ca` a CA
    below it."""
    # A zone's CA directory (tls.*), or the fleet's own (ca.*, `CertificateAuthority.save`).
    certificate_file, key_file = (
        ("tls.crt", "tls.key") if (signer_dir / "tls.crt").exists() else ("ca.crt", "ca.key")
    )
    signer_chain = x509.load_pem_x509_certificates((signer_dir / certificate_file).read_bytes())
    signer_key = serialization.load_pem_private_key(
        (signer_dir / key_file).read_bytes(), password=None
    )
    assert isinstance(signer_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.trust_domain)]
    if cluster is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster))
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(identity))]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(signer_chain[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    certificate = builder.sign(signer_key, hashes.SHA256())
    chain = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *signer_chain)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return chain, key_pem
