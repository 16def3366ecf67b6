"""`kontinuum zone`: run a site's zone control plane (docs/federation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kontinuum.cli_options import (
    AdminAddress,
    Verbose,
    address_option,
    default_state_dir,
    serve_until_stopped,
)
from kontinuum.cli_security import DEFAULT_TRUST_DOMAIN, TrustDomain


def _global_replicas(values: list[str]) -> list[str]:
    """`--global`, checked: each a HOST:PORT (or several, comma-separated)."""
    from kontinuum.federation.global_links import global_entries

    for value in values:
        try:
            global_entries(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    return values


def zone(
    site: Annotated[
        str,
        typer.Option(
            "--site",
            help="The site this zone publishes: a ClusterProfile of the fleet annotated "
            "kontinuum.io/source: zone.",
        ),
    ],
    global_address: Annotated[
        list[str],
        typer.Option(
            "--global",
            metavar="HOST:PORT[,HOST:PORT...]",
            callback=_global_replicas,
            help="The global control plane's --federation-address. Several global replicas: "
            "comma-separated or repeated; the zone publishes to each, and a DNS name "
            "resolving to several addresses (a headless Service) is dialed at each, of both "
            "families (looked up again when a link breaks); one process reached at several "
            "addresses is published to on one link, the others idle as a fallback.",
        ),
    ],
    credentials: Annotated[
        Path,
        typer.Option(
            "--credentials",
            file_okay=False,
            help="The zone's certificate (`kontinuum ca issue --namespace kontinuum-system "
            "--service-account zone-<site> --cluster <site> --out DIR`): cert.pem, key.pem, "
            "ca.pem.",
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            file_okay=False,
            help="Read the site's Services, EndpointSlices and ServiceExports from this "
            "directory's YAML files, watched for changes.",
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="Or read them from the site's Kubernetes API, listed and watched: a context "
            "of --kubeconfig, or `in-cluster` for the pod's service account.",
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            dir_okay=False,
            help="The kubeconfig of --context (default: $KUBECONFIG, ~/.kube/config).",
        ),
    ] = None,
    dns_domain: Annotated[
        str | None,
        typer.Option(
            "--dns-domain",
            help="Or look the site up in DNS, as a ClusterProfile's kontinuum.io/source: dns "
            "(docs/dns-sites.md): the domain of its SRV records.",
        ),
    ] = None,
    dns_server: Annotated[
        str,
        typer.Option(
            "--dns-server",
            help="With --dns-domain: HOST:PORT of the DNS server to ask (default: the "
            "system's resolver).",
        ),
    ] = "",
    dns_services: Annotated[
        str,
        typer.Option(
            "--dns-services",
            help="With --dns-domain: the service ports to look up, comma-separated "
            "<namespace>/<name>:<port>[/<protocol>].",
        ),
    ] = "",
    server_name: Annotated[
        str,
        typer.Option(
            "--server-name",
            help="The name the global's certificate is checked against, when it is not the "
            "host of --global (one of the global's --server-name).",
        ),
    ] = "",
    xds_address: Annotated[
        str | None,
        address_option(
            "--xds-address",
            "Serve the site's proxies xDS here (`kontinuum bootstrap --xds-address` of the "
            "zone): the site as the zone reads it, and what the global sends of the fleet; "
            "without it, the zone only publishes its site.",
        ),
    ] = None,
    ca_dir: Annotated[
        Path | None,
        typer.Option(
            "--ca-dir",
            envvar="KONTINUUM_CA_DIR",
            file_okay=False,
            help="With --xds-address: the zone's CA, which issues the zone's xDS server's and "
            "its workloads' certificates: its intermediate (`kontinuum ca intermediate --site "
            "<site> --out DIR`), limited to its site, or the fleet CA (as `kontinuum serve "
            "--ca-dir`).",
        ),
    ] = None,
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    plaintext_xds: Annotated[
        bool,
        typer.Option(
            "--plaintext-xds",
            help="With --xds-address: serve xDS without TLS and believe what proxies "
            "declare: local development only.",
        ),
    ] = False,
    xds_server_name: Annotated[
        list[str] | None,
        typer.Option(
            "--xds-server-name",
            help="A DNS name or IP address for the zone's xDS server certificate, besides "
            "the listening host (repeatable).",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="KONTINUUM_STATE_DIR",
            file_okay=False,
            help="With --xds-address: where the last copy of what the global sent is kept, "
            "so that a zone restarted while cut off serves its proxies (default: "
            "$XDG_STATE_HOME/kontinuum, else ~/.local/state/kontinuum).",
        ),
    ] = None,
    prometheus_sd_file: Annotated[
        Path | None,
        typer.Option(
            "--prometheus-sd-file",
            dir_okay=False,
            help="With --xds-address: keep this Prometheus file_sd file of the site's "
            "proxies' stats listeners, as `kontinuum serve --prometheus-sd-file` does.",
        ),
    ] = None,
    replica_id: Annotated[
        str,
        typer.Option(
            "--replica-id",
            help="This zone replica's id, unique among the replicas of the site (default: "
            "$POD_NAME when set, else the host name). With hostNetwork: true, or several "
            "replicas on one host, each needs its own id (set POD_NAME from the pod's "
            "metadata.name, or give --replica-id): under one id they replace each other's "
            "streams. Several replicas of a site may run at once: the global makes one the "
            "active publisher, and another takes over when it goes.",
        ),
    ] = "",
    admin_address: AdminAddress = "127.0.0.1:18011",
    verbose: Verbose = False,
) -> None:
    """Run a site's zone control plane: dial out to the global over mutual TLS, publish
    the site's objects (then only what changes) and, with --xds-address, serve the site's
    proxies from the site and what the global sends of the fleet (docs/federation.md).
    """
    from kontinuum.bootstrap import split_address
    from kontinuum.cli_options import setup_logging
    from kontinuum.cli_security import serve_security
    from kontinuum.control.model import DnsAccess, KubernetesAccess
    from kontinuum.control.objects import dns_label
    from kontinuum.control.site_access import dns_site
    from kontinuum.errors import OperatorError
    from kontinuum.federation.zone import CredentialsError, ZoneSettings, channel_credentials
    from kontinuum.federation_app import ZoneServing, run_zone
    from kontinuum.security.workload import DEFAULT_VALIDITY
    from kontinuum.security.xds_auth import server_hosts

    if problem := dns_label(site):
        raise typer.BadParameter(f"the site {problem}", param_hint="--site")
    where: Path | KubernetesAccess | DnsAccess
    if [config, context, dns_domain].count(None) != 2:
        raise typer.BadParameter(
            "give the site's files (--config), its Kubernetes API (--context) or its DNS "
            "(--dns-domain), one of them",
            param_hint="--config/--context/--dns-domain",
        )
    if dns_domain is None and (dns_server or dns_services):
        raise typer.BadParameter(
            "--dns-server and --dns-services go with --dns-domain", param_hint="--dns-domain"
        )
    if dns_domain is not None:
        access, problems = dns_site(dns_domain, dns_server, dns_services)
        if access is None:
            raise typer.BadParameter(f"--{problems[0]}", param_hint="--dns-domain")
        where = access
    elif config is not None:
        where = config
    elif context == "in-cluster":
        where = KubernetesAccess(in_cluster=True)
    else:
        where = KubernetesAccess(kubeconfig=str(kubeconfig or ""), context=context or "")
    try:
        channel_credentials(credentials)  # readable now; read again at each dial
    except CredentialsError as error:
        raise OperatorError(str(error)) from error
    options = ZoneSettings(
        site, ",".join(global_address), credentials, where, server_name, replica=replica_id
    )
    serving = None
    if xds_address is not None:
        security = serve_security(
            ca_dir,
            trust_domain,
            plaintext_xds,
            None,
            tuple(xds_server_name or ()),
            DEFAULT_VALIDITY,  # as `kontinuum serve` by default
        )
        if security.ca.site not in (None, site):
            raise typer.BadParameter(
                f"the zone CA of site {security.ca.site}, not of {site}", param_hint="--ca-dir"
            )
        if not security.plaintext:
            try:  # the certificate a zone CA with --dns-name may issue the xDS server
                server_hosts(security.ca, [split_address(xds_address)[0]], security.server_names)
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint="--xds-server-name") from error
        serving = ZoneServing(
            xds_address, security, state_dir or default_state_dir(), prometheus_sd_file
        )
    elif ca_dir is not None or plaintext_xds or state_dir is not None or prometheus_sd_file:
        raise typer.BadParameter(
            "--ca-dir, --plaintext-xds, --state-dir and --prometheus-sd-file are for serving "
            "xDS: give --xds-address",
            param_hint="--xds-address",
        )
    setup_logging(verbose)
    serve_until_stopped(
        run_zone(options, admin_address, serving),
        {"--admin-address": admin_address, "--xds-address": xds_address},
    )
