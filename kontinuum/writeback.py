"""Status written back into Kubernetes objects by a running fleet: the composition of the
mesh's decisions (`kontinuum.mesh`), the sources' state (`kontinuum.discovery`) and the
writers (`kontinuum.kube`).

Like a controller that waits for its caches to sync before it reconciles, nothing is
written from a fleet still being discovered: while a cluster reached through an API or
DNS has not been reported yet (at the start, or when its source starts over because it
is reached another way), nothing is written, for up to `settle` seconds: a cluster that
never answers must not hold back the others' status for good. (A cluster that is stale
needs no such wait: its last view, exports included, stays in the fleet.)

Only the Lease's holder writes. Every request carries the replica's identity in its
`User-Agent` (`kontinuum/<version> (<identity>)`), so the API server's audit log says
which replica wrote what. Stopping, a leader first lets its writes in flight finish,
then steps down and hands the Lease over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kontinuum import __version__
from kontinuum.control.model import KubernetesAccess
from kontinuum.discovery.config_cluster import ConfigClusterSource
from kontinuum.discovery.kube_watch import new_api_client
from kontinuum.kube import (
    DesiredStatus,
    KubeClients,
    LeaderElection,
    LeaseConfig,
    StatusSync,
    StatusWriter,
)
from kontinuum.kube.desired import export_statuses, routing_statuses
from kontinuum.kube.lease import default_identity
from kontinuum.mesh import Mesh

log = logging.getLogger("kontinuum.writeback")

Unreported = Callable[[], set[str]]
"""The clusters whose source has not reported them yet (`SiteSources.unreported`)."""


@dataclass(frozen=True, slots=True)
class StatusOptions:
    """Writing status back into Kubernetes objects, as the holder of a Lease.

    The Lease is in the config cluster, or in the fleet cluster `lease_cluster` names
    (which must be reached through its Kubernetes API). Failed writes are tried again
    after `backoff[0]` seconds, doubling up to `backoff[1]`; every `resync` seconds every
    object is read again; `settle` bounds the wait for a first view of every cluster."""

    lease: LeaseConfig = field(default_factory=lambda: LeaseConfig(release_on_cancel=True))
    lease_cluster: str = ""
    backoff: tuple[float, float] = (5.0, 300.0)
    resync: float = 300.0
    settle: float = 30.0


class StatusRuntime:
    """Leader election and the status writes of a running fleet: ServiceExports in their
    clusters, and the routing objects read from the config cluster, into that cluster."""

    def __init__(
        self,
        mesh: Mesh,
        options: StatusOptions,
        config: ConfigClusterSource | None,
        unreported: Unreported,
    ) -> None:
        self._mesh = mesh
        self._config = config
        self._unreported = unreported
        self._settle = options.settle
        self._unreported_since: dict[str, float] = {}
        self._wake: asyncio.TimerHandle | None = None
        self._lease_cluster = options.lease_cluster
        self._misplaced = False  # --lease-cluster named a cluster without a Kubernetes API
        self.lease_api = options.lease_cluster or (config.name if config else "")
        identity = default_identity()
        agent = f"kontinuum/{__version__} ({identity})"

        def client(access: KubernetesAccess, connections: int) -> Any:
            made = new_api_client(access, connections)
            made.user_agent = agent
            return made

        self.clients = KubeClients(client)
        self.election = LeaderElection(
            lambda: self.clients(self.lease_api),
            options.lease,
            identity=identity,
            on_change=lambda _: self.sync.changed(),
        )
        self.writer = StatusWriter(self.clients, self.election, backoff=options.backoff)
        self.sync = StatusSync(self.writer, self.desired, self.election.leading, options.resync)
        self.clients.know(self._accesses())

    def _accesses(self) -> dict[str, KubernetesAccess]:
        """The Kubernetes APIs of the fleet as the mesh has it, and the config cluster's."""
        accesses = {
            site.name: site.access
            for site in self._mesh.plane.sites
            if isinstance(site.access, KubernetesAccess)
        }
        if self._config is not None:
            accesses[self._config.name] = self._config.access
        return accesses

    def applied(self) -> None:
        """A fleet was applied: the APIs to write to, and what to write, may have changed."""
        accesses = self._accesses()
        self.clients.know(accesses)
        if self._lease_cluster and self._lease_cluster not in accesses:
            if not self._misplaced:
                log.error(
                    "--lease-cluster %s is not a cluster of the fleet reached through its "
                    "Kubernetes API: no replica leads, no status is written",
                    self._lease_cluster,
                )
            self._misplaced = True
        else:
            self._misplaced = False
        self.sync.changed()

    def _holding(self) -> bool:
        """Whether a cluster not reported yet holds the writes back (see the module doc);
        when one does, a round is due again when its wait ends."""
        unreported = self._unreported()
        now = time.monotonic()
        since = {c: self._unreported_since.get(c, now) for c in unreported}
        self._unreported_since = since
        waits = [started + self._settle - now for started in since.values()]
        pending = [w for w in waits if w > 0]
        if not pending:
            return False
        if self._wake is not None:
            self._wake.cancel()
        self._wake = asyncio.get_running_loop().call_later(min(pending), self.sync.changed)
        return True

    def desired(self) -> list[DesiredStatus]:
        if self._holding():
            return []  # not every cluster has been seen yet: decisions could still flip
        plane = self._mesh.plane
        kubernetes = {s.name for s in plane.sites if isinstance(s.access, KubernetesAccess)}
        desired = export_statuses(plane.exports, kubernetes)
        if self._config is not None:
            config = self._mesh.routing_state
            desired += routing_statuses(
                config.binding,
                self._config.name,
                config.rejections,
                config.gateway_classes,
                config.disowned,
            )
        return desired

    async def run(self) -> None:
        log.info(
            "%s: status is written while holding Lease %s/%s in %s",
            self.election.identity,
            self.election.config.namespace,
            self.election.config.name,
            self.lease_api,
        )
        election = asyncio.create_task(self.election.run(), name="leader election")
        sync = asyncio.create_task(self.sync.run(), name="status writes")
        try:
            done, _ = await asyncio.wait((election, sync), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a task that ends on its own has failed: raise why
        finally:
            # Writes end first, then leadership: a successor must not race a write of ours.
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
            await self.writer.drain()
            self.writer.close()
            election.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await election
            self.clients.close()
