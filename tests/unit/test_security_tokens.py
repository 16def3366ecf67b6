"""Bootstrap tokens, signed and checked with real keys: what is accepted and what is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kontinuum.security.ca import CaError, CaKey, CertificateAuthority, PeerIdentity
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.tokens import issue_token, verify_token

TD = "fleet.example"
WEB = SpiffeId(TD, "shop", "web")
NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


def _authority(key: CaKey) -> CertificateAuthority:
    """A CA whose key the test holds, to sign tokens the CA itself would never issue."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(TD, key, root)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ca(key: ec.EllipticCurvePrivateKey) -> CertificateAuthority:
    return _authority(key)


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "kontinuum",
        "aud": "kontinuum-xds",
        "sub": str(WEB),
        "kontinuum.io/cluster": "east",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + HOUR).timestamp()),
        "jti": "j1",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value).encode())


def test_token_round_trip(ca: CertificateAuthority) -> None:
    token = issue_token(ca, WEB, "east", HOUR, now=NOW)
    assert verify_token(ca, token, now=NOW + timedelta(minutes=5)) == PeerIdentity(WEB, "east")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "kontinuum"
    assert claims["aud"] == "kontinuum-xds"
    assert claims["sub"] == "spiffe://fleet.example/ns/shop/sa/web"
    assert claims["kontinuum.io/cluster"] == "east"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == int(NOW.timestamp())


def test_each_token_has_its_own_id(ca: CertificateAuthority) -> None:
    ids = {
        jwt.decode(issue_token(ca, WEB, "east", HOUR), options={"verify_signature": False})["jti"]
        for _ in range(3)
    }
    assert len(ids) == 3


def test_expired_token_is_refused_after_the_leeway(ca: CertificateAuthority) -> None:
    token = issue_token(ca, WEB, "east", HOUR, now=NOW)
    expiry = NOW + HOUR
    assert verify_token(ca, token, now=expiry + timedelta(seconds=29)).cluster == "east"
    with pytest.raises(ValueError, match="token expired at") as caught:
        verify_token(ca, token, now=expiry + timedelta(seconds=31))
    assert expiry.isoformat() in str(caught.value)


def test_token_from_the_future_is_refused(ca: CertificateAuthority) -> None:
    token = issue_token(ca, WEB, "east", HOUR, now=NOW + timedelta(minutes=5))
    with pytest.raises(ValueError, match="issued in the future"):
        verify_token(ca, token, now=NOW)


def test_tampered_payload_is_refused(ca: CertificateAuthority) -> None:
    header, _, signature = issue_token(ca, WEB, "east", HOUR, now=NOW).split(".")
    forged = f"{header}.{_segment(_claims(**{'kontinuum.io/cluster': 'west'}))}.{signature}"
    with pytest.raises(ValueError, match="not signed by this fleet's CA"):
        verify_token(ca, forged, now=NOW)


def test_token_of_another_ca_is_refused(ca: CertificateAuthority) -> None:
    stranger = CertificateAuthority.generate(TD)
    token = issue_token(stranger, WEB, "east", HOUR, now=NOW)
    assert verify_token(stranger, token, now=NOW) == PeerIdentity(WEB, "east")
    with pytest.raises(ValueError, match="not signed by this fleet's CA"):
        verify_token(ca, token, now=NOW)


def test_unsigned_token_is_refused(ca: CertificateAuthority) -> None:
    forged = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."
    with pytest.raises(ValueError, match="signed with 'none'"):
        verify_token(ca, forged, now=NOW)


def test_hmac_token_keyed_with_the_public_key_is_refused(ca: CertificateAuthority) -> None:
    public = ca.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(_claims())}"
    mac = hmac.new(public, signed.encode(), hashlib.sha256).digest()
    with pytest.raises(ValueError, match="signed with 'HS256'"):
        verify_token(ca, f"{signed}.{_b64(mac)}", now=NOW)


def test_rsa_ca_signs_rs256() -> None:
    authority = _authority(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    token = issue_token(authority, WEB, "east", HOUR)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert verify_token(authority, token) == PeerIdentity(WEB, "east")


def test_ca_key_without_a_token_algorithm_is_refused() -> None:
    authority = _authority(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(CaError, match="secp384r1"):
        issue_token(authority, WEB, "east", HOUR)
    with pytest.raises(ValueError, match="signs no tokens"):
        verify_token(authority, "a.b.c")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "someone-else"}, "not meant for kontinuum-xds"),
        ({"iss": "someone-else"}, "not issued by kontinuum"),
        ({"sub": "web"}, "subject is not a SPIFFE ID: 'web' is not a spiffe:// URI"),
        ({"sub": "spiffe://other.example/ns/shop/sa/web"}, "this fleet trusts fleet.example"),
        ({"kontinuum.io/cluster": None}, "names no cluster"),
        ({"kontinuum.io/cluster": ""}, "names no cluster"),
        ({"exp": None}, "no 'exp' claim"),
        ({"aud": None}, "no 'aud' claim"),
        ({"exp": "tomorrow"}, "claim 'exp' is not a time"),
    ],
)
def test_token_claims_are_checked(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey, changes: dict[str, Any], reason: str
) -> None:
    token = jwt.encode(_claims(**changes), key, algorithm="ES256")
    with pytest.raises(ValueError, match="token") as caught:
        verify_token(ca, token, now=NOW)
    assert reason in str(caught.value)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b"])
def test_malformed_token_is_refused(ca: CertificateAuthority, token: str) -> None:
    with pytest.raises(ValueError, match="malformed token"):
        verify_token(ca, token)


@pytest.mark.parametrize("validity", [timedelta(0), timedelta(days=30, seconds=1)])
def test_token_validity_is_bounded(ca: CertificateAuthority, validity: timedelta) -> None:
    with pytest.raises(ValueError, match="token validity"):
        issue_token(ca, WEB, "east", validity)


def test_longest_token_lasts_thirty_days(ca: CertificateAuthority) -> None:
    token = issue_token(ca, WEB, "east", timedelta(days=30), now=NOW)
    assert verify_token(ca, token, now=NOW + timedelta(days=29, hours=23)).cluster == "east"


def test_token_is_only_issued_for_the_cas_trust_domain(ca: CertificateAuthority) -> None:
    with pytest.raises(CaError, match=r"trust domain fleet\.example"):
        issue_token(ca, SpiffeId("other.example", "shop", "web"), "east", HOUR)
    with pytest.raises(ValueError, match="cluster"):
        issue_token(ca, WEB, "", HOUR)
