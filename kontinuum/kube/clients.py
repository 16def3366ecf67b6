"""The API clients kontinuum writes through: one per Kubernetes API, made when first needed.

Making a client reads a kubeconfig and may run a credential plugin, so it happens in a
thread; a client is kept while its API is reached the same way, and closed when the
cluster leaves the fleet or is reached another way. The sources keep clients of their own
for watching: a write never waits behind a watch for a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from kontinuum.control.model import KubernetesAccess
from kontinuum.discovery.kube_watch import new_api_client

WRITE_CONNECTIONS = 2  # writes go one at a time; one more for the Lease's renewals


class KubeClients:
    """The clients of the APIs `known` names (a fleet cluster, the config cluster), as the
    `ApiClients` of `kontinuum.kube.status_writer`: None for a name that is not known;
    `ClientChanged` when its access changed while its client was made."""

    def __init__(self, factory: Callable[[KubernetesAccess, int], Any] = new_api_client) -> None:
        self._factory = factory
        self._access: dict[str, KubernetesAccess] = {}
        self._clients: dict[str, tuple[KubernetesAccess, Any]] = {}

    def know(self, accesses: Mapping[str, KubernetesAccess]) -> None:
        """The APIs there are now and how each is reached; clients of others (or of an
        API now reached another way) are closed."""
        self._access = dict(accesses)
        for name, (access, client) in list(self._clients.items()):
            now = self._access.get(name)
            if now is None or now.connection != access.connection:
                del self._clients[name]
                _close(client)

    async def __call__(self, name: str) -> Any:
        access = self._access.get(name)
        if access is None:
            return None
        found = self._clients.get(name)
        if found is not None and found[0].connection == access.connection:
            return found[1]
        client = await asyncio.to_thread(self._factory, access, WRITE_CONNECTIONS)
        now = self._access.get(name)
        if now is None or now.connection != access.connection:
            _close(client)
            raise ClientChanged(f"{name} is reached another way (or left) meanwhile")
        self._clients[name] = (access, client)
        return client

    def close(self) -> None:
        for _, client in self._clients.values():
            _close(client)
        self._clients.clear()


class ClientChanged(Exception):  # noqa: N818 (a transient outcome, retried)
    """The API was reached another way (or left the fleet) while its client was made."""


def _close(client: Any) -> None:
    with contextlib.suppress(Exception):  # closing is best effort: the pool may be gone
        client.close()
