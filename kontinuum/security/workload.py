"""Workload certificates: the X.509-SVID of each proxy identity, as the SDS `Secret`s the
proxy's TLS contexts name, renewed well before they expire.

Every proxy receives two secrets, named as Istio names them: `default` (its own
certificate chain and private key) and `ROOTCA` (the fleet's trust bundle). Proxies of one
identity share one certificate. The private key travels only inside the proxy's own,
authenticated xDS stream; CSDS never shows secrets.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from kontinuum.control.translate.tls import ROOT_SECRET, WORKLOAD_SECRET
from kontinuum.security.ca import CertificateAuthority, IssuedCertificate
from kontinuum.security.spiffe import SpiffeId

log = logging.getLogger("kontinuum.security")

DEFAULT_VALIDITY = timedelta(hours=1)
MIN_VALIDITY = timedelta(seconds=2)
MAX_VALIDITY = timedelta(days=7)  # short-lived: there is no revocation
RENEW_AT = 0.5  # of a certificate's lifetime: a proxy never holds one close to expiry
# Up to this much more of the lifetime, at random: certificates issued together (a restart,
# a fleet connecting) are not all renewed in the same instant.
RENEW_JITTER = 0.1
# Certificates renewed in one round, at most (each takes ~0.2 ms of the event loop); the
# rest are renewed in the next rounds, moments later.
RENEWALS_PER_ROUND = 200


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who a proxy is: its SPIFFE ID and the fleet cluster it runs in."""

    spiffe_id: SpiffeId
    cluster: str

    def __str__(self) -> str:
        return f"{self.spiffe_id} in {self.cluster}"


class WorkloadCertificates:
    """Issues and renews the certificate of each identity in use."""

    def __init__(self, ca: CertificateAuthority, validity: timedelta = DEFAULT_VALIDITY) -> None:
        if not MIN_VALIDITY <= validity <= MAX_VALIDITY:
            raise ValueError(
                f"a workload certificate validity must be between {MIN_VALIDITY} and "
                f"{MAX_VALIDITY}, not {validity}"
            )
        self.ca = ca
        self.validity = validity
        self._issued: dict[WorkloadIdentity, IssuedCertificate] = {}
        self._renew_at: dict[WorkloadIdentity, datetime] = {}
        self._secrets: dict[WorkloadIdentity, list[Any]] = {}

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    def certificate(self, identity: WorkloadIdentity) -> IssuedCertificate:
        """The identity's current certificate, issued on first use."""
        issued = self._issued.get(identity)
        if issued is None:
            issued = self._issue(identity)
        return issued

    def secrets(self, identity: WorkloadIdentity) -> list[Any]:
        """The SDS secrets of a proxy of `identity` (built once per certificate: every
        translation of its views serves them)."""
        self.certificate(identity)
        return self._secrets[identity]

    def renew_due(
        self, in_use: set[WorkloadIdentity], now: datetime | None = None
    ) -> set[WorkloadIdentity]:
        """Renew what is past its renewal time, forget what is no longer in use; returns the
        renewed identities (their proxies need the new secret)."""
        now = now or datetime.now(UTC)
        for gone in set(self._issued) - in_use:
            del self._issued[gone]
            del self._renew_at[gone]
            del self._secrets[gone]
        due = sorted((at, str(who), who) for who, at in self._renew_at.items() if now >= at)
        renewed = set()
        for _, _, identity in due[:RENEWALS_PER_ROUND]:
            self._issue(identity, now)
            renewed.add(identity)
        return renewed

    @property
    def in_use(self) -> int:
        """How many identities hold a certificate."""
        return len(self._issued)

    def next_renewal(self) -> datetime | None:
        """When the earliest certificate in use is due for renewal."""
        return min(self._renew_at.values(), default=None)

    def _issue(self, identity: WorkloadIdentity, now: datetime | None = None) -> IssuedCertificate:
        # No cluster in it (no subject OU): a workload certificate proves an identity to
        # other workloads, and cannot open an xDS stream, which needs a credential bound to
        # a cluster (`kontinuum ca issue`, a token). So a proxy cannot renew its way past
        # the expiry of the credential it connected with.
        issued = self.ca.issue_workload(identity.spiffe_id, None, self.validity, now=now)
        self._issued[identity] = issued
        self._renew_at[identity] = issued.renew_at(RENEW_AT + random.uniform(0, RENEW_JITTER))
        own = secret_pb2.Secret(name=WORKLOAD_SECRET)
        own.tls_certificate.certificate_chain.inline_bytes = issued.certificate_chain_pem
        own.tls_certificate.private_key.inline_bytes = issued.private_key_pem
        root = secret_pb2.Secret(name=ROOT_SECRET)
        root.validation_context.trusted_ca.inline_bytes = self.ca.trust_bundle_pem
        self._secrets[identity] = [own, root]
        log.info("workload certificate for %s issued, valid until %s", identity, issued.not_after)
        return issued
