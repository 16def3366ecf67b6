"""Prometheus finds every Envoy through kontinuum: a file-based service discovery file
(`file_sd_configs`) of the connected proxies' stats listeners, kept up to date.

A proxy bootstrapped with a stats listener declares its port (`kontinuum.io/stats-port`);
its address is the one it connects to kontinuum from, as the xDS server sees it (a pod's
IP in Kubernetes, 127.0.0.1 on one machine). Each target carries the proxy's fleet
cluster, workspace, role and node id as labels. A proxy that disconnects stays a target
for `retain` seconds, so that Prometheus sees it go down (`up == 0`) when it died, rather
than quietly stop being scraped.

The file is written only when its content changes, atomically (a temporary file renamed
over it), as Prometheus' file discovery expects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kontinuum.bootstrap import declared
from kontinuum.mesh import Mesh
from kontinuum.xds import XdsServer

log = logging.getLogger("kontinuum.telemetry")

REFRESH: Final = 2.0  # seconds between looks at the connected proxies


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (`ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000`)."""
    _, _, address = peer.partition(":")
    host, _, _ = address.rpartition(":")
    return host.strip("[]") if host else ""


@dataclass(frozen=True, slots=True)
class Target:
    address: str  # host:port of the proxy's stats listener
    labels: tuple[tuple[str, str], ...]


def targets(server: XdsServer, mesh: Mesh) -> dict[str, Target]:
    """The connected proxies that declare a stats port, by node id."""
    found: dict[str, Target] = {}
    for stream in server.streams():
        connection = stream.connection
        node = connection.node
        try:
            port = declared(node, "stats-port")
        except TypeError:
            continue
        host = peer_host(connection.peer.address)
        if not port.isdigit() or not host:
            continue
        key = mesh.view_key(connection.view)
        labels = {"kontinuum_node": str(node.id)}
        if key is not None:
            view = key.view
            labels.update(
                kontinuum_cluster=view.cluster,
                kontinuum_workspace=view.workspace,
                kontinuum_role=view.role,
            )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        found[str(node.id)] = Target(address, tuple(sorted(labels.items())))
    return found


class ServiceDiscoveryFile:
    """Keeps `path` in step with the connected proxies (see the module doc)."""

    def __init__(
        self,
        path: Path,
        server: XdsServer,
        mesh: Mesh,
        *,
        retain: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._server = server
        self._mesh = mesh
        self._retain = retain
        self._clock = clock
        self._known: dict[str, tuple[Target, float]] = {}  # node id -> (target, last seen)
        self._written = ""

    def refresh(self) -> bool:
        """Look at the proxies and write the file if it changed; whether it was written."""
        now = self._clock()
        for node_id, target in targets(self._server, self._mesh).items():
            self._known[node_id] = (target, now)
        self._known = {
            node_id: (target, seen)
            for node_id, (target, seen) in self._known.items()
            if now - seen <= self._retain
        }
        groups = [
            {"targets": [target.address], "labels": dict(target.labels)}
            for _, (target, _) in sorted(self._known.items())
        ]
        text = json.dumps(groups, indent=2, sort_keys=True) + "\n"
        if text == self._written:
            return False
        self._write(text)
        self._written = text
        return True

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".kontinuum-sd-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def run(self) -> None:
        """Refresh every `REFRESH` seconds until cancelled."""
        while True:
            try:
                self.refresh()
            except OSError as exc:  # a full disk, a removed directory: said, and retried
                log.warning("cannot write %s: %s", self.path, exc)
            await asyncio.sleep(REFRESH)


def scrape_config(
    *,
    admin_address: str,
    sd_file: Path,
    rule_files: list[Path] | None = None,
    scrape_interval: str = "15s",
    evaluation_interval: str | None = None,
) -> dict[str, Any]:
    """A Prometheus configuration that scrapes kontinuum's `/metrics` and every Envoy
    through the service discovery file (`kontinuum prometheus-config`)."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval or scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": "kontinuum",
                "static_configs": [{"targets": [admin_address]}],
            },
            {
                "job_name": "kontinuum-envoy",
                "metrics_path": "/stats/prometheus",
                "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "5s"}],
            },
        ],
    }
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    return config
