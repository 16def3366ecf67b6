"""`kontinuum ca` and `kontinuum token`: the fleet's CA, proxy certificates and bootstrap
tokens, from the command line (docs/security.md)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kontinuum.errors import OperatorError, write_error
from kontinuum.security.ca import CaError, CertificateAuthority
from kontinuum.security.spiffe import SpiffeId

if TYPE_CHECKING:
    from kontinuum.app import XdsSecurity

DEFAULT_TRUST_DOMAIN = "cluster.local"

ca_app = typer.Typer(
    name="ca",
    help="The fleet's certificate authority.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
token_app = typer.Typer(
    name="token", help="Bootstrap tokens for proxies.", no_args_is_help=True, rich_markup_mode=None
)

CaDir = Annotated[
    Path,
    typer.Option(
        "--ca-dir",
        envvar="KONTINUUM_CA_DIR",
        file_okay=False,
        help="The CA directory: ca.crt + ca.key (`kontinuum ca init`), or cert-manager's "
        "tls.crt + tls.key (+ ca.crt, the root).",
    ),
]
TrustDomain = Annotated[
    str, typer.Option("--trust-domain", help="The fleet's SPIFFE trust domain.")
]
Cluster = Annotated[str, typer.Option("--cluster", help="The fleet cluster it may claim.")]
Namespace = Annotated[str, typer.Option("--namespace", help="Its namespace (its workspace).")]
ServiceAccount = Annotated[str, typer.Option("--service-account", help="Its service account.")]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `1h`, `2d`, `1h30m` as a timedelta (ValueError otherwise)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m, 1h or 7d")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def duration_option(text: str, hint: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=hint) from error
    if value <= timedelta(0):
        raise typer.BadParameter("must be longer than 0s", param_hint=hint)
    return value


def load_ca(directory: Path, trust_domain: str) -> CertificateAuthority:
    """The CA of a directory, or an OperatorError saying why not."""
    try:
        return CertificateAuthority.load(directory, trust_domain)
    except CaError as error:
        raise OperatorError(str(error)) from error


def _identity(
    trust_domain: str, namespace: str, service_account: str, *, token: bool = False
) -> SpiffeId:
    """The SPIFFE ID of the options; never the control plane's, and for a token never a
    zone's either (a zone's credential is a certificate, `ca issue --cluster <site>`)."""
    from kontinuum.security.zone_ca import is_control_plane, zone_site_of

    try:
        identity = SpiffeId.parse(f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if is_control_plane(identity):
        raise typer.BadParameter(
            f"{identity} is the control plane's own identity, which proxies pin: kontinuum "
            "issues it only to itself",
            param_hint="--service-account",
        )
    if token and (site := zone_site_of(identity)) is not None:
        raise typer.BadParameter(
            f"{identity} is the identity of the zone of site {site!r}, which that site's "
            "proxies pin as their xDS server: no token names it (a zone proves it with a "
            f"certificate, `kontinuum ca issue --cluster {site}`)",
            param_hint="--service-account",
        )
    return identity


def serve_security(
    ca_dir: Path | None,
    trust_domain: str,
    plaintext: bool,
    token_address: str | None,
    server_names: tuple[str, ...],
    workload_validity: timedelta,
    federation_address: str | None = None,
) -> XdsSecurity:
    """The security of `kontinuum serve`, from its options (or a clear refusal)."""
    from kontinuum.app import XdsSecurity
    from kontinuum.bootstrap import split_address

    if token_address is not None:
        try:
            split_address(token_address)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--xds-token-address") from error
    if plaintext:
        # A plaintext server believes what nodes declare, so it would sign any identity:
        # never with the fleet's CA, and never next to a port proxies trust.
        if federation_address is not None:
            raise typer.BadParameter(
                "zones prove who they are with certificates of the fleet CA (--ca-dir), "
                "which a plaintext server never uses",
                param_hint="--federation-address",
            )
        if ca_dir is not None or token_address is not None:
            raise typer.BadParameter(
                "a plaintext server signs whatever identity a node declares: it runs with "
                "a CA of its own, never the fleet's (--ca-dir) nor a token address",
                param_hint="--plaintext-xds",
            )
        ca = CertificateAuthority.generate(trust_domain)  # this run's: proxies get its root
    elif ca_dir is not None:
        ca = load_ca(ca_dir, trust_domain)
    else:
        raise typer.BadParameter(
            "the xDS server serves TLS: give the fleet CA (`kontinuum ca init --ca-dir DIR`), "
            "or, for local development only, --plaintext-xds",
            param_hint="--ca-dir",
        )
    from kontinuum.security.workload import MAX_VALIDITY, MIN_VALIDITY

    if not MIN_VALIDITY <= workload_validity <= MAX_VALIDITY:
        raise typer.BadParameter(
            f"must be between {MIN_VALIDITY} and {MAX_VALIDITY}",
            param_hint="--workload-cert-validity",
        )
    return XdsSecurity(
        ca, plaintext, token_address, server_names, workload_validity, federation_address
    )


@ca_app.command("init")
def ca_init(
    ca_dir: CaDir,
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    validity: Annotated[str, typer.Option(help="The root's lifetime.")] = "3650d",
) -> None:
    """Create a self-signed root CA for the fleet in --ca-dir (ca.key mode 0600)."""
    ca = CertificateAuthority.generate(
        trust_domain, validity=duration_option(validity, "--validity")
    )
    try:
        ca.save(ca_dir)
    except CaError as error:
        raise OperatorError(str(error)) from error
    except OSError as error:
        raise write_error(error, ca_dir, "--ca-dir") from error
    typer.echo(f"CA of trust domain {trust_domain} written to {ca_dir} (ca.crt, ca.key)")


@ca_app.command("issue")
def ca_issue(
    ca_dir: CaDir,
    cluster: Cluster,
    namespace: Namespace,
    service_account: ServiceAccount,
    out: Annotated[
        Path,
        typer.Option("--out", file_okay=False, help="Where to write cert.pem, key.pem, ca.pem."),
    ],
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    validity: Annotated[str, typer.Option(help="The certificate's lifetime.")] = "24h",
) -> None:
    """Issue a proxy's (or an operator's) client certificate for the xDS server.

    Its SPIFFE ID is spiffe://<trust domain>/ns/<namespace>/sa/<service account>; its
    subject OU names the one cluster it may claim. key.pem is written with mode 0600. An
    ingress gateway of a Gateway with an HTTPS listener takes the Gateway's namespace and
    its name as the service account: no other identity is given its TLS keys.
    """
    ca = load_ca(ca_dir, trust_domain)
    identity = _identity(trust_domain, namespace, service_account)
    try:
        issued = ca.issue_workload(identity, cluster, duration_option(validity, "--validity"))
    except CaError as error:
        raise OperatorError(str(error)) from error
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        (out / "cert.pem").write_bytes(issued.certificate_chain_pem)
        (out / "ca.pem").write_bytes(ca.trust_bundle_pem)
        _write_key(out / "key.pem", issued.private_key_pem)
    except OSError as error:
        raise write_error(error, out, "--out") from error
    typer.echo(f"{identity} (cluster {cluster}) until {issued.not_after:%Y-%m-%d %H:%M} UTC: {out}")


@ca_app.command("intermediate")
def ca_intermediate(
    ca_dir: CaDir,
    site: Annotated[
        str,
        typer.Option(
            "--site",
            help="The zone's site (its ClusterProfile): the only cluster what the intermediate "
            "issues may claim.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            file_okay=False,
            help="Where to write the zone's CA directory: tls.crt, tls.key, ca.crt (give it to "
            "`kontinuum zone --ca-dir`).",
        ),
    ],
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    validity: Annotated[str, typer.Option(help="The intermediate's lifetime.")] = "90d",
    dns_name: Annotated[
        list[str] | None,
        typer.Option(
            "--dns-name",
            help="A host name the zone's xDS server presents (its --xds-server-name; "
            "repeatable): the intermediate may then name these (and their subdomains) and "
            "no other host nor any IP address in a certificate (a critical X.509 name "
            "constraint), so clients that check host names (gRPC, the zone's check of the "
            "global) refuse what it signs for the global's host. Envoys check the URI SAN "
            "they pin, not host names.",
        ),
    ] = None,
) -> None:
    """Issue a zone's intermediate CA, signed by the fleet's CA and limited to its site.

    The zone serves its site's proxies with it (`kontinuum zone --xds-address ... --ca-dir
    OUT`) instead of the fleet's key: what it issues may claim its site only, at the global
    and at every xDS server, and it signs no further CA (pathlen 0). Its SPIFFE ID is the
    zone's, spiffe://<trust domain>/ns/kontinuum-system/sa/zone-<site>, which the zone's xDS
    server presents (it does not issue the control plane's identity). OUT is a
    cert-manager CA Secret's layout: tls.crt (the intermediate and the chain above it),
    tls.key (mode 0600), ca.crt (the root). With --dns-name, the host names its server
    certificates may carry are limited to those (docs/federation.md).
    """
    from kontinuum.control.objects import dns_label, dns_subdomain

    if problem := dns_label(site):
        raise typer.BadParameter(f"the site {problem}", param_hint="--site")
    for name in dns_name or ():
        if problem := dns_subdomain(name):
            raise typer.BadParameter(f"the host name {problem}", param_hint="--dns-name")
    ca = load_ca(ca_dir, trust_domain)
    try:
        issued = ca.issue_zone_ca(
            site, duration_option(validity, "--validity"), dns_names=dns_name or ()
        )
    except CaError as error:
        raise OperatorError(str(error)) from error
    except ValueError as error:  # a site too long for the zone's SPIFFE ID
        raise typer.BadParameter(str(error), param_hint="--site") from error
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_key(out / "tls.key", issued.private_key_pem)
        (out / "tls.crt").write_bytes(issued.certificate_chain_pem)
        (out / "ca.crt").write_bytes(ca.trust_bundle_pem)
    except OSError as error:
        raise write_error(error, out, "--out") from error
    names = f", host names {', '.join(dns_name)} only" if dns_name else ""
    typer.echo(
        f"zone CA of site {site} ({issued.spiffe_id}{names}) until "
        f"{issued.not_after:%Y-%m-%d %H:%M} UTC: {out}"
    )


def _write_key(path: Path, key_pem: bytes) -> None:
    """Write a private key readable by its owner only (an existing file too)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(descriptor, 0o600)  # before the key is written
    with os.fdopen(descriptor, "wb") as file:
        file.write(key_pem)


@token_app.command("create")
def token_create(
    ca_dir: CaDir,
    cluster: Cluster,
    namespace: Namespace,
    service_account: ServiceAccount,
    trust_domain: TrustDomain = DEFAULT_TRUST_DOMAIN,
    validity: Annotated[str, typer.Option(help="How long the token is accepted.")] = "24h",
) -> None:
    """Print a bootstrap token: a proxy without a certificate presents it to the xDS
    server's token address (`kontinuum bootstrap --xds-token-file`)."""
    from kontinuum.security.tokens import issue_token

    ca = load_ca(ca_dir, trust_domain)
    identity = _identity(trust_domain, namespace, service_account, token=True)
    try:
        token = issue_token(ca, identity, cluster, duration_option(validity, "--validity"))
    except (CaError, ValueError) as error:
        raise OperatorError(str(error)) from error
    typer.echo(token)
