"""A zone CA limited to host names (`kontinuum ca intermediate --dns-name`), with real
cryptography and real TLS: a server certificate its key signs for another host, the
global's among them, fails the handshake of a real gRPC client holding the zone's own
credentials; what it may issue (its xDS server's certificate, workloads' SPIFFE IDs) is
accepted by gRPC's TLS and by kontinuum's own verifier."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from typer.testing import CliRunner

from kontinuum.cli import app
from kontinuum.federation.global_identity import GlobalCheck, GlobalIdentityError
from kontinuum.federation.zone import channel_credentials
from kontinuum.security.ca import CaError, CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import (
    FleetAuthenticator,
    control_plane_identity,
    server_hosts,
)
from kontinuum.security.zone_ca import zone_identity
from kontinuum.xds import Peer
from tests.support.net import free_port
from tests.support.security import write_credentials
from tests.support.zone_ca import minted, zone_authority

TD = "cluster.local"
WEB = SpiffeId(TD, "demo", "web")
HOUR = timedelta(hours=1)
GLOBAL_HOST = "global.example.net"
ZONE_HOST = "zone.edge-paris.example"
CONTROL_PLANE = control_plane_identity(TD)
ZONE_SERVER = zone_identity(TD, "edge-paris")  # what the zone's xDS server presents


@pytest.fixture(scope="module")
def fleet_ca() -> CertificateAuthority:
    return CertificateAuthority.generate(TD)


def test_ca_intermediate_with_dns_names_writes_a_critical_name_constraint(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    ca_dir, out = tmp_path / "ca", tmp_path / "zone-ca"
    assert runner.invoke(app, ["ca", "init", "--ca-dir", str(ca_dir)]).exit_code == 0
    done = runner.invoke(
        app,
        ["ca", "intermediate", "--ca-dir", str(ca_dir), "--site", "edge-paris",
         "--out", str(out), "--dns-name", ZONE_HOST, "--dns-name", "xds.edge-paris.example"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"host names {ZONE_HOST}, xds.edge-paris.example only" in done.output
    (intermediate,) = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())
    constraints = intermediate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [
        x509.DNSName(ZONE_HOST),
        x509.DNSName("xds.edge-paris.example"),
    ]
    assert constraints.value.excluded_subtrees == [
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    ]
    assert CertificateAuthority.load(out, TD).site == "edge-paris"

    # Without --dns-name, no name constraint: the weaker default, as before.
    plain = tmp_path / "plain"
    assert runner.invoke(
        app,
        ["ca", "intermediate", "--ca-dir", str(ca_dir), "--site", "edge-paris",
         "--out", str(plain)],
    ).exit_code == 0  # fmt: skip
    (unconstrained,) = x509.load_pem_x509_certificates((plain / "tls.crt").read_bytes())
    with pytest.raises(x509.ExtensionNotFound):
        unconstrained.extensions.get_extension_for_class(x509.NameConstraints)

    bad = runner.invoke(
        app,
        ["ca", "intermediate", "--ca-dir", str(ca_dir), "--site", "edge-paris",
         "--out", str(tmp_path / "bad"), "--dns-name", "*.edge-paris.example"],
    )  # fmt: skip
    assert bad.exit_code == 2
    assert not (tmp_path / "bad").exists()


def test_a_zone_ca_with_dns_names_issues_for_them_only(fleet_ca: CertificateAuthority) -> None:
    zone, zone_dir = zone_authority(fleet_ca, "edge-paris", (ZONE_HOST,))
    # Its own host and its subdomains, as RFC 5280 matches a DNS constraint.
    for host in (ZONE_HOST, f"xds.{ZONE_HOST}"):
        issued = zone.issue_server(ZONE_SERVER, [host], HOUR)
        assert fleet_ca.verify(issued.certificate_chain_pem).issuing_site == "edge-paris"
    for host in (GLOBAL_HOST, "127.0.0.1", "::1", f"x{ZONE_HOST}"):
        with pytest.raises(CaError, match=f"the zone CA of site edge-paris may not name {host}"):
            zone.issue_server(ZONE_SERVER, [host], HOUR)
    # A workload's certificate names a SPIFFE ID (a URI) only, which DNS and IP
    # constraints leave alone: kontinuum's own verifier accepts it as before.
    workload = zone.issue_workload(WEB, "edge-paris", HOUR)
    assert fleet_ca.verify(workload.certificate_chain_pem).issuing_site == "edge-paris"
    # What its key signs by hand for the global's host or an address is refused by it.
    for host in (GLOBAL_HOST, "10.0.0.1"):
        forged, _ = minted(zone_dir, CONTROL_PLANE, None, hosts=(host,))
        with pytest.raises(CaError, match="name constraint"):
            fleet_ca.verify(forged)


def test_the_zone_s_server_names_fall_under_its_ca_s_dns_names(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    zone, zone_dir = zone_authority(fleet_ca, "edge-paris", (ZONE_HOST,))
    # The listening address is left out of the certificate (no IP address may be named).
    assert server_hosts(zone, ["127.0.0.1"], [ZONE_HOST]) == [ZONE_HOST]
    with pytest.raises(ValueError, match=f"may not name {GLOBAL_HOST}: it permits DNS names"):
        server_hosts(zone, ["0.0.0.0"], [ZONE_HOST, GLOBAL_HOST])
    with pytest.raises(ValueError, match="no server name it may name is given"):
        server_hosts(zone, ["127.0.0.1"], [])
    # A CA without constraints names what it did before.
    assert server_hosts(fleet_ca, ["0.0.0.0"], []) == ["localhost"]
    assert server_hosts(fleet_ca, ["127.0.0.1"], [GLOBAL_HOST]) == ["127.0.0.1", GLOBAL_HOST]

    # `kontinuum zone` refuses such a name at startup, before it dials or serves.
    credentials = tmp_path / "credentials"
    zone_cert = fleet_ca.issue_workload(zone_identity(TD, "edge-paris"), "edge-paris", HOUR)
    write_credentials(credentials, zone_cert, fleet_ca)
    (tmp_path / "site").mkdir()
    refused = CliRunner().invoke(
        app,
        ["zone", "--site", "edge-paris", "--global", f"127.0.0.1:{free_port()}",
         "--credentials", str(credentials), "--config", str(tmp_path / "site"),
         "--xds-address", f"127.0.0.1:{free_port()}", "--ca-dir", str(zone_dir),
         "--xds-server-name", GLOBAL_HOST, "--admin-address", f"127.0.0.1:{free_port()}"],
    )  # fmt: skip
    assert refused.exit_code == 2, refused.output
    shown = " ".join(refused.output.replace("│", " ").split())
    assert f"the zone CA of site edge-paris may not name {GLOBAL_HOST}" in shown


async def _handshake(
    chain: bytes,
    key: bytes,
    credentials: grpc.ChannelCredentials,
    server_name: str | None,
    server_ca: CertificateAuthority | None = None,
    openssl: list[str] | None = None,
) -> Peer | grpc.StatusCode | None:
    """A real gRPC call from a client with `credentials` (checking the server's
    certificate for `server_name`, else for 127.0.0.1) to a server presenting `chain`: its
    refusal's code, or None once served; with `server_ca`, the server asks for a client
    certificate and answers with who `FleetAuthenticator` of `server_ca` says it is. With
    `openssl`, the zone's own check of the global (OpenSSL, `GlobalCheck`) with the
    credentials in `openssl[0]` connects first, and `openssl[1:]` becomes what it said."""
    peers: list[Peer] = []

    async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if server_ca is not None:
            peers.append(FleetAuthenticator(server_ca).authenticate(context))
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(
            "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(handler)}
        ),)
    )  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    if server_ca is None:
        server.add_secure_port(address, grpc.ssl_server_credentials([(key, chain)]))
    else:
        tls = grpc.ssl_server_credentials(
            [(key, chain)], server_ca.trust_bundle_pem, require_client_auth=True
        )
        server.add_secure_port(address, tls)
    await server.start()
    if openssl is not None:
        openssl[1:] = [await asyncio.to_thread(_checked, address, Path(openssl[0]), server_name)]
    options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
    try:
        async with grpc.aio.secure_channel(address, credentials, options) as channel:
            await channel.unary_unary("/test.Who/Am")(b"", timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await server.stop(0)
    return peers[0] if peers else None


def _checked(address: str, credentials: Path, server_name: str | None) -> str:
    """What the zone's check of the global (`GlobalCheck`) says of the server at
    `address`: its SPIFFE ID, or why not."""
    try:
        return str(GlobalCheck().verify(address, credentials, server_name or ""))
    except (OSError, GlobalIdentityError) as error:
        return f"{type(error).__name__}: {error}"


async def test_a_zone_ca_with_dns_names_cannot_stand_for_the_global_in_the_handshake(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    # The zone's own channel credentials to the global (`kontinuum zone --credentials`):
    # its certificate of the fleet's CA, trusting the fleet's root.
    zone_cert = fleet_ca.issue_workload(zone_identity(TD, "edge-paris"), "edge-paris", HOUR)
    directory = write_credentials(tmp_path / "z", zone_cert, fleet_ca).directory
    to_global = channel_credentials(directory)
    _, limited_dir = zone_authority(fleet_ca, "edge-paris", (ZONE_HOST,))
    _, open_dir = zone_authority(fleet_ca, "edge-paris")

    # The zone's key signs the control plane's identity for the global's host name, or for
    # its address: gRPC's TLS refuses both, before any call, and so does OpenSSL in the
    # zone's own check of the global. Without --dns-name (the default), the same passes
    # both handshakes: only that check, knowing the global's issuer, refuses it.
    for hosts, name in (((GLOBAL_HOST,), GLOBAL_HOST), (("127.0.0.1",), None)):
        chain, key = minted(limited_dir, CONTROL_PLANE, None, hosts=hosts)
        said = [str(directory)]
        refused = await _handshake(chain, key, to_global, name, openssl=said)
        assert refused is grpc.StatusCode.UNAVAILABLE
        assert said[1].startswith("GlobalIdentityError: "), said  # counted as refused
        assert "fails verification" in said[1], said
        assert "subtree violation" in said[1], said  # permitted (a host) or excluded (an IP)
        chain, key = minted(open_dir, CONTROL_PLANE, None, hosts=hosts)
        said = [str(directory)]
        assert await _handshake(chain, key, to_global, name, openssl=said) is None
        assert said[1].startswith("GlobalIdentityError: "), said
        assert "not by the fleet's CA" in said[1]


async def test_what_a_zone_ca_with_dns_names_issues_passes_mutual_tls(
    fleet_ca: CertificateAuthority, tmp_path: Path
) -> None:
    zone, _ = zone_authority(fleet_ca, "edge-paris", (ZONE_HOST,))
    # The zone's xDS server certificate, as `kontinuum zone --xds-server-name` has it
    # issued, and a proxy's certificate of the same CA (a SPIFFE ID only).
    server = zone.issue_server(ZONE_SERVER, server_hosts(zone, ["127.0.0.1"], [ZONE_HOST]), HOUR)
    proxy = zone.issue_workload(WEB, "edge-paris", HOUR)
    credentials = write_credentials(tmp_path / "proxy", proxy, fleet_ca).channel_credentials()
    peer = await _handshake(
        server.certificate_chain_pem, server.private_key_pem, credentials, ZONE_HOST, zone
    )
    assert isinstance(peer, Peer), peer
    assert peer.identity == str(WEB)
    assert peer.claims["issuing_site"] == "edge-paris"
    # The same server certificate checked for the global's host name is refused.
    assert (
        await _handshake(
            server.certificate_chain_pem, server.private_key_pem, credentials, GLOBAL_HOST, zone
        )
        is grpc.StatusCode.UNAVAILABLE
    )
