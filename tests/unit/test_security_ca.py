"""The fleet CA, with real cryptography: what it issues, what it loads and what it refuses."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kontinuum.control.translate.tls import spiffe_prefix
from kontinuum.security.ca import (
    CaError,
    CaKey,
    CertificateAuthority,
    PeerIdentity,
    identity_of,
)
from kontinuum.security.spiffe import SpiffeId

TD = "fleet.example"
WEB = SpiffeId(TD, "shop", "web")
NOW = datetime.now(UTC).replace(microsecond=0)
T = TypeVar("T", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate(TD)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TD),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    key: CaKey,
    subject: x509.Name,
    *,
    issuer: tuple[x509.Certificate, CaKey] | None = None,
    ca: bool = True,
    cert_sign: bool | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=30),
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A certificate built by hand, to give the CA what it should accept or refuse."""
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=ca if cert_sign is None else cert_sign), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), False
        )
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600 if name.endswith(".key") else 0o644)
    return directory


def _chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _extension(certificate: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return certificate.extensions.get_extension_for_class(kind)


# SPIFFE IDs


def test_spiffe_id_prints_and_parses_back() -> None:
    assert str(WEB) == "spiffe://fleet.example/ns/shop/sa/web"
    assert SpiffeId.parse(str(WEB)) == WEB


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("https://fleet.example/ns/shop/sa/web", "not a spiffe:// URI"),
        ("spiffe://Fleet.Example/ns/shop/sa/web", "is not a valid DNS name"),
        ("spiffe://fleet.example", "path must be /ns/<namespace>/sa/<service-account>"),
        ("spiffe://fleet.example/ns/shop/web", "path must be /ns/<namespace>/sa/<service-account>"),
        ("spiffe://fleet.example/ns/shop/sa/web/x", "path must be"),
        ("spiffe://fleet.example/ns/Shop/sa/web", "namespace must be a DNS label"),
        ("spiffe://fleet.example/ns/shop/sa/web_1", "service account must be a DNS label"),
    ],
)
def test_spiffe_id_parse_says_why_it_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="spiffe") as caught:
        SpiffeId.parse(text)
    assert reason in str(caught.value)


def test_workspace_prefix_matches_only_its_namespace() -> None:
    prefix = spiffe_prefix(TD, "shop")
    assert prefix == "spiffe://fleet.example/ns/shop/sa/"
    assert str(WEB).startswith(prefix)
    assert not str(SpiffeId(TD, "shopping", "web")).startswith(prefix)


# generate and issue


def test_generated_root_is_a_self_signed_p256_ca_of_its_trust_domain(
    ca: CertificateAuthority,
) -> None:
    root = ca.root_certificate
    assert root.subject == _name("kontinuum root CA")
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    constraints = _extension(root, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = _extension(root, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert _extension(root, x509.SubjectKeyIdentifier).value.digest
    uris = _extension(root, x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://fleet.example"]
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert _chain(ca.trust_bundle_pem) == [root]


def test_workload_certificate_is_an_x509_svid(ca: CertificateAuthority) -> None:
    issued = ca.issue_workload(WEB, "east", timedelta(hours=1), now=NOW)
    (leaf,) = _chain(issued.certificate_chain_pem)  # the root is never in the chain
    san = _extension(leaf, x509.SubjectAlternativeName)
    assert [str(WEB)] == san.value.get_values_for_type(x509.UniformResourceIdentifier)
    assert len(list(san.value)) == 1
    assert not san.critical  # the subject is not empty
    constraints = _extension(leaf, x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = _extension(leaf, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert list(_extension(leaf, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert (
        _extension(leaf, x509.AuthorityKeyIdentifier).value.key_identifier
        == _extension(ca.root_certificate, x509.SubjectKeyIdentifier).value.digest
    )
    assert leaf.subject.rfc4514_string() == "OU=east,O=fleet.example"
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert leaf.not_valid_before_utc == issued.not_before == NOW - timedelta(seconds=60)
    assert leaf.not_valid_after_utc == issued.not_after == NOW + timedelta(hours=1)
    key = serialization.load_pem_private_key(issued.private_key_pem, password=None)
    assert _pem_public(key.public_key()) == _pem_public(leaf.public_key())
    assert ca.verify(issued.certificate_chain_pem, now=NOW) == PeerIdentity(WEB, "east")


def _pem_public(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_workload_certificate_without_a_cluster_has_no_ou(ca: CertificateAuthority) -> None:
    issued = ca.issue_workload(WEB, None, timedelta(hours=1))
    (leaf,) = _chain(issued.certificate_chain_pem)
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) == []
    assert identity_of(issued.certificate_chain_pem, TD) == PeerIdentity(WEB, None)


def test_each_certificate_has_its_own_key(ca: CertificateAuthority) -> None:
    first = ca.issue_workload(WEB, "east", timedelta(hours=1))
    second = ca.issue_workload(WEB, "east", timedelta(hours=1))
    assert first.private_key_pem != second.private_key_pem


def test_certificate_never_outlives_its_ca() -> None:
    short = CertificateAuthority.generate(TD, validity=timedelta(hours=2))
    issued = short.issue_workload(WEB, "east", timedelta(days=1))
    assert issued.not_after == short.root_certificate.not_valid_after_utc
    assert issued.not_before >= short.root_certificate.not_valid_before_utc


def test_ca_signs_only_its_own_trust_domain(ca: CertificateAuthority) -> None:
    with pytest.raises(CaError, match=r"other\.example"):
        ca.issue_workload(SpiffeId("other.example", "shop", "web"), "east", timedelta(hours=1))


def test_ca_refuses_to_issue_after_it_expired(ca: CertificateAuthority) -> None:
    later = ca.root_certificate.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(CaError, match="valid from"):
        ca.issue_workload(WEB, "east", timedelta(hours=1), now=later)


def test_renewal_is_due_at_a_fraction_of_the_lifetime(ca: CertificateAuthority) -> None:
    issued = ca.issue_workload(WEB, "east", timedelta(hours=2), now=NOW)
    assert issued.renew_at() == NOW + timedelta(hours=1)
    assert issued.renew_at(0.75) == NOW + timedelta(hours=1, minutes=30)


def test_renewal_of_a_short_lived_certificate_ignores_the_backdating(
    ca: CertificateAuthority,
) -> None:
    """A 4 s certificate starts 60 s early for slow clocks; it is renewed 2 s after issue,
    not at once (half of the 64 s it is nominally valid would already be over)."""
    issued = ca.issue_workload(WEB, "east", timedelta(seconds=4), now=NOW)
    assert issued.not_before == NOW - timedelta(seconds=60)
    assert issued.renew_at() == NOW + timedelta(seconds=2)


def test_issued_certificate_repr_shows_no_key(ca: CertificateAuthority) -> None:
    issued = ca.issue_workload(WEB, "east", timedelta(hours=1))
    key_body = issued.private_key_pem.splitlines()[1].decode()
    shown = repr(issued) + str(issued) + repr(ca)
    assert "PRIVATE KEY" not in shown
    assert key_body not in shown
    assert "private_key_pem" not in shown


def test_server_certificate_names_its_hosts(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(WEB, ["kontinuum.example", "127.0.0.1", "::1"], timedelta(hours=1))
    san = _extension(_chain(issued.certificate_chain_pem)[0], x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(WEB)]
    assert san.get_values_for_type(x509.DNSName) == ["kontinuum.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert ca.verify(issued.certificate_chain_pem) == PeerIdentity(WEB, None)


def test_server_certificate_refuses_a_host_that_is_no_name(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="host must be a DNS subdomain"):
        ca.issue_server(WEB, ["not a host"], timedelta(hours=1))


# verify and identity_of


def test_verify_refuses_a_certificate_of_another_ca(ca: CertificateAuthority) -> None:
    stranger = CertificateAuthority.generate(TD).issue_workload(WEB, "east", timedelta(hours=1))
    with pytest.raises(CaError, match=r"refused by the fleet\.example CA"):
        ca.verify(stranger.certificate_chain_pem)


def test_verify_refuses_an_expired_certificate(ca: CertificateAuthority) -> None:
    issued = ca.issue_workload(WEB, "east", timedelta(hours=1), now=NOW)
    assert (
        ca.verify(issued.certificate_chain_pem, now=NOW + timedelta(minutes=59)).cluster == "east"
    )
    with pytest.raises(CaError, match="refused"):
        ca.verify(issued.certificate_chain_pem, now=NOW + timedelta(hours=1, seconds=1))


def _leaf_pem(
    ca_key: CaKey, root: x509.Certificate, sans: list[x509.GeneralName] | None, *units: str
) -> bytes:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, TD)]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
    )
    return _pem(_certificate(_ec(), subject, issuer=(root, ca_key), ca=False, sans=sans))


def _uri(text: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(text)


def test_identity_of_reads_the_first_certificate_of_a_chain() -> None:
    key = _ec()
    root = _certificate(key, _name("root"))
    pem = _leaf_pem(key, root, [_uri(str(WEB)), x509.DNSName("web.shop")], "west")
    assert identity_of(pem + _pem(root), TD) == PeerIdentity(WEB, "west")


@pytest.mark.parametrize(
    ("sans", "units", "reason"),
    [
        (None, (), "has no subject alternative name"),
        ([x509.DNSName("web.shop")], (), "has 0 URI SANs"),
        ([_uri(str(WEB)), _uri("spiffe://fleet.example/ns/shop/sa/db")], (), "has 2 URI SANs"),
        ([_uri("spiffe://fleet.example/web")], (), "path must be /ns/<namespace>/sa/"),
        ([_uri("spiffe://other.example/ns/shop/sa/web")], (), "this fleet trusts fleet.example"),
        ([_uri(str(WEB))], ("east", "west"), "more than one cluster"),
    ],
)
def test_identity_of_refuses_what_is_no_svid_of_the_fleet(
    sans: list[x509.GeneralName] | None, units: tuple[str, ...], reason: str
) -> None:
    key = _ec()
    pem = _leaf_pem(key, _certificate(key, _name("root")), sans, *units)
    with pytest.raises(ValueError, match="certificate") as caught:
        identity_of(pem, TD)
    assert reason in str(caught.value)


def test_verify_refuses_a_chained_certificate_naming_no_spiffe_id() -> None:
    key = _ec()
    root = _certificate(key, _name("root"))
    authority = CertificateAuthority(TD, key, root)
    pem = _leaf_pem(key, root, [x509.DNSName("web.shop")])
    with pytest.raises(CaError, match="URI SAN"):
        authority.verify(pem)


# save and load


def test_save_and_load_round_trip_with_owner_only_modes(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    directory = tmp_path / "ca"
    ca.save(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "ca.crt").stat().st_mode) == 0o644
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(directory, TD)
    assert loaded.trust_bundle_pem == ca.trust_bundle_pem
    issued = loaded.issue_workload(WEB, "east", timedelta(hours=1))
    assert ca.verify(issued.certificate_chain_pem) == PeerIdentity(WEB, "east")


def test_save_never_overwrites_a_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.save(tmp_path)
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(CaError, match=r"ca\.key exists"):
        CertificateAuthority.generate(TD).save(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == before


def test_load_refuses_a_key_others_may_read(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.save(tmp_path)
    (tmp_path / "ca.key").chmod(0o644)
    with pytest.raises(CaError) as caught:
        CertificateAuthority.load(tmp_path, TD)
    assert (
        str(caught.value)
        == f"{tmp_path / 'ca.key'} may be read by others or changed by its group (mode 0644): "
        "chmod 600 it"
    )


@pytest.mark.parametrize("mode", [0o604, 0o620, 0o660, 0o640 | 0o001])
def test_load_refuses_a_key_others_may_read_or_its_group_change(
    ca: CertificateAuthority, tmp_path: Path, mode: int
) -> None:
    ca.save(tmp_path)
    (tmp_path / "ca.key").chmod(mode)
    with pytest.raises(CaError, match="chmod 600"):
        CertificateAuthority.load(tmp_path, TD)


@pytest.mark.parametrize("mode", [0o400, 0o440, 0o640])
def test_load_accepts_a_key_its_group_may_read(
    ca: CertificateAuthority, tmp_path: Path, mode: int
) -> None:
    """A Kubernetes Secret mounted for a non-root container (fsGroup) is group-readable."""
    ca.save(tmp_path)
    (tmp_path / "ca.key").chmod(mode)
    assert CertificateAuthority.load(tmp_path, TD).trust_bundle_pem == ca.trust_bundle_pem


def test_load_names_the_missing_file(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.save(tmp_path)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(CaError, match=rf"{tmp_path / 'ca.key'} is missing"):
        CertificateAuthority.load(tmp_path, TD)


def test_load_refuses_what_is_no_pem(tmp_path: Path) -> None:
    _write(tmp_path, {"ca.crt": b"not a certificate\n", "ca.key": _key_pem(_ec())})
    with pytest.raises(CaError, match=rf"{tmp_path / 'ca.crt'} holds no PEM certificate"):
        CertificateAuthority.load(tmp_path, TD)


def test_load_refuses_a_key_of_another_certificate(tmp_path: Path) -> None:
    key = _ec()
    _write(tmp_path, {"ca.crt": _pem(_certificate(key, _name("root"))), "ca.key": _key_pem(_ec())})
    with pytest.raises(CaError, match=r"ca\.key is not the key of .*root"):
        CertificateAuthority.load(tmp_path, TD)


@pytest.mark.parametrize(
    ("ca_flag", "cert_sign", "reason"),
    [(False, False, "is not a CA"), (True, False, "may not sign certificates")],
)
def test_load_refuses_a_certificate_that_is_no_ca(
    tmp_path: Path, *, ca_flag: bool, cert_sign: bool, reason: str
) -> None:
    key = _ec()
    certificate = _certificate(key, _name("web"), ca=ca_flag, cert_sign=cert_sign)
    _write(tmp_path, {"ca.crt": _pem(certificate), "ca.key": _key_pem(key)})
    with pytest.raises(CaError, match=reason):
        CertificateAuthority.load(tmp_path, TD)


@pytest.mark.parametrize(
    ("not_before", "not_after", "reason"),
    [
        (NOW - timedelta(days=30), NOW - timedelta(days=1), "expired at"),
        (NOW + timedelta(days=1), NOW + timedelta(days=30), "is not valid before"),
    ],
)
def test_load_refuses_a_ca_out_of_its_validity(
    tmp_path: Path, not_before: datetime, not_after: datetime, reason: str
) -> None:
    key = _ec()
    root = _certificate(key, _name("root"), not_before=not_before, not_after=not_after)
    _write(tmp_path, {"ca.crt": _pem(root), "ca.key": _key_pem(key)})
    with pytest.raises(CaError, match=reason) as caught:
        CertificateAuthority.load(tmp_path, TD)
    edge = not_after if reason == "expired at" else not_before
    assert str(edge) in str(caught.value)


def test_load_refuses_a_ca_of_another_trust_domain(tmp_path: Path) -> None:
    CertificateAuthority.generate("other.example").save(tmp_path)
    with pytest.raises(CaError, match=r"trust domain other\.example, not fleet\.example"):
        CertificateAuthority.load(tmp_path, TD)


def test_rsa_ca_issues_certificates_that_verify(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(
        tmp_path, {"ca.crt": _pem(_certificate(key, _name("rsa root"))), "ca.key": _key_pem(key)}
    )
    authority = CertificateAuthority.load(tmp_path, TD)
    issued = authority.issue_workload(WEB, "east", timedelta(hours=1))
    assert authority.verify(issued.certificate_chain_pem) == PeerIdentity(WEB, "east")


def _intermediate(root_key: CaKey, root: x509.Certificate) -> tuple[CaKey, x509.Certificate]:
    key = _ec()
    return key, _certificate(key, _name("intermediate"), issuer=(root, root_key))


def test_cert_manager_intermediate_issues_chains_that_verify_to_the_root(tmp_path: Path) -> None:
    root_key = _ec()
    root = _certificate(root_key, _name("root"))
    key, intermediate = _intermediate(root_key, root)
    _write(
        tmp_path, {"tls.crt": _pem(intermediate), "tls.key": _key_pem(key), "ca.crt": _pem(root)}
    )
    authority = CertificateAuthority.load(tmp_path, TD)
    assert authority.root_certificate == root
    assert authority.trust_bundle_pem == _pem(root)
    issued = authority.issue_workload(WEB, "east", timedelta(hours=1))
    leaf, second = _chain(issued.certificate_chain_pem)
    assert second == intermediate
    leaf.verify_directly_issued_by(intermediate)
    assert authority.verify(issued.certificate_chain_pem) == PeerIdentity(WEB, "east")
    # the chain (not the CA object) is what proves it: a CA that only has the root agrees
    only_root = CertificateAuthority(TD, root_key, root)
    assert only_root.verify(issued.certificate_chain_pem) == PeerIdentity(WEB, "east")
    with pytest.raises(CaError, match="intermediate"):
        authority.save(tmp_path / "copy")


def test_cert_manager_self_signed_ca_secret_loads(tmp_path: Path) -> None:
    key = _ec()
    root = _certificate(key, _name("root"))
    _write(tmp_path, {"tls.crt": _pem(root), "tls.key": _key_pem(key), "ca.crt": _pem(root)})
    authority = CertificateAuthority.load(tmp_path, TD)
    issued = authority.issue_workload(WEB, None, timedelta(hours=1))
    assert len(_chain(issued.certificate_chain_pem)) == 1
    assert authority.verify(issued.certificate_chain_pem) == PeerIdentity(WEB, None)


def test_cert_manager_intermediate_needs_its_issuer_in_ca_crt(tmp_path: Path) -> None:
    root_key = _ec()
    key, intermediate = _intermediate(root_key, _certificate(root_key, _name("root")))
    other_key = _ec()
    _write(
        tmp_path,
        {
            "tls.crt": _pem(intermediate),
            "tls.key": _key_pem(key),
            "ca.crt": _pem(_certificate(other_key, _name("root"))),  # same name, other key
        },
    )
    with pytest.raises(CaError, match=rf"is not in {tmp_path / 'ca.crt'}"):
        CertificateAuthority.load(tmp_path, TD)
    (tmp_path / "ca.crt").unlink()
    with pytest.raises(CaError, match=rf"{tmp_path / 'ca.crt'} is missing"):
        CertificateAuthority.load(tmp_path, TD)


def test_cert_manager_intermediate_of_an_expired_root_is_refused(tmp_path: Path) -> None:
    root_key = _ec()
    root = _certificate(root_key, _name("root"), not_after=NOW - timedelta(hours=1))
    key, intermediate = _intermediate(root_key, root)
    _write(
        tmp_path, {"tls.crt": _pem(intermediate), "tls.key": _key_pem(key), "ca.crt": _pem(root)}
    )
    with pytest.raises(CaError, match=rf"{tmp_path / 'ca.crt'}: .*root.* expired at"):
        CertificateAuthority.load(tmp_path, TD)
