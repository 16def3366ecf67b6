"""Workload identity for the mesh: SPIFFE IDs, the fleet CA that issues X.509-SVIDs, and
bootstrap tokens for proxies that have no certificate yet.

Pure library: nothing here listens or dials; only `CertificateAuthority.load` and `save`
touch files.
"""

from kontinuum.security.ca import (
    CaError,
    CertificateAuthority,
    IssuedCertificate,
    PeerIdentity,
    identity_of,
)
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.tokens import issue_token, verify_token

__all__ = [
    "CaError",
    "CertificateAuthority",
    "IssuedCertificate",
    "PeerIdentity",
    "SpiffeId",
    "identity_of",
    "issue_token",
    "verify_token",
]
