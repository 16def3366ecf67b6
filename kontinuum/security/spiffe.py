"""SPIFFE IDs of the fleet's workloads: `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.

The path form is Istio's, so a namespace (a workspace) is a prefix of every identity in it:
Envoy SAN prefix matchers and RBAC policies can then say "anyone of workspace X".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from kontinuum.control.objects import dns_label

SCHEME: Final = "spiffe://"
_TRUST_DOMAIN: Final = re.compile(r"^[a-z0-9._-]+$")
_MAX_TRUST_DOMAIN: Final = 255  # SPIFFE spec: a trust domain is at most 255 bytes


def trust_domain_error(value: str) -> str | None:
    """Why `value` is not a SPIFFE trust domain, or None."""
    if 0 < len(value) <= _MAX_TRUST_DOMAIN and _TRUST_DOMAIN.match(value):
        return None
    return (
        f"trust domain {value!r} is not a valid DNS name (lowercase letters, digits, '.', '-' "
        f"and '_', at most {_MAX_TRUST_DOMAIN} characters)"
    )


def _check(trust_domain: str, namespace: str, service_account: str | None = None) -> None:
    if problem := trust_domain_error(trust_domain):
        raise ValueError(problem)
    if problem := dns_label(namespace):
        raise ValueError(f"namespace {problem}")
    if service_account is not None and (problem := dns_label(service_account)):
        raise ValueError(f"service account {problem}")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity; constructing one checks every part."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        _check(self.trust_domain, self.namespace, self.service_account)

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """The SPIFFE ID a URI names; ValueError saying why when it names none."""
        if not text.startswith(SCHEME):
            raise ValueError(f"{text!r} is not a spiffe:// URI")
        trust_domain, slash, path = text[len(SCHEME) :].partition("/")
        if problem := trust_domain_error(trust_domain):
            raise ValueError(f"{text!r}: {problem}")
        parts = path.split("/")
        if not slash or len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"{text!r}: path must be /ns/<namespace>/sa/<service-account>")
        try:
            return cls(trust_domain, parts[1], parts[3])
        except ValueError as error:
            raise ValueError(f"{text!r}: {error}") from None
