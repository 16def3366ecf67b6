"""Where a cluster's objects come from, read from its ClusterProfile's annotations.

    (none)                              the fleet files: PATH/clusters/<cluster>/*.yaml
    kontinuum.io/source: kubernetes     its Kubernetes API:
      kontinuum.io/kubeconfig: PATH       a kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
      kontinuum.io/context: NAME          a context in it (default: its current context)
      kontinuum.io/in-cluster: "true"     the service account of the pod kontinuum runs in
      kontinuum.io/stale-after: DURATION  how long its endpoints are kept, marked stale, once
                                          its API cannot be reached (default 300s; `5m`)
    kontinuum.io/source: dns            a site described in DNS:
      kontinuum.io/dns-domain: DOMAIN     where `_<port>._<proto>.<service>.DOMAIN` SRV live
      kontinuum.io/dns-server: HOST:PORT  the server to ask (default: the system's resolver)
      kontinuum.io/dns-services: LIST     `<namespace>/<name>:<port>[/<protocol>]`, comma
                                          separated: the service ports to look up
    kontinuum.io/source: zone           its zone control plane, which dials out and
                                        publishes the site's objects (docs/federation.md):
      kontinuum.io/stale-after: DURATION  how long its endpoints are kept, marked stale, once
                                          it is disconnected (default 300s)

The Cluster Inventory API leaves how to reach a cluster to each implementation; annotations
keep the ClusterProfile standard. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

from kontinuum.control.gateway_fields import parse_duration
from kontinuum.control.model import (
    DnsAccess,
    DnsService,
    KubernetesAccess,
    SiteAccess,
    ZoneAccess,
)
from kontinuum.control.objects import (
    PROTOCOLS,
    Document,
    ObjectReader,
    dns_label,
    dns_subdomain,
)

PREFIX: Final = "kontinuum.io/"
_HOST_PORT: Final = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


def _annotations(obj: ObjectReader) -> dict[str, str]:
    """kontinuum's annotations that are strings (`check_object_meta` reports the others)."""
    metadata = obj.body.get("metadata")
    raw = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {
        key.removeprefix(PREFIX): value
        for key, value in raw.items()
        if isinstance(key, str) and key.startswith(PREFIX) and isinstance(value, str)
    }


def _dns_services(obj: ObjectReader, text: str, path: str) -> tuple[DnsService, ...]:
    services: list[DnsService] = []
    for item in (part.strip() for part in text.split(",")):
        match = re.fullmatch(r"([^/\s]+)/([^:\s]+):([^/\s]+)(?:/([A-Z]+))?", item)
        if match is None:
            obj.error(path, f"{item!r} is not <namespace>/<name>:<port>[/<protocol>]")
            continue
        namespace, name, port, protocol = match.groups()
        problem = dns_label(namespace) or dns_label(name) or dns_label(port)
        if problem:
            obj.error(path, f"{item!r}: {problem}")
            continue
        found = next((p for p in PROTOCOLS if p == (protocol or "TCP")), None)
        if found is None:
            obj.error(path, f"{item!r}: the protocol must be one of {', '.join(PROTOCOLS)}")
            continue
        services.append(DnsService(namespace, name, port, found))
    if not services:
        obj.error(path, "must name at least one service port")
    return tuple(services)


def _stale_after(obj: ObjectReader, found: dict[str, str], at: str) -> float:
    stale_after = parse_duration(found.get("stale-after", "300s"))
    if not stale_after:
        obj.error(
            f"{at}stale-after]",
            f"must be a duration above zero such as 300s or 5m, got {found.get('stale-after')!r}",
        )
    return stale_after or 300.0


def site_access(obj: ObjectReader) -> SiteAccess | None:
    """The cluster's access as its annotations declare it (errors recorded on `obj`)."""
    found = _annotations(obj)
    source = found.get("source", "")
    at = f"metadata.annotations[{PREFIX}"
    if source == "":
        return None
    if source == "kubernetes":
        in_cluster = found.get("in-cluster", "false")
        if in_cluster not in ("true", "false"):
            obj.error(f"{at}in-cluster]", f'must be "true" or "false", got {in_cluster!r}')
        return KubernetesAccess(
            kubeconfig=found.get("kubeconfig", ""),
            context=found.get("context", ""),
            in_cluster=in_cluster == "true",
            stale_after=_stale_after(obj, found, at),
        )
    if source == "zone":
        return ZoneAccess(stale_after=_stale_after(obj, found, at))
    if source == "dns":
        domain = found.get("dns-domain", "")
        if problem := dns_subdomain(domain.rstrip(".")):
            obj.error(f"{at}dns-domain]", f"required, {problem}")
        server = found.get("dns-server", "")
        if server and not _HOST_PORT.match(server):
            obj.error(f"{at}dns-server]", f"must be HOST:PORT, got {server!r}")
        services = _dns_services(obj, found.get("dns-services", ""), f"{at}dns-services]")
        return DnsAccess(domain.rstrip("."), server, services)
    obj.error(f"{at}source]", f'must be "kubernetes", "dns" or "zone", got {source!r}')
    return None


def dns_site(domain: str, server: str, services: str) -> tuple[DnsAccess | None, list[str]]:
    """A DNS-described site declared as the annotations `dns-domain`, `dns-server` and
    `dns-services` declare one (a zone's flags of the same names), and a line per problem
    naming the annotation's name."""
    annotations = {f"{PREFIX}source": "dns", f"{PREFIX}dns-domain": domain}
    annotations |= {f"{PREFIX}dns-server": server} if server else {}
    annotations[f"{PREFIX}dns-services"] = services
    obj = ObjectReader(
        Document("flags", {"metadata": {"annotations": annotations}}), "ClusterProfile", "", ""
    )
    access = site_access(obj)
    problems = [
        f"{error.field.removeprefix(f'metadata.annotations[{PREFIX}').rstrip(']')}: {error.message}"
        for error in obj.errors
    ]
    return (access if isinstance(access, DnsAccess) and not problems else None), problems
