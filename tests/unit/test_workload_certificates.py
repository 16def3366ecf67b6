"""Workload certificates (kontinuum.security.workload): issued once per identity, renewed
after half their life (with some jitter), a bounded number per round, forgotten with their
last view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.workload import (
    RENEW_AT,
    RENEW_JITTER,
    RENEWALS_PER_ROUND,
    ROOT_SECRET,
    WORKLOAD_SECRET,
    WorkloadCertificates,
    WorkloadIdentity,
)
from kontinuum.telemetry.metrics import CertificateCollector

TD = "cluster.local"
HOUR = timedelta(hours=1)


def _identity(account: str) -> WorkloadIdentity:
    return WorkloadIdentity(SpiffeId(TD, "demo", account), "eu")


def test_an_identity_gets_one_certificate_and_the_fleet_root() -> None:
    ca = CertificateAuthority.generate(TD)
    certificates = WorkloadCertificates(ca, HOUR)
    web = _identity("web")
    first, second = certificates.secrets(web), certificates.secrets(web)
    assert [s.name for s in first] == [WORKLOAD_SECRET, ROOT_SECRET]
    assert first[0].tls_certificate == second[0].tls_certificate  # shared, not re-issued
    assert first[1].validation_context.trusted_ca.inline_bytes == ca.trust_bundle_pem
    assert ca.verify(first[0].tls_certificate.certificate_chain.inline_bytes).spiffe_id == (
        web.spiffe_id
    )


def test_renewal_comes_after_half_the_life_within_the_jitter() -> None:
    certificates = WorkloadCertificates(CertificateAuthority.generate(TD), HOUR)
    identities = {_identity(f"sa-{i}") for i in range(40)}
    for identity in identities:
        certificates.certificate(identity)
    issued = datetime.now(UTC)
    due = certificates.next_renewal()
    assert due is not None
    assert issued + HOUR * (RENEW_AT - 0.01) <= due <= issued + HOUR * (RENEW_AT + RENEW_JITTER)
    # Nothing is due before half the life; everything after half plus the jitter.
    assert certificates.renew_due(identities, issued + HOUR * (RENEW_AT - 0.05)) == set()
    late = issued + HOUR * (RENEW_AT + RENEW_JITTER + 0.01)
    assert certificates.renew_due(identities, late) == identities


def test_a_round_renews_a_bounded_number_and_the_rest_next() -> None:
    certificates = WorkloadCertificates(CertificateAuthority.generate(TD), timedelta(seconds=10))
    identities = {_identity(f"sa-{i}") for i in range(RENEWALS_PER_ROUND + 5)}
    for identity in identities:
        certificates.certificate(identity)
    later = datetime.now(UTC) + timedelta(seconds=9)
    first = certificates.renew_due(identities, later)
    assert len(first) == RENEWALS_PER_ROUND
    rest = certificates.renew_due(identities, later)
    assert rest == identities - first


def test_an_identity_no_longer_in_use_is_forgotten() -> None:
    certificates = WorkloadCertificates(CertificateAuthority.generate(TD), HOUR)
    web, api = _identity("web"), _identity("api")
    before = certificates.certificate(web)
    certificates.certificate(api)
    certificates.renew_due({api})
    assert certificates.certificate(web) != before  # issued anew: it had been forgotten


def test_the_ca_s_end_and_the_certificates_in_use_are_metrics() -> None:
    ca = CertificateAuthority.generate(TD, validity=timedelta(days=10))
    certificates = WorkloadCertificates(ca, HOUR)
    registry = CollectorRegistry()
    registry.register(CertificateCollector(certificates))
    assert registry.get_sample_value("kontinuum_ca_expiry_timestamp_seconds") == (
        ca.root_certificate.not_valid_after_utc.timestamp()
    )
    assert registry.get_sample_value("kontinuum_workload_certificates") == 0
    assert (
        registry.get_sample_value("kontinuum_workload_certificate_next_renewal_timestamp_seconds")
        is None
    )
    certificates.certificate(_identity("web"))
    assert registry.get_sample_value("kontinuum_workload_certificates") == 1
    due = registry.get_sample_value("kontinuum_workload_certificate_next_renewal_timestamp_seconds")
    assert due == certificates.next_renewal().timestamp()  # type: ignore[union-attr]
