"""The `kontinuum` command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kontinuum import __version__
from kontinuum.cli_options import (
    AdminAddress,
    Verbose,
    XdsAddress,
    address_option,
    default_state_dir,
    port_option,
    serve_until_stopped,
    setup_logging,
)
from kontinuum.cli_output import run
from kontinuum.cli_security import (
    DEFAULT_TRUST_DOMAIN,
    TrustDomain,
    ca_app,
    duration_option,
    serve_security,
    token_app,
)
from kontinuum.cli_zone import zone
from kontinuum.control.wording import plural

# The demo starts Envoy from a process that serves gRPC; grpc's fork handlers only warn
# about that. kontinuum never forks a process that then uses gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

app = typer.Typer(
    name="kontinuum",
    help="Multi-cluster service mesh control plane: one xDS server for a whole fleet.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help wraps at any width; rich's help panels cut long option names.
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)

app.add_typer(ca_app)
app.add_typer(token_app)


@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", exists=True, file_okay=False, help="The fleet directory."),
    ] = None,
    config_cluster: Annotated[
        str | None,
        typer.Option(
            "--config-cluster",
            help="Read the fleet-wide objects (ClusterProfiles, routes, Gateways, grants, "
            "policies) from this cluster too: a context of --kubeconfig, or `in-cluster` for "
            "the pod's service account. The Lease and route status are written there.",
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            dir_okay=False,
            help="The kubeconfig of --config-cluster (default: $KUBECONFIG, ~/.kube/config).",
        ),
    ] = None,
    lease_cluster: Annotated[
        str | None,
        typer.Option(
            "--lease-cluster",
            help="The fleet cluster (reached through its Kubernetes API) that holds the "
            "leader-election Lease (default: the config cluster).",
        ),
    ] = None,
    lease_namespace: Annotated[
        str, typer.Option("--lease-namespace", help="The Lease's namespace.")
    ] = "kontinuum-system",
    lease_name: Annotated[str, typer.Option("--lease-name", help="The Lease's name.")] = (
        "kontinuum-leader"
    ),
    write_status: Annotated[
        bool,
        typer.Option(
            "--write-status/--no-write-status",
            help="Write status (ServiceExports, routes, Gateways, policies) as the Lease's holder.",
        ),
    ] = True,
    xds_address: XdsAddress = "127.0.0.1:18000",
    admin_address: AdminAddress = "127.0.0.1:18001",
    dns_address: Annotated[
        str | None,
        address_option(
            "--dns-address",
            "Where to answer clusterset.local DNS (UDP and TCP); without it, no DNS.",
        ),
    ] = None,
    dns_service_address: Annotated[
        list[str] | None,
        typer.Option(
            "--dns-service-address",
            help="Address that A (IPv4) or AAAA (IPv6) answers give for a service with a "
            "ClusterSetIP: one that reaches the sidecar (default 127.0.0.1). Repeat for both.",
        ),
    ] = None,
    prometheus_sd_file: Annotated[
        Path | None,
        typer.Option(
            "--prometheus-sd-file",
            dir_okay=False,
            help="Keep this Prometheus file_sd file of the proxies' stats listeners: the "
            "connected ones, and those disconnected whose stats port still accepts "
            "connections (see `kontinuum prometheus-config`).",
        ),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="Export a trace of every push over OTLP/gRPC to HOST:PORT (or a URL); "
            "none: no traces.",
        ),
    ] = None,
    ca_dir: Annotated[
        Path | None,
        typer.Option(
            "--ca-dir",
            envvar="KONTINUUM_CA_DIR",
            file_okay=False,
            help="The fleet CA (`kontinuum ca init`, or cert-manager's tls.crt/tls.key/ca.crt): "
            "it issues the xDS server's and the workloads' certificates. Needed unless "
            "--plaintext-xds.",
        ),
    ] = None,
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    plaintext_xds: Annotated[
        bool,
        typer.Option(
            "--plaintext-xds",
            help="Serve xDS without TLS and believe what proxies declare: local development "
            "only. It uses a CA of its own run (never --ca-dir), so workload mTLS still works.",
        ),
    ] = False,
    xds_token_address: Annotated[
        str | None,
        address_option(
            "--xds-token-address",
            "Where xDS is also served over TLS without client certificates, to proxies "
            "presenting a bootstrap token (`kontinuum token create`).",
        ),
    ] = None,
    server_name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name",
            help="A DNS name or IP address for the xDS server's certificate, besides the "
            "listening hosts (repeatable; e.g. kontinuum.kontinuum-system.svc).",
        ),
    ] = None,
    federation_address: Annotated[
        str | None,
        address_option(
            "--federation-address",
            "Where zone control planes dial in (`kontinuum zone`; mutual TLS with "
            "certificates of the fleet CA; docs/federation.md); without it, nowhere.",
        ),
    ] = None,
    workload_cert_validity: Annotated[
        str,
        typer.Option(
            "--workload-cert-validity",
            help="Lifetime of workload certificates (SDS); each is renewed at half of it.",
        ),
    ] = "1h",
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="KONTINUUM_STATE_DIR",
            file_okay=False,
            help="Where the last good version of each fleet file and the last view of each "
            "cluster are kept, so that a restart serves them as they last were (default: "
            "$XDG_STATE_HOME/kontinuum, else ~/.local/state/kontinuum).",
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Serve a fleet (see `kontinuum validate`) to Envoy sidecars and proxyless gRPC clients.

    A proxy declares its cluster, namespace and role in its bootstrap (`kontinuum
    bootstrap`) and receives what its workspace may reach from its cluster. The fleet comes
    from --config, --config-cluster, or both; files are re-read when they change, clusters
    are watched; a file with errors is reported and its last good version stays in force.
    With --dns-address, the cluster set's names are answered over DNS (docs/dns.md).
    """
    from kontinuum.app import FleetOptions, serve_fleet
    from kontinuum.control.model import KubernetesAccess
    from kontinuum.dns import ZoneOptions
    from kontinuum.kube import LeaseConfig
    from kontinuum.writeback import StatusOptions

    if config is None and config_cluster is None:
        raise typer.BadParameter(
            "give a fleet directory, a config cluster, or both", param_hint="--config"
        )
    try:
        dns_options = ZoneOptions.of(dns_service_address or ["127.0.0.1"])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--dns-service-address") from error
    access = None
    if config_cluster == "in-cluster":
        access = KubernetesAccess(in_cluster=True)
    elif config_cluster is not None:
        access = KubernetesAccess(kubeconfig=str(kubeconfig or ""), context=config_cluster)
    try:
        lease = LeaseConfig(name=lease_name, namespace=lease_namespace, release_on_cancel=True)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--lease-name/--lease-namespace") from error
    if otlp_endpoint:
        from kontinuum.telemetry.otlp import otlp_target

        try:
            otlp_target(otlp_endpoint)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--otlp-endpoint") from error
    security = serve_security(
        ca_dir,
        trust_domain,
        plaintext_xds,
        xds_token_address,
        tuple(server_name or ()),
        duration_option(workload_cert_validity, "--workload-cert-validity"),
        federation_address,
    )
    if security.ca.site is not None:
        raise typer.BadParameter(
            f"{ca_dir} holds the zone CA of site {security.ca.site} (`kontinuum ca "
            "intermediate`): the global serves with the fleet's CA, a zone's with `kontinuum "
            "zone --ca-dir`",
            param_hint="--ca-dir",
        )
    options = FleetOptions(
        path=config,
        config_cluster=access,
        status=StatusOptions(lease, lease_cluster or "") if write_status else None,
        otlp_endpoint=otlp_endpoint or None,
        security=security,
        state_dir=state_dir or default_state_dir(),
    )
    setup_logging(verbose)
    serve_until_stopped(
        serve_fleet(
            options,
            xds_address,
            admin_address,
            dns_address=dns_address,
            dns_options=dns_options,
            prometheus_sd=prometheus_sd_file,
        ),
        {
            "--xds-address": xds_address,
            "--xds-token-address": xds_token_address,
            "--admin-address": admin_address,
            "--dns-address": dns_address,
            "--federation-address": federation_address,
        },
    )


app.command("zone")(zone)


@app.command("prometheus-config")
def prometheus_config(
    sd_file: Annotated[
        Path,
        typer.Option(
            "--sd-file",
            dir_okay=False,
            help="The file `kontinuum serve --prometheus-sd-file` keeps.",
        ),
    ],
    admin_address: AdminAddress = "127.0.0.1:18001",
    rules: Annotated[
        list[Path] | None,
        typer.Option(
            "--rules",
            dir_okay=False,
            help="A rule file for Prometheus to load (repeat; e.g. dashboards/rules/*.yaml).",
        ),
    ] = None,
    scrape_interval: Annotated[
        str, typer.Option("--scrape-interval", help="How often to scrape (a Prometheus duration).")
    ] = "15s",
) -> None:
    """Print a Prometheus configuration (YAML) that scrapes kontinuum's `/metrics` and every
    connected Envoy, found through the file `kontinuum serve --prometheus-sd-file` keeps
    (as the jobs `kontinuum` and `kontinuum-envoy`, which the alerts select)."""
    import yaml

    from kontinuum.telemetry.prometheus_sd import scrape_config

    config = scrape_config(
        admin_address=admin_address,
        sd_file=sd_file.absolute(),
        rule_files=[r.absolute() for r in rules or []],
        scrape_interval=scrape_interval,
    )
    typer.echo(yaml.safe_dump(config, sort_keys=False), nl=False)


@app.command("serve-resources")
def serve_resources(
    directory: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Directory of <view>.yaml files of Envoy resources."
        ),
    ],
    xds_address: XdsAddress = "127.0.0.1:18000",
    admin_address: AdminAddress = "127.0.0.1:18001",
    verbose: Verbose = False,
) -> None:
    """Serve raw Envoy resources over ADS (SotW and Delta), one view per file.

    A node receives the view named by its `node.cluster`. Files are re-read when they
    change; a bad file is reported and its view keeps its last good resources.
    """
    from kontinuum.app import serve_resources as run

    setup_logging(verbose)
    serve_until_stopped(
        run(directory, xds_address, admin_address),
        {"--xds-address": xds_address, "--admin-address": admin_address},
    )


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A fleet directory (see README: the fleet format).")],
) -> None:
    """Check a fleet directory; print every error (file, object, field) and every route,
    Gateway or LocalityPolicy condition that is not as it should be; exit 1 if any."""
    from kontinuum.route_report import load_binding, status_lines

    fleet, binding, errors = load_binding(path)
    problems = [line for line in status_lines(binding) if not line.ok]
    for error in errors:
        typer.echo(str(error), err=True)
    for line in problems:
        typer.echo(str(line), err=True)
    services = sum(len(s.services) for s in fleet.snapshots)
    summary = ", ".join(
        (
            plural(len(fleet.sites), "cluster"),
            plural(services, "service"),
            plural(len(binding.statuses), "route"),
            plural(len(errors), "error"),
            plural(len(problems), "status problem"),
        )
    )
    if errors or problems:
        typer.echo(f"{path}: {summary}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: {summary}")


@app.command()
def routes(
    path: Annotated[Path, typer.Argument(help="A fleet directory (see README: the fleet format).")],
) -> None:
    """Show every HTTPRoute, GRPCRoute, Gateway and LocalityPolicy of a fleet directory with
    its Gateway API status conditions (Accepted, ResolvedRefs, ...) as `serve` binds them."""
    from kontinuum.route_report import load_binding, render_routes

    _, binding, errors = load_binding(path)
    for error in errors:
        typer.echo(str(error), err=True)
    render_routes(binding)


@app.command()
def bootstrap(
    node_id: Annotated[str, typer.Option("--node-id", help="The proxy's unique node id.")],
    cluster: Annotated[str, typer.Option(help="The fleet cluster (site) the proxy runs in.")],
    namespace: Annotated[str, typer.Option(help="The proxy's namespace (its workspace).")],
    service: Annotated[
        str | None, typer.Option(help="The service this proxy fronts (sidecars).")
    ] = None,
    inbound_port: Annotated[
        int | None, port_option("--inbound-port", "Port of the local workload (on 127.0.0.1).")
    ] = None,
    inbound_address: Annotated[
        str | None,
        address_option(
            "--inbound-address",
            "Where the sidecar accepts traffic for its service (default 0.0.0.0:15006; on "
            "a shared host, the EndpointSlice address).",
        ),
    ] = None,
    outbound_port: Annotated[
        int, port_option("--outbound-port", "Port of the outbound listener.")
    ] = 15001,
    admin_port: Annotated[
        int, port_option("--admin-port", "Envoy admin port (0: any free one).", zero=True)
    ] = 15000,
    stats_address: Annotated[
        str | None,
        address_option(
            "--stats-address",
            "A listener serving /stats/prometheus for Prometheus (as Istio's 15090); "
            "`none` for no such listener.",
            none=True,
        ),
    ] = "0.0.0.0:15090",
    stats_inclusion_prefix: Annotated[
        list[str] | None,
        typer.Option(
            "--stats-inclusion-prefix",
            help="Also create Envoy's stats whose names start with this (repeatable; as "
            "Istio's statsInclusionPrefixes, e.g. `cluster.inbound|` or `http.`).",
        ),
    ] = None,
    xds_address: XdsAddress = "127.0.0.1:18000",
    role: Annotated[
        str,
        typer.Option(
            help="sidecar; gateway (the cluster's east-west gateway); ingress (runs --gateway)."
        ),
    ] = "sidecar",
    gateway: Annotated[
        str | None,
        typer.Option(
            help="With --role ingress: the Gateway (in --namespace) it runs. A Gateway with "
            "an HTTPS listener is run only by its own service account, named as the Gateway."
        ),
    ] = None,
    grpc: Annotated[
        bool, typer.Option("--grpc", help="A gRPC xDS bootstrap (GRPC_XDS_BOOTSTRAP) instead.")
    ] = False,
    sotw: Annotated[
        bool, typer.Option("--sotw", help="State-of-the-World ADS instead of Delta.")
    ] = False,
    service_account: Annotated[
        str | None,
        typer.Option(
            "--service-account",
            help="The proxy's service account (believed only by a plaintext server; else its "
            "certificate's or token's identity decides).",
        ),
    ] = None,
    xds_ca: Annotated[
        Path | None,
        typer.Option("--xds-ca", dir_okay=False, help="The fleet's root (ca.pem): xDS over TLS."),
    ] = None,
    xds_cert: Annotated[
        Path | None,
        typer.Option("--xds-cert", dir_okay=False, help="The proxy's certificate (cert.pem)."),
    ] = None,
    xds_key: Annotated[
        Path | None, typer.Option("--xds-key", dir_okay=False, help="Its private key (key.pem).")
    ] = None,
    xds_token_file: Annotated[
        Path | None,
        typer.Option(
            "--xds-token-file",
            exists=True,
            dir_okay=False,
            help="A bootstrap token (`kontinuum token create`) instead of a certificate, for "
            "the server's --xds-token-address. The bootstrap then holds the token: keep it 0600.",
        ),
    ] = None,
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Write the bootstrap to this file (mode 0600) instead of printing it.",
        ),
    ] = None,
) -> None:
    """Print a bootstrap (JSON) that connects an Envoy, or a proxyless gRPC client, to kontinuum.

    Envoy: ADS over gRPC, Delta by default, the node sent on the first request only. With
    --xds-ca, over TLS, pinning the server's identity: the control plane's,
    spiffe://<trust domain>/ns/kontinuum-system/sa/kontinuum, or that of the zone of
    --cluster, .../sa/zone-<cluster> (a zone serving with its intermediate CA); and
    proving the proxy's with --xds-cert/--xds-key or --xds-token-file.
    """
    from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, grpc_bootstrap, proxy_metadata
    from kontinuum.security.xds_auth import control_plane_identity, site_zone_identity

    if role not in {"sidecar", "gateway", "ingress"}:
        raise typer.BadParameter("must be sidecar, gateway or ingress", param_hint="--role")
    if (role == "ingress") != (gateway is not None):
        raise typer.BadParameter(
            "is needed with --role ingress, and only then", param_hint="--gateway"
        )
    metadata = proxy_metadata(
        namespace=namespace,
        role=role,
        service=service,
        inbound_port=inbound_port,
        inbound_address=inbound_address,
        outbound_port=None if grpc or role != "sidecar" else outbound_port,
        gateway=gateway,
        service_account=service_account,
    )
    tls = None
    if xds_ca is not None:
        token = xds_token_file.read_text().strip() if xds_token_file is not None else None
        site_zone = site_zone_identity(trust_domain, cluster)  # its site's zone may serve it
        try:
            tls = XdsClientTls(
                ca_file=str(xds_ca.resolve()),
                server_identity=str(control_plane_identity(trust_domain)),
                certificate_file=str(xds_cert.resolve()) if xds_cert else None,
                key_file=str(xds_key.resolve()) if xds_key else None,
                token=token or None,
                zone_identity=None if site_zone is None else str(site_zone),
            )
        except ValueError as error:
            raise typer.BadParameter(
                str(error), param_hint="--xds-cert/--xds-token-file"
            ) from error
    elif xds_cert or xds_key or xds_token_file:
        raise typer.BadParameter("xDS over TLS needs the fleet's root", param_hint="--xds-ca")
    if grpc:
        try:
            document = grpc_bootstrap(
                node_id=node_id,
                cluster=cluster,
                xds_address=xds_address,
                metadata=metadata,
                tls=tls,
            )
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--xds-token-file") from error
    else:
        stats = None if stats_address in (None, "", "none") else stats_address
        try:
            document = envoy_bootstrap(
                node_id=node_id,
                cluster=cluster,
                xds_address=xds_address,
                admin_port=admin_port,
                delta=not sotw,
                metadata=metadata,
                stats_address=stats,
                stats_inclusion_prefixes=stats_inclusion_prefix or (),
                tls=tls,
            )
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--stats-address") from error
    text = json.dumps(document, indent=2)
    if output is None:
        typer.echo(text)
        return
    from kontinuum.errors import write_error

    # A bootstrap may hold a token: written for its owner only, never briefly wider.
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(descriptor, 0o600)  # an existing file too, before anything is written
        with os.fdopen(descriptor, "w") as file:
            file.write(text + "\n")
    except OSError as error:
        raise write_error(error, output, "--output") from error


@app.command()
def status(
    xds_address: XdsAddress = "127.0.0.1:18000",
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            file_okay=False,
            help="A directory of cert.pem, key.pem and ca.pem (`kontinuum ca issue --ca-dir "
            "CA_DIR --cluster CLUSTER --namespace kontinuum-system --service-account operator "
            "--out DIR`): read status over TLS as the operator.",
        ),
    ] = None,
    admin_address: Annotated[
        str | None,
        address_option(
            "--admin-address",
            "The admin endpoint of a global (serve --federation-address): also show its "
            "zones, read from its /metrics.",
        ),
    ] = None,
) -> None:
    """Show every connected proxy and, per xDS type, SYNCED / STALE / NACKED / NOT_SENT;
    with --admin-address, every zone of the global too."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # not gRPC's log of a failed handshake
    import grpc

    from kontinuum.status import fetch_status, render_status

    channel_credentials = None
    if credentials is not None:
        try:
            channel_credentials = grpc.ssl_channel_credentials(
                (credentials / "ca.pem").read_bytes(),
                (credentials / "key.pem").read_bytes(),
                (credentials / "cert.pem").read_bytes(),
            )
        except OSError as error:
            raise typer.BadParameter(str(error), param_hint="--credentials") from error
    proxies = fetch_status(xds_address, credentials=channel_credentials)
    if admin_address is None:
        render_status(proxies)
        return
    from kontinuum.zone_status import fetch_zones, render_zones

    zones = fetch_zones(admin_address)
    render_status(proxies)
    render_zones(zones)


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds to run; Ctrl-C ends it earlier.")] = 30.0,
    config: Annotated[
        Path, typer.Option("--config", exists=True, file_okay=False, help="The fleet to run.")
    ] = Path("examples/fleet"),
) -> None:
    """Run the example fleet: real backends per endpoint, a real Envoy sidecar per site,
    live traffic to hello.demo.svc.clusterset.local, a site failing midway, and edge-paris
    as a zone whose link to the global is cut and restored; with a Prometheus scraping it
    all when one is installed."""
    from kontinuum.app import run_event_loop
    from kontinuum.demo import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        outcome = run_event_loop(run_demo(duration, config))
        if outcome is None:
            return
        for consumer in outcome.consumers:
            typer.echo(
                f"{consumer.site}: {dict(consumer.answers)}, "
                f"failed after the ejection window: {consumer.failed_after_window}"
            )
        if outcome.prometheus is not None:
            scraped = plural(outcome.targets_up, "target")
            typer.echo(f"Prometheus (stopped with the demo) scraped {scraped}")


@app.command()
def version() -> None:
    """Print the kontinuum version."""
    typer.echo(__version__)


def main() -> None:
    sys.exit(run(app))
