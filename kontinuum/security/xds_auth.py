"""Who is on the other end of an xDS stream: TLS credentials of the xDS port, and the
`Authenticator` that turns a client certificate or a bootstrap token into an identity.

Two listening modes, both TLS with the server's own certificate (issued by the fleet CA):
- **mutual**: a proxy must present a certificate chaining to the fleet CA; gRPC verifies
  the chain during the handshake, and the identity is the certificate's SPIFFE ID and the
  cluster in its subject OU.
- **token**: the server does not ask for a certificate; a stream must carry a bootstrap
  token (`authorization: Bearer <token>`), signed by the fleet CA, naming the same.
Plaintext is only for local development: the node's own metadata is then believed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from kontinuum.control.objects import dns_label
from kontinuum.security.ca import (
    CaError,
    CertificateAuthority,
    IssuedCertificate,
    PeerIdentity,
    identity_of,
)
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.tokens import verify_token
from kontinuum.security.zone_ca import (
    CONTROL_PLANE_ACCOUNT,
    ZONE_NAMESPACE,
    zone_identity,
)
from kontinuum.xds.identity import Peer, UnauthenticatedError

log = logging.getLogger("kontinuum.security")

CONTROL_PLANE_NAMESPACE = ZONE_NAMESPACE
CONTROL_PLANE_SERVICE_ACCOUNT = CONTROL_PLANE_ACCOUNT
# Who may read the fleet's client status (CSDS) over TLS.
OPERATOR_SERVICE_ACCOUNT = "operator"
SERVER_CERTIFICATE_VALIDITY = timedelta(hours=24)

# How the identity of a peer was proven, in `Peer.claims["via"]`.
VIA_CERTIFICATE = "certificate"
VIA_TOKEN = "token"
# The site of the zone CA that issued a peer's credential, in `Peer.claims` (absent when
# the fleet's CA did): it may claim that site only.
ISSUING_SITE_CLAIM = "issuing_site"


def control_plane_identity(trust_domain: str) -> SpiffeId:
    """The SPIFFE ID the global's xDS server presents (and a zone's serving with the fleet's
    CA): what proxies pin (`kontinuum bootstrap`)."""
    return SpiffeId(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)


def site_zone_identity(trust_domain: str, cluster: str) -> SpiffeId | None:
    """The identity the xDS server of `cluster`'s zone presents when it serves with its
    intermediate CA, which a proxy of `cluster` pins besides the control plane's; None
    when `cluster` cannot be a zone's site (not a DNS label)."""
    if dns_label(cluster) is not None:
        return None
    try:
        return zone_identity(trust_domain, cluster)
    except ValueError:  # a site too long for a service account
        return None


def server_identity(ca: CertificateAuthority) -> SpiffeId:
    """The SPIFFE ID an xDS server signing with `ca` presents: the control plane's with the
    fleet's CA; with a zone's intermediate, which may not issue that, the zone's own
    (`ns/kontinuum-system/sa/zone-<site>`), which the bootstrap of a proxy of that site pins
    besides the control plane's."""
    if ca.site is None:
        return control_plane_identity(ca.trust_domain)
    return zone_identity(ca.trust_domain, ca.site)


def operator_identity(peer: Peer) -> bool:
    """Whether a caller may read the whole fleet's client status (CSDS): the operator
    identity `ns/kontinuum-system/sa/operator` issued by the fleet's CA (a zone's CA is
    limited to its site), or anyone on a plaintext (development) port."""
    if peer.identity is None:
        return True
    if ISSUING_SITE_CLAIM in peer.claims:
        return False
    try:
        caller = SpiffeId.parse(peer.identity)
    except ValueError:
        return False
    return (caller.namespace, caller.service_account) == (
        CONTROL_PLANE_NAMESPACE,
        OPERATOR_SERVICE_ACCOUNT,
    )


# Listening hosts that stand for every address: no name a client dials.
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def server_hosts(
    ca: CertificateAuthority, listening: Sequence[str], named: Sequence[str]
) -> list[str]:
    """The hosts the xDS server's certificate names: the `listening` hosts (a wildcard
    address is none) and the `named` ones (server names), or `localhost` when there
    are none.

    A zone CA with host names (`kontinuum ca intermediate --dns-name`) may name those
    only: a `named` host outside them is refused (ValueError saying why), since clients
    dialing it would fail the handshake; a listening host outside them (an IP address) is
    left out, and said so; none left is refused too.
    """
    hosts: list[str] = []
    for host in dict.fromkeys((*listening, *named)):
        if host in _WILDCARD_HOSTS:
            continue
        refusal = ca.host_refusal(host)
        if refusal is None:
            hosts.append(host)
        elif host in named:
            raise ValueError(refusal)
        else:
            log.warning("the xDS server certificate leaves out %s: %s", host, refusal)
    if hosts:
        return hosts
    if (refusal := ca.host_refusal("localhost")) is not None:
        raise ValueError(f"no server name it may name is given ({refusal})")
    return ["localhost"]


class ServerCertificate:
    """The xDS server's certificate, re-issued by the CA once half its life is over.

    gRPC asks `fetch` before each handshake (from its own threads); established streams
    keep the connection they have, so rotation drops nothing.
    """

    def __init__(self, ca: CertificateAuthority, hosts: Sequence[str]) -> None:
        self._ca = ca
        self._hosts = tuple(hosts)
        self._lock = threading.Lock()
        self._current = self._issue()

    def _issue(self) -> IssuedCertificate:
        identity = server_identity(self._ca)
        return self._ca.issue_server(identity, self._hosts, SERVER_CERTIFICATE_VALIDITY)

    def _configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(self._current.private_key_pem, self._current.certificate_chain_pem)],
            root_certificates=self._ca.trust_bundle_pem,
        )

    def fetch(self) -> Any:
        """gRPC's certificate configuration fetcher: None keeps the current one."""
        with self._lock:
            if datetime.now(UTC) < self._current.renew_at():
                return None
            self._current = self._issue()
            log.info("xDS server certificate renewed, valid until %s", self._current.not_after)
            return self._configuration()

    def credentials(self, *, require_client_certificate: bool) -> grpc.ServerCredentials:
        """TLS credentials for one listening address of the xDS server."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self.fetch,
            require_client_authentication=require_client_certificate,
        )


class FleetAuthenticator:
    """An `Authenticator`: the peer is who its certificate or bootstrap token says.

    `plaintext`: streams over a plaintext port (local development) prove nothing and are
    let in as anonymous peers; the view resolver then believes the node's metadata.
    """

    def __init__(self, ca: CertificateAuthority, *, plaintext: bool = False) -> None:
        self._ca = ca
        self._plaintext = plaintext

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
        address = str(context.peer())
        auth = context.auth_context()
        certificates = list(auth.get("x509_pem_cert") or ())
        transport = list(auth.get("transport_security_type") or ())
        plaintext = transport in ([], [b"insecure"])
        if certificates:
            pem = bytes(certificates[0])
            try:
                identity = identity_of(pem, self._ca.trust_domain)
            except ValueError as error:
                raise UnauthenticatedError(f"client certificate refused: {error}") from None
            # The leaf, then the chain the peer sent (on a server, without its leaf): a zone
            # CA that issued the leaf is in it.
            chain = pem + b"".join(bytes(c) for c in auth.get("x509_pem_cert_chain") or ())
            try:
                site = self._ca.issuing_site(chain)
            except CaError as error:
                raise UnauthenticatedError(f"client certificate refused: {error}") from None
            identity = replace(identity, issuing_site=site)
            # The handshake checked it when the connection opened; a call on a connection
            # kept open past the certificate's end is refused.
            if identity.expires is not None and identity.expires <= datetime.now(UTC):
                raise UnauthenticatedError(
                    f"client certificate expired at {identity.expires.isoformat()}: "
                    "reconnect with a new one"
                )
            return _peer(address, identity, VIA_CERTIFICATE)
        token = _bearer_token(tuple(context.invocation_metadata() or ()))
        if token is not None:
            if plaintext:
                raise UnauthenticatedError("a bootstrap token is accepted over TLS only")
            try:
                identity = verify_token(self._ca, token)
            except ValueError as error:
                raise UnauthenticatedError(f"bootstrap token refused: {error}") from None
            # Signed by this CA's key: a zone's token is of the zone's site.
            identity = replace(identity, issuing_site=self._ca.site)
            return _peer(address, identity, VIA_TOKEN)
        if self._plaintext and plaintext:
            return Peer(address=address)
        raise UnauthenticatedError(
            "no client certificate and no bootstrap token (authorization: Bearer <token>); "
            "see `kontinuum ca issue` and `kontinuum token create`"
        )


def _peer(address: str, identity: PeerIdentity, via: str) -> Peer:
    claims = {"via": via}
    if identity.cluster:
        claims["cluster"] = identity.cluster
    if identity.issuing_site:
        claims[ISSUING_SITE_CLAIM] = identity.issuing_site
    expires = identity.expires.timestamp() if identity.expires is not None else None
    return Peer(
        address=address, identity=str(identity.spiffe_id), claims=claims, expires_at=expires
    )


def _bearer_token(metadata: Sequence[Any]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise UnauthenticatedError("the authorization metadata is not 'Bearer <token>'")
    return None
