"""The zone's check that the global it dials is the fleet's control plane, not only a
server with a certificate for the global's host name.

gRPC's TLS checks the global's certificate chain and host name during the handshake, and
Python's gRPC gives a client no way to see the certificate afterwards (a server's context
has `auth_context()`, a client's call has nothing of the kind, nor can its channel
credentials take a verifier of ours). So before each dial the zone opens one TLS
connection of its own to the global's address, with the same credentials, host name and
roots (`ssl`, ALPN `h2`), reads the certificate the global presents, and closes it. The
certificate must:

- name the control plane's identity, `spiffe://<trust domain>/ns/kontinuum-system/sa/
  kontinuum` (what `kontinuum serve` presents on its xDS and federation addresses), the
  trust domain being the one of the zone's own certificate;
- be issued by the fleet's CA itself: a root of `ca.pem`, or a CA of the chain of the
  zone's own `cert.pem` that is not a zone's CA. A zone's intermediate does not issue
  the control plane's identity, but a compromised zone's key can sign it by hand, and a
  root shared beyond the mesh issues certificates for other purposes: neither stands for
  the global.

Otherwise, or when the handshake itself fails (a chain its roots do not accept, a
certificate not for the global's host name, a TLS alert), the zone does not dial
(`GlobalIdentityError`): it logs why, counts it (`kontinuum_zone_global_refused_total`),
and tries again after its backoff. Only a connection that cannot be made, or that ends
mid-handshake, is the global being out of reach (OSError). The check and
the gRPC connection that follows are two handshakes: an attacker on the path could let the
first reach the real global and answer the second itself, if it also held a certificate
for the global's host name that the zone's roots accept (gRPC checks that much on every
connection). The check keeps out what a mistaken or compromised issuer of such
certificates could otherwise do without being on the path: stand in for the global.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kontinuum.bootstrap import split_address
from kontinuum.security.ca import identity_of
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import control_plane_identity
from kontinuum.security.zone_ca import issued_by, zone_site

log = logging.getLogger("kontinuum.zone")

HANDSHAKE_TIMEOUT: Final = 10.0  # seconds
MAX_PROBLEMS: Final = 64  # global replicas whose last refusal is kept


class GlobalIdentityError(Exception):
    """The global presented a certificate that does not prove the control plane's identity
    (the message says why, on one line)."""


# TLS errors that say the connection broke, not what the global presented.
_CONNECTION_ERRORS: Final = (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError)


@dataclass
class GlobalCheck:
    """The zone's check of the global's identity before each dial, and how often it
    refused (see the module doc)."""

    refused: int = 0
    # Why it last refused each global replica (by address), until a check of it passes.
    problems: dict[str, str] = field(default_factory=dict)

    def verify(self, address: str, credentials: Path, server_name: str = "") -> SpiffeId:
        """The global's identity at `address`, checked with the zone's `credentials`
        (cert.pem, key.pem, ca.pem); `GlobalIdentityError` when it is not the control
        plane's or fails the handshake, OSError when the global cannot be reached."""
        try:
            identity = _check(address, credentials, server_name)
        except GlobalIdentityError as error:
            self._refuse(address, error)
            raise
        except ssl.SSLError as error:  # an OSError too: caught before the caller's
            if isinstance(error, _CONNECTION_ERRORS):
                raise
            refusal = GlobalIdentityError(_handshake_problem(address, error))
            self._refuse(address, refusal)
            raise refusal from error
        self.problems.pop(address, None)
        return identity

    def _refuse(self, address: str, error: GlobalIdentityError) -> None:
        self.refused += 1
        self.problems.pop(address, None)
        self.problems[address] = str(error)
        while len(self.problems) > MAX_PROBLEMS:  # replicas come and go: the oldest go
            del self.problems[next(iter(self.problems))]


def _handshake_problem(address: str, error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the global at {address} fails verification: {error.verify_message}"
    return f"the global at {address} fails the TLS handshake: {error.reason or error}"


def _check(address: str, credentials: Path, server_name: str) -> SpiffeId:
    host, port = split_address(address)
    own = x509.load_pem_x509_certificates((credentials / "cert.pem").read_bytes())
    roots_pem = (credentials / "ca.pem").read_bytes()
    trust_domain = _trust_domain(own[0])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=roots_pem.decode())
    context.load_cert_chain(credentials / "cert.pem", credentials / "key.pem")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_name or host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise GlobalIdentityError(f"the global at {address} presented no certificate")
    presented = x509.load_der_x509_certificate(der)
    pem = presented.public_bytes(serialization.Encoding.PEM)
    expected = control_plane_identity(trust_domain)
    try:
        identity = identity_of(pem, trust_domain).spiffe_id
    except ValueError as error:
        raise GlobalIdentityError(
            f"the global at {address} is not the control plane: {error}"
        ) from None
    if identity != expected:
        raise GlobalIdentityError(
            f"the global at {address} presents {identity}, not the control plane's identity "
            f"{expected}"
        )
    issuers = [*x509.load_pem_x509_certificates(roots_pem), *own[1:]]
    issuer = next((c for c in issuers if issued_by(presented, c)), None)
    if issuer is None:
        raise GlobalIdentityError(
            f"the global at {address} presents {identity} issued by "
            f"{presented.issuer.rfc4514_string()}, not by the fleet's CA"
        )
    if (site := zone_site(issuer)) is not None:
        raise GlobalIdentityError(
            f"the global at {address} presents {identity} issued by the zone CA of site "
            f"{site}: a zone's key does not stand for the global"
        )
    return identity


def _trust_domain(certificate: x509.Certificate) -> str:
    """The trust domain of the zone's own certificate (its SPIFFE ID)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        (uri,) = names.value.get_values_for_type(x509.UniformResourceIdentifier)
        return SpiffeId.parse(uri).trust_domain
    except (x509.ExtensionNotFound, ValueError) as error:
        raise GlobalIdentityError(
            f"the zone's own certificate names no SPIFFE ID, so no trust domain: {error}"
        ) from None
