"""What workload identity costs the control plane: issuing an X.509-SVID (key generation and
signing), building its SDS secrets, and checking a bootstrap token.

Renewal issues one certificate per identity in use every half lifetime, so the issue time
times the identities says how much of a core renewal takes (1 h certificates: every 30 min).

    .venv/bin/python -m benchmarks.certificates [--count 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.tokens import issue_token, verify_token
from kontinuum.security.workload import WorkloadCertificates, WorkloadIdentity


def _per_call(work: Callable[[int], object], count: int, rounds: int) -> list[float]:
    """The time of one call of `work`, in each of `rounds` rounds of `count` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(count):
            work(i)
        times.append((time.perf_counter() - started) / count)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ca = CertificateAuthority.generate("cluster.local")
    hour = timedelta(hours=1)

    def issue(i: int) -> object:
        return ca.issue_workload(SpiffeId("cluster.local", "demo", f"sa-{i}"), "eu", hour)

    certificates = WorkloadCertificates(ca, hour)

    def secrets(i: int) -> object:
        identity = WorkloadIdentity(SpiffeId("cluster.local", "demo", f"sa-{i % 10}"), "eu")
        return certificates.secrets(identity)  # issued once per identity, then reused

    token = issue_token(ca, SpiffeId("cluster.local", "demo", "web"), "eu", hour)

    def verify(_: int) -> object:
        return verify_token(ca, token)

    print(f"{args.rounds} rounds of {args.count} calls, median of the rounds (min-max)")
    for name, work in (
        ("issue an X.509-SVID", issue),
        ("SDS secrets of an identity in use", secrets),
        ("verify a bootstrap token", verify),
    ):
        times = _per_call(work, args.count, args.rounds)
        print(
            f"{name:36} {statistics.median(times) * 1e3:7.3f} ms "
            f"({min(times) * 1e3:.3f}-{max(times) * 1e3:.3f})"
        )


if __name__ == "__main__":
    main()
