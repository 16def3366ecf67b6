"""Helpers for the authenticated-xDS tests: credential files, a real gRPC ADS client over
TLS, and reading the control plane's metrics and Envoy's certificates."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from kontinuum.bootstrap import proxy_metadata
from kontinuum.security.ca import CertificateAuthority, IssuedCertificate
from kontinuum.xds.server import ADS_SERVICE

SOTW_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A client's files as `kontinuum ca issue --out DIR` writes them."""

    directory: Path
    certificate: Path
    key: Path
    ca: Path

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.key.read_bytes(), self.certificate.read_bytes()
        )


def write_credentials(
    directory: Path, issued: IssuedCertificate, trust: CertificateAuthority
) -> Credentials:
    """cert.pem, key.pem (mode 0600) and ca.pem (the root of `trust`) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key, ca = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    certificate.write_bytes(issued.certificate_chain_pem)
    ca.write_bytes(trust.trust_bundle_pem)
    descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(issued.private_key_pem)
    return Credentials(directory, certificate, key, ca)


def root_only(ca: CertificateAuthority) -> grpc.ChannelCredentials:
    """TLS that trusts the fleet's root and presents no client certificate."""
    return grpc.ssl_channel_credentials(ca.trust_bundle_pem)


def node(node_id: str, cluster: str, namespace: str, **declared: Any) -> Any:
    """A sidecar's node as `kontinuum bootstrap` declares it."""
    result = base_pb2.Node(id=node_id, cluster=cluster)
    result.metadata.CopyFrom(struct_pb2.Struct())
    result.metadata.update(
        proxy_metadata(namespace=namespace, role=declared.pop("role", "sidecar"), **declared)
    )
    return result


async def ads(
    address: str,
    credentials: grpc.ChannelCredentials,
    first: Any,
    subscriptions: Sequence[tuple[str, Sequence[str]]],
    *,
    metadata: Iterable[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Open a SotW ADS stream over TLS as a real client does and return the first response
    of each type in `subscriptions` ((type URL, names); the first request carries `first`,
    the node). Raises grpc.aio.AioRpcError when the stream is refused."""
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call: Any = channel.stream_stream(
            SOTW_METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        stream = call(metadata=tuple(metadata), timeout=timeout)
        for index, (type_url, names) in enumerate(subscriptions):
            request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
            if index == 0:
                request.node.CopyFrom(first)
            await stream.write(request)
        wanted = {type_url for type_url, _ in subscriptions}
        responses: dict[str, Any] = {}
        while wanted - responses.keys():
            response: Any = await stream.read()
            if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                raise AssertionError(f"the stream ended before {wanted - responses.keys()}")
            responses.setdefault(response.type_url, response)
        stream.cancel()
        return responses


@dataclass(frozen=True, slots=True)
class Refused:
    """How the server ended a stream it refused."""

    code: grpc.StatusCode
    details: str


async def refusal(
    address: str,
    credentials: grpc.ChannelCredentials,
    first: Any,
    type_url: str,
    *,
    metadata: Iterable[tuple[str, str]] = (),
) -> Refused:
    """How a stream that must be refused ends (AssertionError if it is served)."""
    try:
        got = await ads(address, credentials, first, [(type_url, [])], metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return Refused(error.code(), error.details() or "")
    raise AssertionError(f"the stream was served: {sorted(got)}")


def uri_sans(certificate_pem: bytes) -> list[str]:
    """The URI SANs of the first certificate of a PEM."""
    leaf = x509.load_pem_x509_certificates(certificate_pem)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def key_matches(certificate_pem: bytes, key_pem: bytes) -> bool:
    """Whether `key_pem` is the private key of the first certificate of `certificate_pem`."""
    leaf = x509.load_pem_x509_certificates(certificate_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    own = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    return own == leaf.public_key().public_bytes(serialization.Encoding.DER, spki)


def serial_of(certificate_pem: bytes) -> int:
    return int(x509.load_pem_x509_certificates(certificate_pem)[0].serial_number)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def metrics_text(admin_address: str) -> str:
    """The control plane's `/metrics`, fetched off the event loop that serves it."""
    return await asyncio.to_thread(_get, f"http://{admin_address}/metrics")


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of a Prometheus exposition (None: absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(
                found.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(found.value)
    return None


def envoy_certificates(certs_json: str) -> list[dict[str, Any]]:
    """Every certificate of Envoy's admin `/certs` (chains and CAs), flattened."""
    document = json.loads(certs_json)
    found: list[dict[str, Any]] = []
    for context in document.get("certificates", []):
        for kind in ("cert_chain", "ca_cert"):
            for entry in context.get(kind) or []:
                found.append({**entry, "kind": kind})
    return found


def entry_uris(entry: dict[str, Any]) -> list[str]:
    return [name["uri"] for name in entry.get("subject_alt_names", []) if "uri" in name]
