"""Prometheus finds every Envoy through kontinuum: a file-based service discovery file
(`file_sd_configs`) of the proxies' stats listeners, kept up to date.

A proxy bootstrapped with a stats listener declares its port (`kontinuum.io/stats-port`);
its address is the one it connects to kontinuum from, as the xDS server sees it (a pod's
IP in Kubernetes, 127.0.0.1 on one machine). There is one target per address: when a
proxy with another node id connects from an address already listed (a restarted pod that
kept its IP), it replaces the one before, which is not scraped twice.

The target carries no labels of its own. The proxy's cluster, workspace and role are on
every one of its series already (Envoy's fixed tags, `kontinuum.telemetry.envoy_stats`):
target labels of the same names would make Prometheus rename Envoy's to `exported_*`. So
who the proxy is goes in `__meta_kontinuum_node`, `__meta_kontinuum_cluster`,
`__meta_kontinuum_workspace` and `__meta_kontinuum_role`: shown on Prometheus' targets
page, usable in relabelling, dropped from the series.

A proxy that disconnects stays listed while its stats port still accepts a TCP
connection (checked on every refresh, `PROBE_TIMEOUT` each, `MAX_RETAINED` at most, for
up to `retain` seconds): Prometheus goes on scraping a proxy that lost its control plane,
and sees it say so (`envoy_control_plane_connected_state 0`). A proxy whose port does not
accept (it stopped: a rollout, a scale-down) is dropped at once, so it is never scraped as
down. What kontinuum lists is what it knows: after a restart, proxies that were already
disconnected are not listed; a proxy that reaches kontinuum through NAT or a load balancer
is listed at the wrong address (there, let Prometheus discover the pods itself).

The file is written only when its content changes, atomically (a temporary file renamed
over it), as Prometheus' file discovery expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kontinuum.bootstrap import declared, split_address
from kontinuum.mesh import Mesh
from kontinuum.xds import XdsServer

log = logging.getLogger("kontinuum.telemetry")

REFRESH: Final = 2.0  # seconds between looks at the connected proxies
RETAIN: Final = 24 * 3600.0  # at most, seconds a disconnected proxy that answers stays listed
PROBE_TIMEOUT: Final = 1.0  # seconds a disconnected proxy's stats port has to accept
MAX_RETAINED: Final = 500  # disconnected proxies probed, the most recently connected first
PROBE_CONCURRENCY: Final = 100

# The addresses (of those given) that accept a TCP connection now.
Probe = Callable[[Sequence[str]], Awaitable[set[str]]]


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string: `ipv4:10.0.0.1:5000`, or `ipv6:%5B::1%5D:5000` as
    grpcio writes an IPv6 peer (URL-quoted); "" for any other kind (`unix:`)."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host, _, _ = urllib.parse.unquote(address).rpartition(":")
    return host.strip("[]")


@dataclass(frozen=True, slots=True)
class Target:
    address: str  # host:port ([host]:port for IPv6) of the proxy's stats listener
    labels: tuple[tuple[str, str], ...]  # __meta_kontinuum_*: who the proxy is


def targets(server: XdsServer, mesh: Mesh) -> dict[str, Target]:
    """The connected proxies that declare a stats port, by address (the last stream
    listed wins an address: the most recently connected)."""
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
        meta = {"node": str(node.id)}
        key = mesh.view_key(connection.view)
        if key is not None:
            view = key.view
            meta.update(cluster=view.cluster, workspace=view.workspace, role=view.role)
        labels = tuple(sorted((f"__meta_kontinuum_{k}", v) for k, v in meta.items() if v))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        found.pop(address, None)  # re-inserted: the file lists targets in this order
        found[address] = Target(address, labels)
    return found


async def accepting(addresses: Sequence[str], seconds: float = PROBE_TIMEOUT) -> set[str]:
    """The addresses that accept a TCP connection within `seconds` (closed at once)."""
    limit = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def accepts(address: str) -> bool:
        host, port = split_address(address)
        async with limit:
            try:
                async with asyncio.timeout(seconds):
                    _, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True

    answers = await asyncio.gather(*(accepts(address) for address in addresses))
    return {address for address, yes in zip(addresses, answers, strict=True) if yes}


class ServiceDiscoveryFile:
    """Keeps `path` in step with the proxies (see the module doc)."""

    def __init__(
        self,
        path: Path,
        server: XdsServer,
        mesh: Mesh,
        *,
        retain: float = RETAIN,
        probe: Probe = accepting,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._server = server
        self._mesh = mesh
        self._retain = retain
        self._probe = probe
        self._clock = clock
        self._known: dict[str, tuple[Target, float]] = {}  # address -> (target, last connected)
        self._written = ""

    async def refresh(self) -> bool:
        """Look at the proxies (and probe the disconnected ones) and write the file if it
        changed; whether it was written."""
        now = self._clock()
        connected = targets(self._server, self._mesh)
        for address, target in connected.items():
            self._known[address] = (target, now)
        gone = sorted(
            (
                (-seen, address)  # the most recently connected first
                for address, (_, seen) in self._known.items()
                if address not in connected and now - seen <= self._retain
            )
        )[:MAX_RETAINED]
        alive = await self._probe([address for _, address in gone]) if gone else set()
        self._known = {
            address: known
            for address, known in self._known.items()
            if address in connected or address in alive
        }
        groups = [
            {"targets": [address], "labels": dict(target.labels)}
            for address, (target, _) in sorted(self._known.items())
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
                await self.refresh()
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
    """A Prometheus configuration that scrapes kontinuum's `/metrics` (job `kontinuum`)
    and every Envoy through the service discovery file (job `kontinuum-envoy`): the job
    names the alerts select (`kontinuum prometheus-config`)."""
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
