"""`kontinuum zone`: run a site's zone control plane (docs/federation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kontinuum.cli_options import AdminAddress, Verbose, address_option, serve_until_stopped


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
        str,
        address_option("--global", "The global control plane's --federation-address."),
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
    server_name: Annotated[
        str,
        typer.Option(
            "--server-name",
            help="The name the global's certificate is checked against, when it is not the "
            "host of --global (one of the global's --server-name).",
        ),
    ] = "",
    admin_address: AdminAddress = "127.0.0.1:18011",
    verbose: Verbose = False,
) -> None:
    """Publish a site to the global control plane: dial out over mutual TLS and send the
    site's objects, then only what changes (docs/federation.md).

    The zone does not serve xDS to the site's proxies yet: they connect to the global.
    """
    from kontinuum.app import run_zone
    from kontinuum.cli_options import setup_logging
    from kontinuum.control.model import KubernetesAccess
    from kontinuum.control.objects import dns_label
    from kontinuum.errors import OperatorError
    from kontinuum.federation.zone import CredentialsError, ZoneSettings, channel_credentials

    if problem := dns_label(site):
        raise typer.BadParameter(f"the site {problem}", param_hint="--site")
    where: Path | KubernetesAccess
    if (config is None) == (context is None):
        raise typer.BadParameter(
            "give the site's files (--config) or its Kubernetes API (--context), one of them",
            param_hint="--config/--context",
        )
    if config is not None:
        where = config
    elif context == "in-cluster":
        where = KubernetesAccess(in_cluster=True)
    else:
        where = KubernetesAccess(kubeconfig=str(kubeconfig or ""), context=context or "")
    try:
        channel_credentials(credentials)  # readable now; read again at each dial
    except CredentialsError as error:
        raise OperatorError(str(error)) from error
    options = ZoneSettings(site, global_address, credentials, where, server_name)
    setup_logging(verbose)
    serve_until_stopped(run_zone(options, admin_address), {"--admin-address": admin_address})
