"""The demo's federation zone: `edge-paris` as a `kontinuum zone` process that dials out to
the demo's global through a link the demo cuts and restores.

- `split_fleet` turns the example fleet into the global's fleet, where the site's
  ClusterProfile says `kontinuum.io/source: zone`, and the site's own files, which the
  zone reads.
- `WanLink` stands for the site's WAN link: a TCP relay from the zone to the global's
  federation address. Cutting it closes the open connections and refuses new ones (the
  zone retries with its backoff); restoring it listens again on the same port.
- `Partition` is what the demo saw of the cut: the site's failed requests while cut off,
  the answers of the endpoint added meanwhile, and what the resync sent each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families


def split_fleet(fleet: Path, workdir: Path, site: str) -> tuple[Path, Path]:
    """The global's fleet (the site declared a zone, its files left out) and the site's
    files, as copies under `workdir`."""
    global_fleet = workdir / "global-fleet"
    shutil.copytree(fleet, global_fleet)
    site_files = workdir / site
    shutil.move(global_fleet / "clusters" / site, site_files)
    profiles = global_fleet / "clusters.yaml"
    documents = list(yaml.safe_load_all(profiles.read_text()))
    declared = False
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "ClusterProfile":
            metadata = document.get("metadata") or {}
            if metadata.get("name") == site:
                metadata.setdefault("annotations", {})["kontinuum.io/source"] = "zone"
                declared = True
    if not declared:
        raise RuntimeError(f"{fleet / 'clusters.yaml'}: no ClusterProfile {site} to make a zone")
    profiles.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return global_fleet, site_files


def endpoint_slice(name: str, address: str, port: int) -> str:
    """An EndpointSlice of `hello` in the demo workspace with one ready endpoint."""
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: demo
  labels: {{kubernetes.io/service-name: hello}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP, appProtocol: http}}]
endpoints:
- addresses: ["{address}"]
  conditions: {{ready: true, serving: true, terminating: false}}
"""


@dataclass
class WanLink:
    """A TCP relay from 127.0.0.1:`port` to the global at 127.0.0.1:`target`."""

    port: int
    target: int
    server: asyncio.Server | None = None
    pipes: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def up(self) -> bool:
        return self.server is not None

    async def restore(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for pipe in list(self.pipes):
            pipe.close()
        self.pipes.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.pipes.update((writer, upstream))
        await asyncio.gather(self._pump(reader, upstream), self._pump(upstream_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        self.pipes.discard(writer)
        writer.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # by name and labels


def metrics(admin: str) -> Samples:
    """The samples of a kontinuum process's `/metrics` (empty when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Partition:
    """What the demo saw of the zone's link being cut, then restored."""

    cut_seconds: float = 0.0
    failed_while_cut: int = -1  # the site's requests that failed while cut off
    new_endpoint_answers: int = 0  # requests the endpoint added while cut off answered
    changed_while_cut: int = 0  # objects of the site that changed while cut off
    held: int = 0  # objects the zone publishes
    resent: int = -1  # objects the zone sent on reconnecting
    fleet_resent: int = -1  # resources the global sent the zone on reconnecting
    resynced: bool = False

    def lines(self, site: str) -> list[str]:
        if self.failed_while_cut < 0:
            return []
        lines = [
            f"{site}'s link to the global cut for {self.cut_seconds:.1f} s: {site}'s "
            f"requests failed meanwhile: {self.failed_while_cut}",
            f"an endpoint added at {site} while cut off answered "
            f"{self.new_endpoint_answers} requests (applied by its zone alone)",
        ]
        if self.resynced:
            lines.append(
                f"link restored: the zone sent {self.resent} object(s) of the {self.held} it "
                f"publishes ({self.changed_while_cut} changed while cut off; unchanged objects "
                f"re-sent: {self.resent - self.changed_while_cut}), the global sent it "
                f"{self.fleet_resent} resource(s)"
            )
        else:
            lines.append("link restored: the zone has not resynced yet")
        return lines
