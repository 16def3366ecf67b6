"""Names of the Envoy resources kontinuum generates, and how to read them back.

An Envoy cluster name says what it leads to, in the shape Istio users know:

    outbound|<port>|<target>|<service>.<namespace>.svc.clusterset.local
    inbound|<port>||<service>.<namespace>.svc.cluster.local

`<target>` is the fleet cluster whose endpoints the Envoy cluster holds, or empty for the
whole cluster set (every exporting cluster, in locality priority). Telemetry turns the
parts into labels (`stats_config` tag extraction), so the scheme is a contract: change it
only together with the extraction rules.

A sidecar that originates mTLS to a service port sends the SNI (`ClusterName.sni`)

    outbound_.<port>_._.<service>.<namespace>.svc.clusterset.local

and an east-west gateway passes such a connection through to its Envoy cluster of exactly
that name (Istio's "sni-dnat" cluster names); `parse_sni` reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

CLUSTERSET_DOMAIN: Final = "svc.clusterset.local"
LOCAL_DOMAIN: Final = "svc.cluster.local"

Direction = Literal["inbound", "outbound"]

# A DNS label (RFC 1123), as Kubernetes requires for names and namespaces.
_LABEL: Final = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_PATTERN: Final = re.compile(
    rf"^(?P<direction>inbound|outbound)\|(?P<port>[0-9]{{1,5}})\|(?P<target>({_LABEL})?)\|"
    rf"(?P<service>{_LABEL})\.(?P<namespace>{_LABEL})\."
    rf"(?P<domain>{re.escape(CLUSTERSET_DOMAIN)}|{re.escape(LOCAL_DOMAIN)})$"
)
_SNI_PATTERN: Final = re.compile(
    rf"^outbound_\.(?P<port>[0-9]{{1,5}})_\._\.(?P<service>{_LABEL})\.(?P<namespace>{_LABEL})\."
    rf"{re.escape(CLUSTERSET_DOMAIN)}$"
)


@dataclass(frozen=True, slots=True)
class ClusterName:
    """The parts of a generated Envoy cluster name."""

    direction: Direction
    service: str
    namespace: str
    port: int
    target: str = ""  # a fleet cluster, or "" for the whole cluster set

    def __str__(self) -> str:
        domain = CLUSTERSET_DOMAIN if self.direction == "outbound" else LOCAL_DOMAIN
        return (
            f"{self.direction}|{self.port}|{self.target}|{self.service}.{self.namespace}.{domain}"
        )

    @property
    def host(self) -> str:
        """The service's cluster-set host name."""
        return f"{self.service}.{self.namespace}.{CLUSTERSET_DOMAIN}"

    @property
    def sni(self) -> str:
        """`outbound_.<port>_._.<host>`: the SNI of mTLS to the service port (any target)."""
        return f"outbound_.{self.port}_._.{self.host}"


def parse_cluster_name(name: str) -> ClusterName | None:
    """The parts of a name this module generates; None for any other name."""
    match = _PATTERN.match(name)
    if match is None:
        return None
    port = int(match["port"])
    direction = match["direction"]
    expected_domain = CLUSTERSET_DOMAIN if direction == "outbound" else LOCAL_DOMAIN
    if not 1 <= port <= 65535 or match["domain"] != expected_domain:
        return None
    return ClusterName(
        direction="outbound" if direction == "outbound" else "inbound",
        service=match["service"],
        namespace=match["namespace"],
        port=port,
        target=match["target"],
    )


def parse_sni(name: str) -> ClusterName | None:
    """The outbound cluster-set service port an SNI (or passthrough cluster name) names."""
    match = _SNI_PATTERN.match(name)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        return None
    return ClusterName("outbound", match["service"], match["namespace"], int(match["port"]))


def clusterset_host(service: str, namespace: str) -> str:
    """`<service>.<namespace>.svc.clusterset.local`, the MCS name of a cluster-set service."""
    return f"{service}.{namespace}.{CLUSTERSET_DOMAIN}"
