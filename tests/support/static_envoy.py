"""Translated resources as a static Envoy bootstrap, and workload certificates for it.

What the xDS server would send becomes `static_resources`: EDS clusters become STATIC ones
carrying their ClusterLoadAssignment, RDS references become inline route configurations
(api_listeners, which only gRPC reads, are left out: a bootstrap holds at most one), and
the SDS secrets the TLS contexts name over ADS (`default`, `ROOTCA`) become static secrets
of those names holding a real certificate, key and trust bundle, so that Envoy builds
every TLS context. Secrets the translation itself holds (an ingress gateway's
certificates) become static secrets as they are. Certificates are made with the `openssl` command.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from kontinuum.control.translate.tls import ROOT_SECRET, WORKLOAD_SECRET


@dataclass(frozen=True, slots=True)
class Identity:
    """A workload's certificate and key (PEM), and the trust bundle that verifies it."""

    certificate: str
    key: str
    trust_bundle: str


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to make workload certificates"
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


class CertificateAuthority:
    """A self-signed root in `directory` that issues SPIFFE workload certificates."""

    def __init__(self, directory: Path, name: str = "kontinuum test root") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._cert, self._key = directory / "root.pem", directory / "root.key"
        _openssl(
            "req", "-x509", *_EC, "-days", "2", "-subj", f"/O={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(self._key), "-out", str(self._cert),
        )  # fmt: skip
        self.trust_bundle = self._cert.read_text()

    def issue(self, spiffe_id: str) -> Identity:
        """A certificate whose only SAN is the URI `spiffe_id` (client and server use)."""
        stem = self.directory / spiffe_id.rsplit("/", 1)[-1]
        extensions = stem.with_suffix(".ext")
        extensions.write_text(
            f"subjectAltName=critical,URI:{spiffe_id}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        key, request, cert = (stem.with_suffix(s) for s in (".key", ".csr", ".pem"))
        _openssl("req", "-new", *_EC, "-subj", "/O=kontinuum test", "-keyout", str(key),
                 "-out", str(request))  # fmt: skip
        _openssl("x509", "-req", "-in", str(request), "-CA", str(self._cert),
                 "-CAkey", str(self._key), "-CAcreateserial", "-days", "1",
                 "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
        return Identity(cert.read_text(), key.read_text(), self.trust_bundle)


def _sds_configs(context: Any) -> Iterator[Any]:
    common = context.common_tls_context
    yield from common.tls_certificate_sds_secret_configs
    if common.HasField("validation_context_sds_secret_config"):
        yield common.validation_context_sds_secret_config
    if common.HasField("combined_validation_context"):
        yield common.combined_validation_context.validation_context_sds_secret_config


def _static_secrets(transport_socket: Any) -> set[str]:
    """Turn a TLS transport socket's SDS-over-ADS secrets into static ones (by name);
    the names it uses."""
    if not transport_socket.HasField("typed_config"):
        return set()
    packed = transport_socket.typed_config
    for kind in (tls_pb2.UpstreamTlsContext, tls_pb2.DownstreamTlsContext):
        context = kind()
        if packed.Unpack(context):
            break
    else:
        raise AssertionError(f"not a TLS context: {packed.type_url}")
    names = set()
    for sds in _sds_configs(context):
        assert sds.sds_config.HasField("ads"), sds
        sds.ClearField("sds_config")
        names.add(sds.name)
    packed.Pack(context)
    return names


def _add_secrets(bootstrap: Any, names: set[str], identity: Identity) -> None:
    assert names <= {WORKLOAD_SECRET, ROOT_SECRET}, names
    for name in sorted(names):
        secret = bootstrap.static_resources.secrets.add(name=name)
        if name == WORKLOAD_SECRET:
            secret.tls_certificate.certificate_chain.inline_string = identity.certificate
            secret.tls_certificate.private_key.inline_string = identity.key
        else:
            secret.validation_context.trusted_ca.inline_string = identity.trust_bundle


def static_bootstrap(resources: tuple[Any, ...], identity: Identity | None = None) -> Any:
    """A Bootstrap holding `resources` as static ones (see the module doc); `identity`
    gives the secrets, needed when a TLS context names any."""
    assignments = {
        m.cluster_name: m for m in resources if isinstance(m, endpoint_pb2.ClusterLoadAssignment)
    }
    route_configs = {m.name: m for m in resources if isinstance(m, route_pb2.RouteConfiguration)}
    bootstrap = bootstrap_pb2.Bootstrap()
    secrets: set[str] = set()
    for message in resources:
        if isinstance(message, cluster_pb2.Cluster):
            cluster = bootstrap.static_resources.clusters.add()
            cluster.CopyFrom(message)
            if cluster.type == cluster_pb2.Cluster.EDS:
                cluster.ClearField("eds_cluster_config")
                cluster.type = cluster_pb2.Cluster.STATIC
                cluster.load_assignment.CopyFrom(assignments[cluster.name])
            secrets |= _static_secrets(cluster.transport_socket)
            for match in cluster.transport_socket_matches:
                secrets |= _static_secrets(match.transport_socket)
        elif isinstance(message, listener_pb2.Listener) and not message.HasField("api_listener"):
            listener = bootstrap.static_resources.listeners.add()
            listener.CopyFrom(message)
            for chain in listener.filter_chains:
                secrets |= _static_secrets(chain.transport_socket)
                for network_filter in chain.filters:
                    hcm = hcm_pb2.HttpConnectionManager()
                    if not network_filter.typed_config.Unpack(hcm):
                        continue
                    if hcm.HasField("rds"):
                        hcm.route_config.CopyFrom(route_configs[hcm.rds.route_config_name])
                        network_filter.typed_config.Pack(hcm)
    held = {m.name: m for m in resources if isinstance(m, secret_pb2.Secret)}
    for name in sorted(held):
        bootstrap.static_resources.secrets.add().CopyFrom(held[name])
    secrets -= held.keys()
    if secrets:
        assert identity is not None, f"secrets {sorted(secrets)} need an identity"
        _add_secrets(bootstrap, secrets, identity)
    return bootstrap
