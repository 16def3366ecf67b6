"""Bootstrap tokens: how a proxy that has no certificate yet proves who it is.

A token is a JWT signed by the fleet CA's key (as Kuma's dataplane tokens are signed by the
control plane) naming a SPIFFE ID and the cluster the proxy may claim. Every replica holding
the same CA verifies it: there is no token store. The algorithm is fixed by the CA key, never
by the token's header, so an `alg: none` or an HMAC-with-the-public-key token is refused.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kontinuum.security.ca import CaError, CaPublicKey, CertificateAuthority, PeerIdentity, utc
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.zone_ca import reserved_refusal

ISSUER: Final = "kontinuum"
AUDIENCE: Final = "kontinuum-xds"
CLUSTER_CLAIM: Final = "kontinuum.io/cluster"
MAX_VALIDITY: Final = timedelta(days=30)
LEEWAY: Final = timedelta(seconds=30)  # clock skew between who issued and who verifies
_REQUIRED: Final = ["iss", "aud", "sub", "iat", "exp", "jti"]


def _algorithm(key: CaPublicKey) -> str | None:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def _describe(key: CaPublicKey) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return f"EC {key.curve.name}"


def issue_token(
    ca: CertificateAuthority,
    spiffe_id: SpiffeId,
    cluster: str,
    validity: timedelta,
    *,
    now: datetime | None = None,
) -> str:
    """A token naming `spiffe_id` in `cluster`, valid for at most 30 days: a token cannot be
    revoked, so its life is short."""
    if not timedelta(0) < validity <= MAX_VALIDITY:
        raise ValueError(f"a token validity of {validity} is not between 0 and {MAX_VALIDITY}")
    if not cluster:
        raise ValueError("a token names the cluster its proxy runs in")
    if spiffe_id.trust_domain != ca.trust_domain:
        raise CaError(f"{spiffe_id} is not of trust domain {ca.trust_domain}, which this CA signs")
    if refusal := reserved_refusal(spiffe_id):
        raise CaError(f"{refusal}: no token names it")
    if ca.site is not None and cluster != ca.site:
        raise CaError(f"the zone CA of site {ca.site} signs tokens of cluster {ca.site} only")
    algorithm = _algorithm(ca.public_key)
    if algorithm is None:
        raise CaError(
            f"the CA key is {_describe(ca.public_key)}: tokens need an EC P-256 or an RSA key"
        )
    issued = utc(now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(spiffe_id),
        CLUSTER_CLAIM: cluster,
        "iat": int(issued.timestamp()),
        "exp": int((issued + validity).timestamp()),
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, ca._signing_key, algorithm=algorithm)


def _time(claims: dict[str, Any], name: str) -> datetime:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"token claim {name!r} is not a time")
    return datetime.fromtimestamp(value, UTC)


def verify_token(
    ca: CertificateAuthority, token: str, *, now: datetime | None = None
) -> PeerIdentity:
    """Who a token names, if this fleet's CA signed it and it is valid `now`; ValueError
    saying why not."""
    expected = _algorithm(ca.public_key)
    if expected is None:
        raise ValueError(f"this fleet's CA key ({_describe(ca.public_key)}) signs no tokens")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError as error:
        raise ValueError(f"malformed token: {error}") from None
    if algorithm != expected:
        raise ValueError(f"token is signed with {algorithm!r}; this fleet's CA signs {expected}")
    try:
        claims = jwt.decode(
            token,
            ca.public_key,
            algorithms=[expected],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": _REQUIRED,
            },
        )
    except jwt.InvalidSignatureError:
        raise ValueError("token is not signed by this fleet's CA") from None
    except jwt.MissingRequiredClaimError as error:
        raise ValueError(f"token has no {error.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise ValueError(f"token is not meant for {AUDIENCE} (its audience)") from None
    except jwt.InvalidIssuerError:
        raise ValueError(f"token is not issued by {ISSUER}") from None
    except jwt.InvalidTokenError as error:
        raise ValueError(f"malformed token: {error}") from None
    checked = utc(now)
    if (expires := _time(claims, "exp")) + LEEWAY < checked:
        raise ValueError(f"token expired at {expires.isoformat()}")
    if (issued := _time(claims, "iat")) - LEEWAY > checked:
        raise ValueError(f"token is issued in the future ({issued.isoformat()})")
    if expires - issued > MAX_VALIDITY:
        raise ValueError(f"token is valid for {expires - issued}, more than {MAX_VALIDITY}")
    subject = claims["sub"]
    try:
        spiffe_id = SpiffeId.parse(str(subject))
    except ValueError as error:
        raise ValueError(f"token subject is not a SPIFFE ID: {error}") from None
    if spiffe_id.trust_domain != ca.trust_domain:
        raise ValueError(
            f"token of trust domain {spiffe_id.trust_domain}, this fleet trusts {ca.trust_domain}"
        )
    cluster = claims.get(CLUSTER_CLAIM)
    if not isinstance(cluster, str) or not cluster:
        raise ValueError(f"token names no cluster ({CLUSTER_CLAIM!r})")
    return PeerIdentity(spiffe_id, cluster, expires)
