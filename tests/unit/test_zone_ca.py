"""A zone's intermediate CA (kontinuum.security.zone_ca), with real cryptography and real
TLS: what `kontinuum ca intermediate` writes, what the zone issues with it, and that what
it issues may claim its own site only, at the global's federation admission and at every
xDS server."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from kontinuum.cli import app
from kontinuum.mesh import Mesh
from kontinuum.security.ca import CaError, CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.workload import WorkloadCertificates, WorkloadIdentity
from kontinuum.security.xds_auth import (
    FleetAuthenticator,
    ServerCertificate,
    control_plane_identity,
    operator_identity,
    server_identity,
)
from kontinuum.telemetry.metrics import XdsCollector
from kontinuum.xds import Peer, SnapshotCache, XdsServer, types
from tests.support.fleet import cluster_profile, load_into
from tests.support.net import free_port
from tests.support.security import ads, node, refusal, uri_sans, write_credentials
from tests.support.zone_ca import minted, write_zone_ca, zone_authority

TD = "cluster.local"
CONTROL = f"spiffe://{TD}/ns/kontinuum-system"
WEB = SpiffeId(TD, "demo", "web")
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def fleet_ca() -> CertificateAuthority:
    return CertificateAuthority.generate(TD)


def test_ca_intermediate_writes_a_zone_ca_limited_to_its_site(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir, out = tmp_path / "ca", tmp_path / "zone-ca"
    assert runner.invoke(app, ["ca", "init", "--ca-dir", str(ca_dir)]).exit_code == 0
    done = runner.invoke(
        app,
        ["ca", "intermediate", "--ca-dir", str(ca_dir), "--site", "edge-paris",
         "--out", str(out), "--validity", "30d"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "zone-edge-paris" in done.output
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    (intermediate,) = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())
    (root,) = x509.load_pem_x509_certificates((out / "ca.crt").read_bytes())
    intermediate.verify_directly_issued_by(root)
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    assert uri_sans(intermediate.public_bytes(Encoding.PEM)) == [
        f"spiffe://{TD}/ns/kontinuum-system/sa/zone-edge-paris"
    ]
    assert timedelta(days=29) < intermediate.not_valid_after_utc - root.not_valid_before_utc
    zone = CertificateAuthority.load(out, TD)
    assert zone.site == "edge-paris"
    assert zone.trust_bundle_pem == (ca_dir / "ca.crt").read_bytes()

    # A zone's CA signs no further CA, and the site is a DNS label.
    again = runner.invoke(
        app, ["ca", "intermediate", "--ca-dir", str(out), "--site", "x", "--out", str(tmp_path)]
    )
    assert "signs no further CA (pathlen 0)" in str(again.exception)
    bad = runner.invoke(
        app,
        ["ca", "intermediate", "--ca-dir", str(ca_dir), "--site", "Edge_Paris",
         "--out", str(tmp_path / "bad")],
    )  # fmt: skip
    assert bad.exit_code == 2
    assert not (tmp_path / "bad").exists()


def test_serve_refuses_a_zone_ca_at_start_up(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    _, zone_dir = zone_authority(fleet_ca, "edge-paris")
    fleet = Path(__file__).parents[2] / "examples" / "fleet"
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    # A process of its own, bounded: a global that started would serve until stopped.
    done = subprocess.run(
        [sys.executable, "-m", "kontinuum", "serve", "--config", str(fleet),
         "--ca-dir", str(zone_dir), "--xds-address", addresses[0],
         "--admin-address", addresses[1], "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "--ca-dir" in done.stderr
    assert "the zone CA of site edge-paris" in done.stderr


def test_what_a_zone_issues_chains_to_the_root_and_names_its_issuing_site(
    fleet_ca: CertificateAuthority,
) -> None:
    zone, _ = zone_authority(fleet_ca, "edge-paris")
    issued = zone.issue_workload(WEB, "edge-paris", HOUR)
    # The chain is sent: a peer trusting the root alone accepts it.
    assert len(x509.load_pem_x509_certificates(issued.certificate_chain_pem)) == 2
    assert fleet_ca.verify(issued.certificate_chain_pem).issuing_site == "edge-paris"
    assert fleet_ca.issuing_site(issued.certificate_chain_pem) == "edge-paris"
    # The zone knows its own intermediate without the chain.
    assert zone.issuing_site(issued.certificate_chain_pem.split(b"-----END CERTIFICATE-----")[0]
                             + b"-----END CERTIFICATE-----\n") == "edge-paris"  # fmt: skip
    # The fleet's own certificates behave as before, at the global and at the zone.
    fleet = fleet_ca.issue_workload(WEB, "eu", HOUR)
    assert fleet_ca.verify(fleet.certificate_chain_pem).issuing_site is None
    assert zone.issuing_site(fleet.certificate_chain_pem) is None
    # The zone's CA issues its own site's certificates only.
    with pytest.raises(CaError, match="issues certificates of cluster edge-paris only"):
        zone.issue_workload(WEB, "eu", HOUR)
    with pytest.raises(CaError, match="signs no further CA"):
        zone.issue_zone_ca("eu", HOUR)


def test_a_zone_s_xds_server_presents_its_zone_s_identity_never_the_control_plane_s(
    fleet_ca: CertificateAuthority,
) -> None:
    zone, _ = zone_authority(fleet_ca, "edge-paris")
    control_plane = control_plane_identity(TD)
    with pytest.raises(CaError, match="does not issue the control plane's identity"):
        zone.issue_server(control_plane, ["127.0.0.1"], HOUR)
    with pytest.raises(CaError, match="does not issue the control plane's identity"):
        zone.issue_workload(control_plane, "edge-paris", HOUR)
    # The xDS server of the zone presents the zone's own identity, issued by its CA; the
    # fleet's CA (the global, a zone run with it) presents the control plane's, as before.
    assert str(server_identity(zone)) == f"{CONTROL}/sa/zone-edge-paris"
    issued = zone.issue_server(server_identity(zone), ["127.0.0.1"], HOUR)
    assert fleet_ca.verify(issued.certificate_chain_pem).issuing_site == "edge-paris"
    assert server_identity(fleet_ca) == control_plane


@pytest.mark.parametrize(
    ("cluster", "pinned"),
    [
        ("edge-paris", [f"{CONTROL}/sa/kontinuum", f"{CONTROL}/sa/zone-edge-paris"]),
        ("Not_A_Site", [f"{CONTROL}/sa/kontinuum"]),  # no zone can serve it
    ],
)
def test_bootstrap_pins_the_control_plane_or_the_zone_of_the_proxy_s_cluster(
    tmp_path: Path, cluster: str, pinned: list[str]
) -> None:
    root = tmp_path / "ca.pem"
    root.write_text("")
    for proof in (
        ["--xds-cert", str(root), "--xds-key", str(root)],
        ["--xds-token-file", str(root)],
    ):
        root.write_text("token")
        done = CliRunner().invoke(
            app,
            ["bootstrap", "--node-id", "a", "--cluster", cluster, "--namespace", "demo",
             "--xds-ca", str(root), *proof],
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        (xds,) = [
            c for c in json.loads(done.output)["static_resources"]["clusters"]
            if c["name"] == "kontinuum-xds"
        ]  # fmt: skip
        context = xds["transport_socket"]["typed_config"]["common_tls_context"]
        matchers = context["validation_context"]["match_typed_subject_alt_names"]
        assert matchers == [{"san_type": "URI", "matcher": {"exact": uri}} for uri in pinned]


def test_a_chain_below_a_zone_ca_is_refused(fleet_ca: CertificateAuthority, tmp_path: Path) -> None:
    _, zone_dir = zone_authority(fleet_ca, "edge-paris")
    sub_chain, sub_key = minted(zone_dir, SpiffeId(TD, "demo", "sub"), "edge-paris", ca=True)
    sub_dir = tmp_path / "sub"
    sub_dir.mkdir()
    (sub_dir / "tls.crt").write_bytes(sub_chain)
    (sub_dir / "tls.key").write_bytes(sub_key)
    (sub_dir / "tls.key").chmod(0o600)
    (sub_dir / "ca.crt").write_bytes(fleet_ca.trust_bundle_pem)
    leaf, _ = minted(sub_dir, WEB, "edge-paris")
    with pytest.raises(CaError):
        fleet_ca.verify(leaf)
    with pytest.raises(CaError, match="nor by a zone CA it issued"):
        fleet_ca.issuing_site(leaf)
    with pytest.raises(CaError):
        CertificateAuthority.load(sub_dir, TD)


def test_a_zone_ca_of_another_fleet_is_no_issuer(fleet_ca: CertificateAuthority) -> None:
    other_fleet = CertificateAuthority.generate(TD)
    stranger, _ = zone_authority(other_fleet, "edge-paris")
    issued = stranger.issue_workload(WEB, "edge-paris", HOUR)
    with pytest.raises(CaError, match="is not issued by this fleet's CA"):
        fleet_ca.issuing_site(issued.certificate_chain_pem)


def test_the_issuing_site_is_read_from_the_verified_path_not_the_presented_order(
    fleet_ca: CertificateAuthority,
) -> None:
    zone_a, a_dir = zone_authority(fleet_ca, "edge-a")
    # What zone A's key signs by hand: a leaf of site edge-b, and a self-made "zone CA of
    # edge-b" (zone A's subject and key, self-signed) presented ahead of zone A's real CA.
    chain, _ = minted(a_dir, SpiffeId(TD, "kontinuum-system", "zone-edge-b"), "edge-b")
    leaf, real_a = x509.load_pem_x509_certificates(chain)[:2]
    key = serialization.load_pem_private_key((a_dir / "tls.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    fake = (
        x509.CertificateBuilder()
        .subject_name(real_a.subject)
        .issuer_name(real_a.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real_a.not_valid_before_utc)
        .not_valid_after(real_a.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                f"spiffe://{TD}/ns/kontinuum-system/sa/zone-edge-b"
            )]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    presented = b"".join(c.public_bytes(Encoding.PEM) for c in (leaf, fake, real_a))
    assert fleet_ca.verify(presented).issuing_site == "edge-a"
    assert zone_a.verify(presented).issuing_site == "edge-a"
    with pytest.raises(CaError):  # the gRPC path's check refuses the chain outright
        fleet_ca.issuing_site(presented)


def test_a_token_signed_by_a_zone_s_key_is_of_its_site(fleet_ca: CertificateAuthority) -> None:
    from kontinuum.security.tokens import issue_token, verify_token

    zone, _ = zone_authority(fleet_ca, "edge-paris")
    token = issue_token(zone, WEB, "edge-paris", HOUR)
    with pytest.raises(ValueError, match="not signed by this fleet's CA"):
        verify_token(fleet_ca, token)  # the global knows the root's key only
    assert verify_token(zone, token).cluster == "edge-paris"
    with pytest.raises(CaError, match="signs tokens of cluster edge-paris only"):
        issue_token(zone, WEB, "eu", HOUR)
    # No token names a zone's identity (nor the control plane's), whichever CA signs it.
    for authority in (fleet_ca, zone):
        for reserved in (server_identity(zone), control_plane_identity(TD)):
            with pytest.raises(CaError, match="no token names it"):
                issue_token(authority, reserved, "edge-paris", HOUR)


async def _authenticated(
    server_ca: CertificateAuthority, chain: bytes, key: bytes
) -> Peer | grpc.aio.AioRpcError:
    """Who `FleetAuthenticator` of `server_ca` says the client of a real mutual-TLS call
    with the certificate `chain` (and `key`) is, or the call's refusal."""
    authenticator = FleetAuthenticator(server_ca)
    peers: list[Peer] = []

    async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            peers.append(authenticator.authenticate(context))
        except PermissionError as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(
            "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(handler)}
        ),)
    )  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    certificate = ServerCertificate(server_ca, ["127.0.0.1"])
    server.add_secure_port(address, certificate.credentials(require_client_certificate=True))
    await server.start()
    credentials = grpc.ssl_channel_credentials(server_ca.trust_bundle_pem, key, chain)
    try:
        async with grpc.aio.secure_channel(address, credentials) as channel:
            await asyncio.wait_for(channel.unary_unary("/test.Who/Am")(b""), 10)
    except grpc.aio.AioRpcError as error:
        return error
    finally:
        await server.stop(0)
    return peers[0]


async def test_the_xds_authenticator_reads_the_issuing_site_from_the_chain_sent(
    fleet_ca: CertificateAuthority,
) -> None:
    zone, _ = zone_authority(fleet_ca, "edge-paris")
    issued = zone.issue_workload(WEB, "edge-paris", HOUR)
    for server_ca in (fleet_ca, zone):  # at the global and at the zone
        peer = await _authenticated(server_ca, issued.certificate_chain_pem, issued.private_key_pem)
        assert isinstance(peer, Peer)
        assert peer.claims["issuing_site"] == "edge-paris"
    fleet = fleet_ca.issue_workload(WEB, "eu", HOUR)
    peer = await _authenticated(zone, fleet.certificate_chain_pem, fleet.private_key_pem)
    assert isinstance(peer, Peer)
    assert "issuing_site" not in peer.claims


@pytest.fixture
def mesh(tmp_path: Path, fleet_ca: CertificateAuthority) -> Mesh:
    root = tmp_path / "fleet"
    for cluster in ("eu", "edge-paris"):
        (root / "clusters" / cluster).mkdir(parents=True)
    (root / "clusters.yaml").write_text(
        cluster_profile("eu", "eu-central-1") + "---\n" + cluster_profile("edge-paris", "eu-x")
    )
    built = Mesh(SnapshotCache(), WorkloadCertificates(fleet_ca))
    load_into(built, root)
    return built


async def test_xds_admits_what_a_zone_issued_for_its_own_cluster_only(
    fleet_ca: CertificateAuthority, mesh: Mesh
) -> None:
    _, zone_dir = zone_authority(fleet_ca, "edge-paris")
    # The zone's key signs, by hand, a certificate of cluster eu: the handshake accepts it
    # (it chains to the root), the view resolver refuses it.
    chain, key = minted(zone_dir, WEB, "eu")
    peer = await _authenticated(fleet_ca, chain, key)
    assert isinstance(peer, Peer)
    assert peer.claims == {"via": "certificate", "cluster": "eu", "issuing_site": "edge-paris"}
    with pytest.raises(PermissionError, match="issued by the zone CA of site 'edge-paris'"):
        mesh.resolve_view(node("web-1", "eu", "demo"), peer)
    # Of its own cluster, it is admitted.
    own, own_key = minted(zone_dir, WEB, "edge-paris")
    peer = await _authenticated(fleet_ca, own, own_key)
    assert isinstance(peer, Peer)
    assert mesh.resolve_view(node("web-1", "edge-paris", "demo"), peer).endswith("@web")


async def test_a_certificate_below_a_zone_ca_fails_the_handshake(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    _, zone_dir = zone_authority(fleet_ca, "edge-paris")
    sub_chain, sub_key = minted(zone_dir, SpiffeId(TD, "demo", "sub"), "edge-paris", ca=True)
    sub_dir = tmp_path / "sub"
    sub_dir.mkdir()
    (sub_dir / "tls.crt").write_bytes(sub_chain)
    (sub_dir / "tls.key").write_bytes(sub_key)
    leaf, key = minted(sub_dir, WEB, "edge-paris")
    refused = await _authenticated(fleet_ca, leaf, key)
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() is grpc.StatusCode.UNAVAILABLE  # no TLS connection at all


def test_write_zone_ca_is_the_layout_load_reads(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    write_zone_ca(fleet_ca.issue_zone_ca("edge-paris", HOUR), fleet_ca, tmp_path / "z")
    assert CertificateAuthority.load(tmp_path / "z", TD).site == "edge-paris"


def test_an_operator_identity_a_zone_issued_reads_no_fleet_status() -> None:
    operator = f"spiffe://{TD}/ns/kontinuum-system/sa/operator"
    assert operator_identity(Peer("ipv4:127.0.0.1:1", operator, {"cluster": "eu"}))
    assert not operator_identity(
        Peer("ipv4:127.0.0.1:1", operator, {"cluster": "eu", "issuing_site": "eu"})
    )


async def test_a_serving_zone_refuses_proxies_of_another_site(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    zone, _ = zone_authority(fleet_ca, "edge-paris")
    root = tmp_path / "fleet"
    for cluster in ("eu", "edge-paris"):
        (root / "clusters" / cluster).mkdir(parents=True)
    (root / "clusters.yaml").write_text(
        cluster_profile("eu", "eu-central-1") + "---\n" + cluster_profile("edge-paris", "eu-x")
    )
    mesh = Mesh(SnapshotCache(), WorkloadCertificates(zone), site="edge-paris")
    load_into(mesh, root)
    server = XdsServer(
        mesh.cache, resolve_view=mesh.resolve_view, authenticator=FleetAuthenticator(zone)
    )
    port = await server.start(
        f"127.0.0.1:{free_port()}",
        ServerCertificate(zone, ["127.0.0.1"]).credentials(require_client_certificate=True),
    )
    address = f"127.0.0.1:{port}"
    try:
        # A proxy of eu with a certificate of the fleet's CA itself, which eu's proxies
        # rightly hold: the handshake accepts it; the zone of edge-paris does not serve it.
        eu = fleet_ca.issue_workload(WEB, "eu", HOUR)
        credentials = write_credentials(tmp_path / "eu", eu, fleet_ca).channel_credentials()
        refused = await refusal(address, credentials, node("web-1", "eu", "demo"), types.CLUSTER)
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED
        assert refused.details == (
            "this zone serves the proxies of site 'edge-paris' only; the node claims cluster "
            "'eu': bootstrap it to its own site's zone or to the global"
        )
        assert server.stats.streams_refused == 1
        (family,) = [
            f for f in XdsCollector(server).collect() if f.name == "kontinuum_xds_streams_refused"
        ]
        assert {s.labels["reason"]: s.value for s in family.samples}["denied"] == 1
        # Its own site's proxy, with the same fleet CA's certificate, is served.
        own = fleet_ca.issue_workload(WEB, "edge-paris", HOUR)
        credentials = write_credentials(tmp_path / "own", own, fleet_ca).channel_credentials()
        served = await ads(
            address, credentials, node("web-1", "edge-paris", "demo"), [(types.CLUSTER, [])]
        )
        assert types.CLUSTER in served
        assert server.stats.streams_refused == 1
    finally:
        await server.stop(0)


def test_a_zone_s_identity_is_its_own_zone_s_xds_server_s_or_a_fleet_credential_of_its_site(
    fleet_ca: CertificateAuthority,
) -> None:
    zone, _ = zone_authority(fleet_ca, "edge-paris")
    other_zone = SpiffeId(TD, "kontinuum-system", "zone-edge-b")
    own_zone = server_identity(zone)
    # Another zone's identity: never, not even for the zone's own xDS server.
    with pytest.raises(CaError, match="does not issue the identity of another zone"):
        zone.issue_workload(other_zone, "edge-paris", HOUR)
    with pytest.raises(CaError, match="does not issue the identity of another zone"):
        zone.issue_server(other_zone, ["127.0.0.1"], HOUR)
    # Its own: for its xDS server only, not as a workload's certificate (SDS) nor a
    # credential of its site.
    for cluster in ("edge-paris", None):
        with pytest.raises(CaError, match="for its own xDS server certificate only"):
            zone.issue_workload(own_zone, cluster, HOUR)
    with pytest.raises(CaError, match="does not issue the identity of another zone"):
        WorkloadCertificates(zone).certificate(WorkloadIdentity(other_zone, "edge-paris"))
    assert uri_sans(zone.issue_server(own_zone, ["127.0.0.1"], HOUR).certificate_chain_pem) == [
        str(own_zone)
    ]
    # The fleet's CA issues a zone's credential, of the zone's site only.
    for cluster in ("eu", None):
        with pytest.raises(CaError, match=r"of cluster edge-paris only \(--cluster edge-paris\)"):
            fleet_ca.issue_workload(own_zone, cluster, HOUR)
    with pytest.raises(CaError, match="not for a server"):
        fleet_ca.issue_server(own_zone, ["127.0.0.1"], HOUR)
    issued = fleet_ca.issue_workload(own_zone, "edge-paris", HOUR)
    assert fleet_ca.verify(issued.certificate_chain_pem).cluster == "edge-paris"


def test_ca_issue_and_token_create_reserve_the_zones_identities(tmp_path: Path) -> None:
    runner = CliRunner()
    fleet, zone = tmp_path / "ca", tmp_path / "zone-ca"
    assert runner.invoke(app, ["ca", "init", "--ca-dir", str(fleet)]).exit_code == 0
    intermediate = ["ca", "intermediate", "--ca-dir", str(fleet), "--site", "edge-paris"]
    assert runner.invoke(app, [*intermediate, "--out", str(zone)]).exit_code == 0

    def run(verb: list[str], ca_dir: Path, cluster: str, account: str) -> tuple[int, str]:
        done = runner.invoke(
            app,
            [*verb, "--ca-dir", str(ca_dir), "--cluster", cluster,
             "--namespace", "kontinuum-system", "--service-account", account],
        )  # fmt: skip
        return done.exit_code, " ".join(f"{done.output} {done.exception or ''}".split())

    issue = ["ca", "issue", "--out", str(tmp_path / "out")]
    code, said = run(issue, fleet, "eu", "zone-edge-paris")
    assert code != 0
    assert "of cluster edge-paris only (--cluster edge-paris), not for cluster eu" in said
    assert not (tmp_path / "out" / "cert.pem").exists()
    code, said = run(issue, zone, "edge-paris", "zone-edge-paris")
    assert code != 0
    assert "for its own xDS server certificate only" in said
    code, said = run(issue, zone, "edge-paris", "zone-edge-b")
    assert code != 0
    assert "does not issue the identity of another zone" in said
    code, said = run(["token", "create"], fleet, "edge-paris", "zone-edge-paris")
    assert code == 2
    assert "no token names it" in said
    # A zone's credential, of its own site, from the fleet's CA: as before.
    code, said = run(issue, fleet, "edge-paris", "zone-edge-paris")
    assert code == 0, said
    assert uri_sans((tmp_path / "out" / "cert.pem").read_bytes()) == [
        f"{CONTROL}/sa/zone-edge-paris"
    ]


@pytest.mark.parametrize("credential", ["the zone's own", "another zone's, its key signs"])
async def test_no_proxy_holds_a_zone_s_identity(
    fleet_ca: CertificateAuthority, tmp_path: Path, credential: str
) -> None:
    """A proxy presenting a zone's identity (`ns/kontinuum-system/sa/zone-*`), which the
    site's proxies pin as their xDS server, is refused by a serving zone, as a proxy of the
    control plane's identity is: it would get a certificate of that identity over SDS."""
    zone, zone_dir = zone_authority(fleet_ca, "edge-paris")
    if credential == "the zone's own":
        issued = fleet_ca.issue_workload(server_identity(zone), "edge-paris", HOUR)
        chain, key = issued.certificate_chain_pem, issued.private_key_pem
    else:
        chain, key = minted(zone_dir, SpiffeId(TD, "kontinuum-system", "zone-edge-b"), "edge-paris")
    (tmp_path / "fleet" / "clusters" / "edge-paris").mkdir(parents=True)
    (tmp_path / "fleet" / "clusters.yaml").write_text(cluster_profile("edge-paris", "eu-x"))
    mesh = Mesh(SnapshotCache(), WorkloadCertificates(zone), site="edge-paris")
    load_into(mesh, tmp_path / "fleet")
    server = XdsServer(
        mesh.cache, resolve_view=mesh.resolve_view, authenticator=FleetAuthenticator(zone)
    )
    port = await server.start(
        f"127.0.0.1:{free_port()}",
        ServerCertificate(zone, ["127.0.0.1"]).credentials(require_client_certificate=True),
    )
    try:
        credentials = grpc.ssl_channel_credentials(fleet_ca.trust_bundle_pem, key, chain)
        claimed = node("z-1", "edge-paris", "kontinuum-system")
        refused = await refusal(f"127.0.0.1:{port}", credentials, claimed, types.CLUSTER)
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED
        assert "is the identity of the zone of site" in refused.details
        assert "pin as their xDS server: no proxy holds it" in refused.details
        (family,) = [
            f for f in XdsCollector(server).collect() if f.name == "kontinuum_xds_streams_refused"
        ]
        assert {s.labels["reason"]: s.value for s in family.samples}["denied"] == 1
    finally:
        await server.stop(0)
    # Nor does a plaintext node declaring one (local development: its word is believed).
    declared = node("z-2", "edge-paris", "kontinuum-system", service_account="zone-edge-b")
    with pytest.raises(PermissionError, match="no proxy holds it"):
        mesh.resolve_view(declared, Peer("ipv4:127.0.0.1:1"))
