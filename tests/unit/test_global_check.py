"""The zone's check of the global (`kontinuum.federation.global_identity.GlobalCheck`)
against real TLS servers: a handshake that fails on what the server presents (a chain the
zone's roots do not accept, a certificate for another host) is a refusal, counted, not the
global being out of reach; and each global replica keeps its own last refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from kontinuum.federation.global_identity import GlobalCheck, GlobalIdentityError
from kontinuum.security.ca import CertificateAuthority, IssuedCertificate
from kontinuum.security.xds_auth import control_plane_identity
from kontinuum.security.zone_ca import zone_identity
from tests.support.net import free_port
from tests.support.security import write_credentials

TD = "cluster.local"
HOUR = timedelta(hours=1)
CONTROL_PLANE = control_plane_identity(TD)


@pytest.fixture(scope="module")
def fleet_ca() -> CertificateAuthority:
    return CertificateAuthority.generate(TD)


@pytest.fixture
def credentials(fleet_ca: CertificateAuthority, tmp_path: Path) -> Path:
    """The zone's `--credentials`: its certificate of the fleet's CA, trusting its root."""
    zone = fleet_ca.issue_workload(zone_identity(TD, "edge-paris"), "edge-paris", HOUR)
    return write_credentials(tmp_path / "zone", zone, fleet_ca).directory


class Servers:
    """Real TLS (gRPC) servers on 127.0.0.1, each presenting a certificate of its own."""

    def __init__(self) -> None:
        self.started: list[grpc.aio.Server] = []

    async def presenting(self, certificate: IssuedCertificate) -> str:
        server = grpc.aio.server()
        address = f"127.0.0.1:{free_port()}"
        pair = (certificate.private_key_pem, certificate.certificate_chain_pem)
        server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        await server.start()
        self.started.append(server)
        return address


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        for server in running.started:
            await server.stop(0)


async def test_a_failed_handshake_is_a_refusal_kept_per_global_replica(
    fleet_ca: CertificateAuthority, credentials: Path, servers: Servers
) -> None:
    check = GlobalCheck()
    # The control plane's identity from a CA the zone does not trust.
    stranger = CertificateAuthority.generate(TD)
    untrusted = await servers.presenting(stranger.issue_server(CONTROL_PLANE, ["127.0.0.1"], HOUR))
    with pytest.raises(GlobalIdentityError, match=r"fails verification: .*issuer"):
        check.verify(untrusted, credentials)
    # The fleet's certificate of the control plane, for another host than the one dialed.
    elsewhere = fleet_ca.issue_server(CONTROL_PLANE, ["global.example.net"], HOUR)
    wrong_host = await servers.presenting(elsewhere)
    with pytest.raises(
        GlobalIdentityError, match=r"fails verification: .*mismatch, certificate is not valid"
    ):
        check.verify(wrong_host, credentials)
    assert check.refused == 2
    # The real global, a third replica: its check passes and clears its own refusal only.
    real = await servers.presenting(fleet_ca.issue_server(CONTROL_PLANE, ["127.0.0.1"], HOUR))
    assert check.verify(real, credentials) == CONTROL_PLANE
    assert check.verify(wrong_host, credentials, "global.example.net") == CONTROL_PLANE
    assert check.refused == 2
    assert list(check.problems) == [untrusted]
    assert check.problems[untrusted].startswith(f"the global at {untrusted} fails verification")


async def test_a_global_out_of_reach_is_no_refusal(credentials: Path) -> None:
    check = GlobalCheck()
    nobody = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionRefusedError):
        check.verify(nobody, credentials)
    assert (check.refused, check.problems) == (0, {})
