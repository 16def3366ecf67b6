"""Authenticated xDS end to end: who a proxy is decides what it gets.

A fleet is served in-process with the fleet CA (`XdsSecurity`): mutual TLS on the xDS
address, TLS plus a bootstrap token on the token address. Real Envoys prove who they are
with a certificate or a token, receive their configuration and their own identity's
certificate over SDS, and route real traffic; real gRPC ADS clients show what is refused,
how, and what is counted and logged; the `kontinuum` command issues the credentials and
reads the fleet's status as an operator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from kontinuum.app import RunningFleet, XdsSecurity, running_fleet, serving
from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, proxy_metadata
from kontinuum.security import CertificateAuthority, SpiffeId, identity_of, issue_token
from kontinuum.security.ca import PeerIdentity
from kontinuum.security.tokens import verify_token
from kontinuum.security.workload import WorkloadIdentity
from kontinuum.security.xds_auth import control_plane_identity
from kontinuum.xds import XdsServer, types
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.routing_fleet import Workload, write_fleet
from tests.support.fleet import fast
from tests.support.net import free_port
from tests.support.security import (
    Credentials,
    ads,
    entry_uris,
    envoy_certificates,
    key_matches,
    metrics_text,
    node,
    refusal,
    root_only,
    sample,
    serial_of,
    uri_sans,
    write_credentials,
)

pytestmark = pytest.mark.e2e

TD = "cluster.local"
CLUSTER = "eu-central"
HELLO = "hello.demo.svc.clusterset.local"
FRONTEND = SpiffeId(TD, "demo", "frontend")
BILLING = SpiffeId(TD, "payments", "billing")
OPERATOR = SpiffeId(TD, "kontinuum-system", "operator")
KONTINUUM = [sys.executable, "-m", "kontinuum"]
REFUSED = "kontinuum_xds_streams_refused_total"
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Secured:
    """A fleet served with its CA: demo/hello and payments/billing (no grant) in eu-central,
    and demo/frontend, whose sidecar's inbound listener needs its SDS certificate."""

    ca: CertificateAuthority
    root: Path
    mtls: str  # the xDS address: mutual TLS
    token: str  # the token address: TLS, `authorization: Bearer <token>`
    admin: str
    fleet: RunningFleet
    server: XdsServer
    frontend_workload: Backend

    def workload_certificate(self, spiffe_id: SpiffeId) -> bytes:
        """The certificate the control plane issued (SDS) for `spiffe_id` in eu-central."""
        certificates = self.fleet.mesh.certificates
        assert certificates is not None
        identity = WorkloadIdentity(spiffe_id, CLUSTER)
        return certificates.certificate(identity).certificate_chain_pem


@contextlib.asynccontextmanager
async def secured_fleet(
    directory: Path, workload_validity: timedelta = HOUR
) -> AsyncIterator[Secured]:
    hello, billing, frontend = Backend("hello"), Backend("billing"), Backend("frontend")
    for backend in (hello, billing, frontend):
        backend.start()
    try:
        root = write_fleet(
            directory / "fleet",
            {
                CLUSTER: [
                    Workload("hello", (hello.port,)),
                    Workload("billing", (billing.port,), namespace="payments"),
                    Workload("frontend", (free_port(),)),
                ]
            },
        )
        ca = CertificateAuthority.generate(TD)
        mtls, token, admin = (f"127.0.0.1:{free_port()}" for _ in range(3))
        security = XdsSecurity(ca, token_address=token, workload_validity=workload_validity)
        async with (
            running_fleet(fast(path=root, security=security)) as fleet,
            serving(fleet, mtls, admin) as server,
        ):
            assert fleet.static is not None
            assert fleet.static.status().errors == (), fleet.static.status().errors
            yield Secured(ca, root, mtls, token, admin, fleet, server, frontend)
    finally:
        for backend in (hello, billing, frontend):
            backend.stop()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_fleet(tmp_path) as served:
        yield served


StartTlsEnvoy = Callable[[str, dict[str, Any]], Envoy]


@pytest.fixture
def tls_envoys(envoys: StartEnvoy) -> StartTlsEnvoy:
    """Start Envoys from a bootstrap document: `tls_envoys(node_id, bootstrap)`."""

    def start(node_id: str, document: dict[str, Any]) -> Envoy:
        return envoys(view=CLUSTER, xds_port=0, mode="delta", node_id=node_id, config=document)

    return start


@pytest.fixture(autouse=True)
def no_private_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here runs with kontinuum logging at DEBUG: no key may ever be logged."""
    caplog.set_level(logging.DEBUG, logger="kontinuum")
    yield
    records = [r for phase in ("setup", "call") for r in caplog.get_records(phase)]
    leaked = {r.name for r in (*records, *caplog.records) if "PRIVATE KEY" in r.getMessage()}
    assert not leaked, f"a private key was logged by {sorted(leaked)}"


def sidecar_bootstrap(
    served: Secured,
    node_id: str,
    xds_address: str,
    tls: XdsClientTls,
    outbound: int,
) -> dict[str, Any]:
    """A demo sidecar of `frontend` in eu-central, as `kontinuum bootstrap` writes it: its
    inbound listener (on a free loopback port) requires mTLS with its SDS certificate."""
    return envoy_bootstrap(
        node_id=node_id,
        cluster=CLUSTER,
        xds_address=xds_address,
        admin_port=0,
        reconnect_backoff=("0.1s", "1s"),
        metadata=proxy_metadata(
            namespace="demo",
            role="sidecar",
            service="frontend",
            inbound_port=served.frontend_workload.port,
            inbound_address=f"127.0.0.1:{free_port()}",
            outbound_port=outbound,
        ),
        tls=tls,
    )


def certificate_tls(credentials: Credentials) -> XdsClientTls:
    """TLS to the mutual-TLS address with the client certificate of `credentials`."""
    return XdsClientTls(
        ca_file=str(credentials.ca),
        server_identity=str(control_plane_identity(TD)),
        certificate_file=str(credentials.certificate),
        key_file=str(credentials.key),
    )


def issue(served: Secured, directory: Path, spiffe_id: SpiffeId) -> Credentials:
    issued = served.ca.issue_workload(spiffe_id, CLUSTER, HOUR)
    return write_credentials(directory, issued, served.ca)


async def answered_by(port: int, host: str, expected: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(request, port, host, timeout=2)
        if last.status == 200 and last.body.strip() == f"backend {expected}":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{host} never answered by {expected}; last answer {last}")


async def sds_certificates(envoy: Envoy, spiffe_id: SpiffeId) -> list[dict[str, Any]]:
    """The certificates Envoy holds from SDS (inline, not a file) naming `spiffe_id`."""
    shown = envoy_certificates(await asyncio.to_thread(envoy.admin, "/certs"))
    return [
        entry
        for entry in shown
        if entry["kind"] == "cert_chain"
        and str(spiffe_id) in entry_uris(entry)
        and entry.get("path") == "<inline>"
    ]


def serials(entries: list[dict[str, Any]]) -> set[int]:
    return {int(entry["serial_number"], 16) for entry in entries}


async def refused_count(served: Secured, reason: str) -> float | None:
    return sample(await metrics_text(served.admin), REFUSED, {"reason": reason})


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONTINUUM_")}
    return {**env, "COLUMNS": "200"}


async def _kontinuum(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the `kontinuum` command without blocking the event loop that serves the fleet."""
    return await asyncio.to_thread(
        subprocess.run,
        [*KONTINUUM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


# -- 1, 2: real Envoys with a certificate or a token --------------------------------------


async def test_an_envoy_with_its_certificate_gets_config_traffic_and_its_own_identity(
    secured: Secured, tls_envoys: StartTlsEnvoy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = issue(secured, tmp_path / "frontend", FRONTEND)
    outbound = free_port()
    envoy = tls_envoys(
        "frontend-1",
        sidecar_bootstrap(
            secured, "frontend-1", secured.mtls, certificate_tls(credentials), outbound
        ),
    )
    await asyncio.to_thread(envoy.wait_live, 20)  # LIVE: its inbound listener has its secrets
    await answered_by(outbound, HELLO, "hello")

    # Its SDS certificate is the control plane's issue for its own identity, not the file
    # it connected with.
    delivered = await sds_certificates(envoy, FRONTEND)
    assert delivered, envoy_certificates(await asyncio.to_thread(envoy.admin, "/certs"))
    issued = secured.workload_certificate(FRONTEND)
    assert serials(delivered) == {serial_of(issued)}
    assert serial_of(issued) != serial_of(credentials.certificate.read_bytes())
    assert uri_sans(issued) == [str(FRONTEND)]

    text = await metrics_text(secured.admin)
    labels = {
        "kontinuum_role": "sidecar",
        "kontinuum_cluster": CLUSTER,
        "kontinuum_workspace": "demo",
    }
    assert sample(text, "kontinuum_xds_proxies", labels) == 1.0
    (stream,) = secured.server.streams()
    assert stream.connection.peer.identity == str(FRONTEND)
    assert stream.view.endswith("@frontend"), stream.view  # its view carries its account
    assert "PRIVATE KEY" not in caplog.text


async def test_an_envoy_with_a_bootstrap_token_gets_config_traffic_and_its_certificate(
    secured: Secured, tls_envoys: StartTlsEnvoy, tmp_path: Path
) -> None:
    """The bootstrap is `kontinuum bootstrap --xds-ca --xds-token-file`'s, as a user makes it."""
    ca_file, token_file = tmp_path / "ca.pem", tmp_path / "token"
    ca_file.write_bytes(secured.ca.trust_bundle_pem)
    token_file.write_text(issue_token(secured.ca, FRONTEND, CLUSTER, HOUR))
    token_file.chmod(0o600)
    outbound = free_port()
    printed = await _kontinuum(
        "bootstrap", "--node-id", "frontend-token", "--cluster", CLUSTER, "--namespace", "demo",
        "--service", "frontend", "--inbound-port", str(secured.frontend_workload.port),
        "--inbound-address", f"127.0.0.1:{free_port()}", "--outbound-port", str(outbound),
        "--admin-port", "0", "--stats-address", "none", "--xds-address", secured.token,
        "--xds-ca", str(ca_file), "--xds-token-file", str(token_file),
        "--output", str(tmp_path / "bootstrap.json"),
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    written = tmp_path / "bootstrap.json"
    # It holds the token: for its owner only, and not on the terminal.
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert printed.stdout == ""
    envoy = tls_envoys("frontend-token", json.loads(written.read_text()))
    await asyncio.to_thread(envoy.wait_live, 20)
    await answered_by(outbound, HELLO, "hello")

    delivered = await sds_certificates(envoy, FRONTEND)
    assert delivered, envoy_certificates(await asyncio.to_thread(envoy.admin, "/certs"))
    assert serials(delivered) == {serial_of(secured.workload_certificate(FRONTEND))}
    (stream,) = secured.server.streams()
    assert stream.connection.peer.identity == str(FRONTEND)
    assert stream.connection.peer.claims.get("via") == "token"
    assert await refused_count(secured, "unauthenticated") == 0.0


# -- 3: an identity claiming what it is not -----------------------------------------------


async def test_an_identity_claiming_another_workspace_or_cluster_is_denied(
    secured: Secured, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frontend = issue(secured, tmp_path / "frontend", FRONTEND).channel_credentials()
    token = issue_token(secured.ca, FRONTEND, CLUSTER, HOUR)
    bearer = (("authorization", f"Bearer {token}"),)

    workspace = await refusal(
        secured.mtls, frontend, node("a-1", CLUSTER, "payments"), types.CLUSTER
    )
    assert workspace.code == grpc.StatusCode.PERMISSION_DENIED, workspace
    assert "'demo'" in workspace.details, workspace.details  # both workspaces named
    assert "'payments'" in workspace.details, workspace.details

    cluster = await refusal(secured.mtls, frontend, node("a-2", "us-east", "demo"), types.CLUSTER)
    assert cluster.code == grpc.StatusCode.PERMISSION_DENIED, cluster
    assert "'eu-central'" in cluster.details, cluster.details  # both clusters named
    assert "'us-east'" in cluster.details, cluster.details

    by_token = await refusal(
        secured.token, root_only(secured.ca), node("a-3", "us-east", "demo"), types.CLUSTER,
        metadata=bearer,
    )  # fmt: skip
    assert by_token.code == grpc.StatusCode.PERMISSION_DENIED, by_token
    assert "'eu-central'" in by_token.details, by_token.details
    assert "'us-east'" in by_token.details, by_token.details

    assert await refused_count(secured, "denied") == 3.0
    assert await refused_count(secured, "unauthenticated") == 0.0
    assert secured.server.streams() == ()
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.name == "kontinuum.xds" and r.levelno == logging.WARNING
    ]
    for node_id, refused in (("a-1", workspace), ("a-2", cluster), ("a-3", by_token)):
        assert any(f"'{node_id}'" in m and refused.details in m for m in logged), logged


# -- 4: isolation by identity ---------------------------------------------------------------


async def _view_of(served: Secured, credentials: Credentials, namespace: str) -> dict[str, Any]:
    responses = await ads(
        served.mtls,
        credentials.channel_credentials(),
        node(f"{namespace}-1", CLUSTER, namespace),
        [(types.CLUSTER, []), (types.SECRET, ["default", "ROOTCA"])],
    )
    clusters = {
        cluster_pb2.Cluster.FromString(r.value).name for r in responses[types.CLUSTER].resources
    }
    secrets = {
        s.name: s
        for s in (secret_pb2.Secret.FromString(r.value) for r in responses[types.SECRET].resources)
    }
    return {"clusters": clusters, "secrets": secrets}


async def test_each_identity_gets_its_own_certificate_and_only_its_workspace(
    secured: Secured, tmp_path: Path
) -> None:
    demo = await _view_of(secured, issue(secured, tmp_path / "demo", FRONTEND), "demo")
    payments = await _view_of(secured, issue(secured, tmp_path / "payments", BILLING), "payments")

    assert any("hello.demo" in name for name in demo["clusters"]), demo["clusters"]
    assert not [name for name in demo["clusters"] if "billing" in name or "payments" in name]
    assert any("billing.payments" in name for name in payments["clusters"]), payments["clusters"]
    assert not [name for name in payments["clusters"] if "hello" in name]

    for seen, spiffe_id in ((demo, FRONTEND), (payments, BILLING)):
        own = seen["secrets"]["default"].tls_certificate
        assert uri_sans(own.certificate_chain.inline_bytes) == [str(spiffe_id)]
        # No cluster: a workload certificate opens no xDS stream (it is no xDS credential).
        assert identity_of(own.certificate_chain.inline_bytes, TD) == PeerIdentity(spiffe_id, None)
        secured.ca.verify(own.certificate_chain.inline_bytes)  # chains to the fleet's root
        assert key_matches(own.certificate_chain.inline_bytes, own.private_key.inline_bytes)
        root = seen["secrets"]["ROOTCA"].validation_context.trusted_ca.inline_bytes
        assert root == secured.ca.trust_bundle_pem
    demo_key = demo["secrets"]["default"].tls_certificate.private_key.inline_bytes
    payments_key = payments["secrets"]["default"].tls_certificate.private_key.inline_bytes
    assert b"PRIVATE KEY" in demo_key
    assert b"PRIVATE KEY" in payments_key
    assert demo_key != payments_key


# -- 5: transport refusals ------------------------------------------------------------------


async def test_the_mutual_tls_address_refuses_bad_certificates_in_the_handshake(
    secured: Secured, tmp_path: Path
) -> None:
    claim = node("bad-1", CLUSTER, "demo")
    other_ca = CertificateAuthority.generate(TD)  # same trust domain, another key
    foreign = write_credentials(
        tmp_path / "foreign", other_ca.issue_workload(FRONTEND, CLUSTER, HOUR), secured.ca
    )
    past = datetime.now(UTC) - timedelta(minutes=50)
    expired = write_credentials(
        tmp_path / "expired",
        secured.ca.issue_workload(FRONTEND, CLUSTER, timedelta(minutes=10), now=past),
        secured.ca,
    )
    cases = {
        "no client certificate": root_only(secured.ca),
        "another CA's certificate": foreign.channel_credentials(),
        "an expired certificate": expired.channel_credentials(),
    }
    for case, credentials in cases.items():
        error = await refusal(secured.mtls, credentials, claim, types.CLUSTER)
        assert error.code == grpc.StatusCode.UNAVAILABLE, (case, error)
    # None reached the control plane: no stream, no refusal by policy, no view.
    stats = secured.server.stats
    assert (stats.streams_opened, stats.streams_refused, stats.streams_unauthenticated) == (0, 0, 0)
    assert secured.fleet.mesh.cache.views() == {}


def _tampered(token: str, **claims: str) -> str:
    """The token with its payload changed and its signature kept."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_the_token_address_refuses_missing_expired_and_tampered_tokens(
    secured: Secured, tmp_path: Path
) -> None:
    claim = node("bad-2", CLUSTER, "demo")
    root = root_only(secured.ca)
    expired = issue_token(
        secured.ca, FRONTEND, CLUSTER, HOUR, now=datetime.now(UTC) - timedelta(hours=2)
    )
    good = issue_token(secured.ca, FRONTEND, CLUSTER, HOUR)
    tampered = _tampered(good, sub=str(OPERATOR))

    missing = await refusal(secured.token, root, claim, types.CLUSTER)
    assert missing.code == grpc.StatusCode.UNAUTHENTICATED, missing
    assert "bootstrap token" in missing.details, missing.details
    assert "authorization" in missing.details, missing.details

    late = await refusal(
        secured.token, root, claim, types.CLUSTER, metadata=[("authorization", f"Bearer {expired}")]
    )
    assert late.code == grpc.StatusCode.UNAUTHENTICATED, late
    assert "expired" in late.details

    forged = await refusal(
        secured.token,
        root,
        claim,
        types.CLUSTER,
        metadata=[("authorization", f"Bearer {tampered}")],
    )
    assert forged.code == grpc.StatusCode.UNAUTHENTICATED, forged
    assert "not signed by this fleet's CA" in forged.details

    # A certificate is no credential at the token address, least of all another CA's.
    other_ca = CertificateAuthority.generate(TD)
    foreign = write_credentials(
        tmp_path / "foreign", other_ca.issue_workload(FRONTEND, CLUSTER, HOUR), secured.ca
    )
    stranger = await refusal(secured.token, foreign.channel_credentials(), claim, types.CLUSTER)
    assert stranger.code == grpc.StatusCode.UNAUTHENTICATED, stranger

    assert await refused_count(secured, "unauthenticated") == 4.0
    assert await refused_count(secured, "denied") == 0.0
    assert secured.server.stats.streams_opened == 0
    assert secured.fleet.mesh.cache.views() == {}


async def test_an_envoy_pinning_another_server_identity_never_gets_config(
    secured: Secured, tls_envoys: StartTlsEnvoy, tmp_path: Path
) -> None:
    credentials = issue(secured, tmp_path / "frontend", FRONTEND)
    tls = XdsClientTls(
        ca_file=str(credentials.ca),
        server_identity=f"spiffe://{TD}/ns/kontinuum-system/sa/impostor",
        certificate_file=str(credentials.certificate),
        key_file=str(credentials.key),
    )
    envoy = tls_envoys(
        "pinned", sidecar_bootstrap(secured, "pinned", secured.mtls, tls, free_port())
    )
    started = time.monotonic()
    await asyncio.to_thread(envoy.wait_admin, 10)
    # Envoy reached the server and refused its certificate: its SAN is not the pinned one.
    await asyncio.to_thread(
        envoy.wait_for,
        lambda: "verify_cert_failed" in envoy.log_tail() and "SAN_matcher" in envoy.log_tail(),
        10,
        "Envoy to refuse the server's certificate",
    )
    await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    clusters = await asyncio.to_thread(envoy.clusters)
    names = {status["name"] for status in clusters.get("cluster_statuses", [])}
    assert names == {"kontinuum-xds"}, names  # the static xDS cluster, nothing from kontinuum
    assert await asyncio.to_thread(envoy.stat, "control_plane.connected_state") == 0
    assert secured.server.stats.streams_opened == 0


# -- 6: CSDS as an operator -----------------------------------------------------------------


async def test_status_as_an_operator_lists_the_envoy_and_refuses_a_workload(
    secured: Secured, tls_envoys: StartTlsEnvoy, tmp_path: Path
) -> None:
    frontend = issue(secured, tmp_path / "frontend", FRONTEND)
    envoy = tls_envoys(
        "frontend-csds",
        sidecar_bootstrap(
            secured, "frontend-csds", secured.mtls, certificate_tls(frontend), free_port()
        ),
    )
    await asyncio.to_thread(envoy.wait_live, 20)
    operator = issue(secured, tmp_path / "operator", OPERATOR)

    shown = await _kontinuum(
        "status", "--xds-address", secured.mtls, "--credentials", str(operator.directory)
    )
    assert shown.returncode == 0, shown.stderr
    line = next((x for x in shown.stdout.splitlines() if "frontend-csds" in x), None)
    assert line is not None, shown.stdout
    assert CLUSTER in line, line
    assert "demo" in line, line
    assert "1 connected proxy" in shown.stdout

    refused = await _kontinuum(
        "status", "--xds-address", secured.mtls, "--credentials", str(frontend.directory)
    )
    assert refused.returncode != 0, refused.stdout
    assert "may not read client status" in refused.stderr, refused.stderr
    for result in (shown, refused):
        assert "PRIVATE KEY" not in result.stdout + result.stderr


def _readme_operator_command() -> list[str]:
    """The `kontinuum ca issue` command the README gives for an operator's credentials."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `kontinuum status"))
    found = re.search(r"`kontinuum (ca issue [^`]*--service-account operator[^`]*)`", row)
    assert found is not None, row
    return found.group(1).split()


async def test_status_says_what_a_tls_server_needs_and_the_readme_credentials_work(
    secured: Secured, tmp_path: Path
) -> None:
    without = await _kontinuum("status", "--xds-address", secured.mtls)
    assert without.returncode == 1, without
    assert without.stderr == (
        f"error: {secured.mtls} serves xDS over TLS: pass --credentials DIR, a directory of an "
        "operator's cert.pem, key.pem and ca.pem (`kontinuum ca issue ... --namespace "
        "kontinuum-system --service-account operator --out DIR`)\n"
    ), without.stderr

    # The README's command, copied, with its placeholders filled in.
    ca_dir, out = tmp_path / "ca", tmp_path / "operator"
    secured.ca.save(ca_dir)
    filled = {"CA_DIR": str(ca_dir), "CLUSTER": CLUSTER, "DIR": str(out)}
    issued = await _kontinuum(*(filled.get(word, word) for word in _readme_operator_command()))
    assert issued.returncode == 0, issued.stderr
    shown = await _kontinuum("status", "--xds-address", secured.mtls, "--credentials", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "0 connected proxies" in shown.stdout


# -- 7: the command line --------------------------------------------------------------------


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KONTINUUM, *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_command_line_issues_credentials_and_serves_only_with_a_private_ca(
    tmp_path: Path,
) -> None:
    fleet = write_fleet(tmp_path / "fleet", {CLUSTER: [Workload("hello", (free_port(),))]})
    addresses = ["--xds-address", f"127.0.0.1:{free_port()}"]
    addresses += ["--admin-address", f"127.0.0.1:{free_port()}"]

    insecure = _run("serve", "--config", str(fleet), *addresses, timeout=15)
    assert insecure.returncode == 2, insecure.stderr
    assert "--ca-dir" in insecure.stderr

    ca_dir, out = tmp_path / "ca", tmp_path / "frontend"
    created = _run("ca", "init", "--ca-dir", str(ca_dir))
    assert created.returncode == 0, created.stderr
    assert _mode(ca_dir / "ca.key") == 0o600
    who = ["--cluster", CLUSTER, "--namespace", "demo", "--service-account", "frontend"]
    issued = _run("ca", "issue", "--ca-dir", str(ca_dir), *who, "--out", str(out))
    assert issued.returncode == 0, issued.stderr
    assert _mode(out / "key.pem") == 0o600
    ca = CertificateAuthority.load(ca_dir, TD)
    assert ca.verify((out / "cert.pem").read_bytes()) == PeerIdentity(FRONTEND, CLUSTER)
    assert (out / "ca.pem").read_bytes() == ca.trust_bundle_pem

    printed = _run("token", "create", "--ca-dir", str(ca_dir), *who)
    assert printed.returncode == 0, printed.stderr
    assert verify_token(ca, printed.stdout.strip()) == PeerIdentity(FRONTEND, CLUSTER)
    for result in (created, issued, printed):
        assert "PRIVATE KEY" not in result.stdout + result.stderr

    (ca_dir / "ca.key").chmod(0o644)
    exposed = _run("serve", "--config", str(fleet), "--ca-dir", str(ca_dir), *addresses, timeout=15)
    assert exposed.returncode != 0, exposed.stderr
    assert "chmod 600" in exposed.stderr, exposed.stderr


# -- 8: hygiene -----------------------------------------------------------------------------


async def test_certificates_rotate_over_sds_and_no_key_is_ever_logged(
    tmp_path: Path, tls_envoys: StartTlsEnvoy, caplog: pytest.LogCaptureFixture
) -> None:
    """With 4-second workload certificates, a connected Envoy gets a new one within about
    2 s (renewed at half its life); all the while, kontinuum logs at DEBUG and no private
    key ever appears in its logs."""
    async with secured_fleet(tmp_path, workload_validity=timedelta(seconds=4)) as served:
        credentials = issue(served, tmp_path / "frontend", FRONTEND)
        envoy = tls_envoys(
            "frontend-rotating",
            sidecar_bootstrap(
                served, "frontend-rotating", served.mtls, certificate_tls(credentials),
                free_port(),
            ),
        )  # fmt: skip
        await asyncio.to_thread(envoy.wait_live, 20)
        first = serials(await sds_certificates(envoy, FRONTEND))
        assert len(first) == 1, first
        deadline = time.monotonic() + 10
        while (now := serials(await sds_certificates(envoy, FRONTEND))) in (first, set()):
            assert time.monotonic() < deadline, "the workload certificate was never renewed"
            await asyncio.sleep(0.2)
        assert now == {serial_of(served.workload_certificate(FRONTEND))}
    issued = [r for r in caplog.records if "workload certificate for" in r.getMessage()]
    assert len(issued) >= 2, [r.getMessage() for r in caplog.records]  # the first and renewals
    assert "PRIVATE KEY" not in caplog.text
