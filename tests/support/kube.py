"""Simulated Kubernetes clusters for the Kubernetes sources: kmock's API emulator over real
HTTP on 127.0.0.1, one per cluster, spoken to by the official client as a real API server
would be.

kmock serves the API's shape (discovery, errors as `Status` objects, chunked watch
streams); what a watching client depends on beyond that it does not model, so each
cluster scripts its list and watch answers of the kinds kontinuum reads (Services,
EndpointSlices and ServiceExports; a config cluster's ClusterProfiles, ReferenceGrants,
routes, Gateways and LocalityPolicies) through kmock's request handlers, as an API server
backed by etcd answers them:

- every change gets the next `resourceVersion` (one counter for the cluster, like etcd's);
  a list answers the current objects and the version they are at; a watch from version V
  sends every change after V, then the live ones, and bookmarks when asked to;
- the history is compacted on demand (`compact`): a watch from before the compaction is
  answered `410 Gone`; open watches can be ended (`end_watches`) with an `ERROR` 410 event,
  as a server does when a watcher falls too far behind, or cleanly, as when their
  `timeoutSeconds` run out; `expire` does both, around a change no open watch sends;
- list items come without `apiVersion`/`kind` for built-in kinds and with them for custom
  resources, as a real server sends them; watch events always carry them;
- `metadata.generation` starts at 1 and grows when anything but metadata and status
  changes, as the API server counts it;
- the watch parameter the Python client sends (`watch=True`) is honoured case-insensitively,
  as the API server parses booleans (kmock itself expects `true`).

`stop()` ends every open watch and closes the port (the cluster went away); `start()` opens
the same port again with the same objects (it came back). Changes (`put`, `remove`) are
plain calls on the test's event loop: they happen at once, in order, and reach watches as
the next events.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import kmock
import yaml
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from kontinuum.control.model import KubernetesAccess, SiteSnapshot
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.source import Source, SourceUpdate


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str
    version: str
    plural: str
    builtin: bool
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def selector(self) -> Any:
        """Where the emulator serves the kind (see `_NAMESPACES_PATH`)."""
        plural = _NAMESPACES_ALIAS if self.kind == "Namespace" else self.plural
        return kmock.resource(self.group, self.version, plural)


_GATEWAY: Final = "gateway.networking.k8s.io"
RESOURCES: Final = {
    r.kind: r
    for r in (
        Resource("Service", "", "v1", "services", True),
        Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
        Resource("ServiceExport", "multicluster.x-k8s.io", "v1alpha1", "serviceexports", False),
        # what a config cluster holds
        Resource("ClusterProfile", "multicluster.x-k8s.io", "v1alpha1", "clusterprofiles", False),
        Resource("ReferenceGrant", _GATEWAY, "v1beta1", "referencegrants", False),
        Resource("HTTPRoute", _GATEWAY, "v1", "httproutes", False),
        Resource("GRPCRoute", _GATEWAY, "v1", "grpcroutes", False),
        Resource("Gateway", _GATEWAY, "v1", "gateways", False),
        Resource("LocalityPolicy", "policy.kontinuum.io", "v1alpha1", "localitypolicies", False),
        Resource("GatewayClass", _GATEWAY, "v1", "gatewayclasses", False, namespaced=False),
        Resource("Secret", "", "v1", "secrets", True),
        Resource("Namespace", "", "v1", "namespaces", True, namespaced=False),
    )
}
# kmock reads /api/v1/namespaces as the start of a namespaced path and fails on it: the list
# (and watch) of Namespaces is handed to the emulator under another path.
_NAMESPACES_PATH: Final = "/api/v1/namespaces"
_NAMESPACES_ALIAS: Final = "kontinuum-test-namespaces"
GoneAs = Literal["event", "status"]
log = logging.getLogger("tests.kube")


@dataclass
class _Change:
    version: int
    kind: str
    event: dict[str, Any]


@dataclass
class KubeCluster:
    """One simulated cluster (see the module doc). Use as `async with KubeCluster(...)`."""

    name: str
    bookmark_interval: float = 0.0  # 0: no bookmarks even when asked
    exports_api: bool = True  # False: the ServiceExport CRD is not installed (404)
    missing_apis: frozenset[str] = frozenset()  # kinds whose CRD is not installed (404)
    forbidden_apis: frozenset[str] = frozenset()  # kinds the client may not list (403)
    port: int = 0  # 0: a free one at the first start, kept across restarts
    lists: Counter[str] = field(default_factory=Counter)  # list requests per kind
    watches: Counter[str] = field(default_factory=Counter)  # watch requests per kind
    gone: Counter[str] = field(default_factory=Counter)  # 410s answered per kind
    _objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    _history: list[_Change] = field(default_factory=list)
    _version: int = 1
    _compacted: int = 0  # watches from before this version are gone
    _epoch: int = 0  # bumped by `end_watches`: open watches end
    _end_gone: bool = True  # how they end: with an ERROR 410 event, or cleanly
    _tick: asyncio.Event = field(default_factory=asyncio.Event)
    _running: bool = False
    _handler: kmock.KubernetesEmulator | None = None
    _server: RawTestServer | None = None

    async def __aenter__(self) -> KubeCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._handler is not None:
            await self._handler.__aexit__(None, None, None)
            self._handler = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._handler is None:
            handler = kmock.KubernetesEmulator()
            for resource in RESOURCES.values():
                handler[resource.selector] << self._responder(resource)
            await handler.__aenter__()
            self._handler = handler
        # aiohttp's test server, as kmock.Server uses, without the client and DNS interception
        # kmock.Server adds: they are not needed, and must end in LIFO order, whereas clusters
        # come and go in any order.
        server = RawTestServer(self._serve, host="127.0.0.1", port=self.port or None)
        await server.start_server()
        assert server.port is not None
        self._server, self.port, self._running = server, server.port, True

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.rel_url.path == _NAMESPACES_PATH:
            url = request.rel_url
            alias = url.with_path(f"/api/v1/{_NAMESPACES_ALIAS}").with_query(url.query)
            request = request.clone(rel_url=alias)
        assert self._handler is not None
        response: web.StreamResponse = await self._handler(request)
        return response

    async def stop(self) -> None:
        """The cluster goes away: open watches end, the port closes."""
        if self._server is None:
            return
        self._running = False
        self._wake()
        await asyncio.sleep(0)  # let the watch streams see it and end
        server, self._server = self._server, None
        await server.close()

    # --- changes --------------------------------------------------------------------------

    def put(self, *objects: Mapping[str, Any]) -> None:
        """Create or replace objects (each an ADDED or MODIFIED event)."""
        for obj in objects:
            body = copy.deepcopy(dict(obj))
            resource = RESOURCES[body["kind"]]
            body["apiVersion"] = resource.api_version
            metadata = body.setdefault("metadata", {})
            if resource.namespaced:
                metadata.setdefault("namespace", "default")
            key = (resource.kind, metadata.get("namespace", ""), metadata["name"])
            old = self._objects.get(key)
            if old is None:
                metadata.setdefault("uid", f"{self.name}-{self._version}")
                metadata.setdefault("creationTimestamp", _now())
                metadata.setdefault("generation", 1)
            else:
                metadata["uid"] = old["metadata"]["uid"]
                metadata["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                # As the API server counts it: a new generation when the spec changes.
                generation = old["metadata"].get("generation", 1)
                changed = {k: v for k, v in body.items() if k not in ("metadata", "status")} != {
                    k: v for k, v in old.items() if k not in ("metadata", "status")
                }
                metadata["generation"] = generation + 1 if changed else generation
            self._version += 1
            metadata["resourceVersion"] = str(self._version)
            self._objects[key] = body
            event = {"type": "MODIFIED" if old else "ADDED", "object": copy.deepcopy(body)}
            self._history.append(_Change(self._version, resource.kind, event))
        self._wake()

    def remove(self, kind: str, namespace: str, name: str) -> None:
        """Delete an object (a DELETED event)."""
        body = self._objects.pop((kind, namespace, name))
        self._version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self._version)
        self._history.append(_Change(self._version, kind, {"type": "DELETED", "object": body}))
        self._wake()

    def compact(self) -> None:
        """Forget the history so far: a watch from an earlier version gets 410 Gone."""
        self._compacted = self._version
        self._history.clear()

    def end_watches(self, *, gone: bool) -> None:
        """End every open watch: with an `ERROR` 410 event, or cleanly (as when its
        `timeoutSeconds` ran out)."""
        self._epoch += 1
        self._end_gone = gone
        self._wake()

    def expire(self, change: Callable[[], None] | None = None, *, gone: GoneAs = "event") -> None:
        """The watches expire: `change` is made, the history is compacted, and every open
        watch ends, none of them having sent `change`; only a new list shows it. With
        `gone="event"` the open watches end with an `ERROR` 410 event; with "status" they
        end cleanly and the client's next watch (from its old version) is answered with
        HTTP 410."""
        self.end_watches(gone=gone == "event")  # before `change`: no open watch sends it
        if change is not None:
            change()
        self.compact()

    def serves(self, kind: str) -> bool:
        """Whether the API of `kind` is installed."""
        missing = self.missing_apis | ({"ServiceExport"} if not self.exports_api else set())
        return kind not in missing

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, _, _), o in sorted(self._objects.items()) if k == kind]

    def _wake(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # --- the API --------------------------------------------------------------------------

    def _responder(self, resource: Resource) -> Callable[[kmock.Request], object]:
        def respond(request: kmock.Request) -> object:
            if not self.serves(resource.kind):
                raise kmock.KubernetesResourceNotFoundError()
            if resource.kind in self.forbidden_apis:
                message = (
                    f'{resource.plural}.{resource.group} is forbidden: User "tester" cannot '
                    f'list resource "{resource.plural}" at the cluster scope'
                )
                raise kmock.KubernetesError(status=403, reason="Forbidden", message=message)
            if request.method != kmock.method.GET or request.name is not None:
                raise kmock.KubernetesEndpointNotFoundError()
            if request.params.get("watch", "").lower() in ("true", "1"):
                return self._watch(resource, request)
            return self._list(resource, request)

        return respond

    def _list(self, resource: Resource, request: kmock.Request) -> dict[str, Any]:
        self.lists[resource.kind] += 1
        items = []
        for obj in self.objects(resource.kind):
            if request.namespace in (None, obj["metadata"].get("namespace", "")):
                if resource.builtin:
                    del obj["apiVersion"], obj["kind"]
                items.append(obj)
        return {
            "apiVersion": resource.api_version,
            "kind": f"{resource.kind}List",
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _gone(self, resource: Resource, since: int) -> dict[str, Any]:
        self.gone[resource.kind] += 1
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {since} ({self._compacted})",
            "reason": "Expired",
            "code": 410,
        }

    def _watch(self, resource: Resource, request: kmock.Request) -> object:
        self.watches[resource.kind] += 1
        params = request.params
        since = int(params.get("resourceVersion") or 0)
        if since and since < self._compacted:
            status = self._gone(resource, since)  # an error, not a Response: kmock keeps those
            raise kmock.KubernetesError(status=410, reason="Expired", message=status["message"])
        bookmarks = params.get("allowWatchBookmarks", "").lower() in ("true", "1")
        limit = float(params["timeoutSeconds"]) if "timeoutSeconds" in params else None
        return self._stream(resource, since, bookmarks, limit)

    async def _stream(
        self, resource: Resource, since: int, bookmarks: bool, limit: float | None
    ) -> AsyncIterator[object]:
        log.debug("%s: %s watch from %s", self.name, resource.plural, since)
        yield b""  # the headers go out at once, as a real server's do
        if not since:  # "any version": the current objects as ADDED, then what follows
            for obj in self.objects(resource.kind):
                yield {"type": "ADDED", "object": obj}
            since = self._version
        epoch, deadline = self._epoch, None if limit is None else time.monotonic() + limit
        while self._running:
            tick = self._tick  # taken first: a change from here on wakes this stream
            if self._epoch != epoch:
                if self._end_gone:
                    yield {"type": "ERROR", "object": self._gone(resource, since)}
                return
            for change in [c for c in self._history if c.version > since]:
                since = change.version
                if change.kind == resource.kind:
                    log.debug(
                        "%s: %s watch sends %s %s",
                        self.name,
                        resource.plural,
                        change.event["type"],
                        change.version,
                    )
                    yield copy.deepcopy(change.event)
            waits = [self.bookmark_interval] if bookmarks and self.bookmark_interval else []
            if deadline is not None:
                waits.append(deadline - time.monotonic())
            try:
                await asyncio.wait_for(tick.wait(), min(waits) if waits else None)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if tick.is_set():  # set as the wait timed out: wait_for says timeout anyway
                    continue
                since = self._version  # nothing changed since the history was sent
                log.debug("%s: %s watch sends BOOKMARK %s", self.name, resource.plural, since)
                metadata = {"resourceVersion": str(since)}
                bookmark = {"apiVersion": resource.api_version, "kind": resource.kind}
                yield {"type": "BOOKMARK", "object": {**bookmark, "metadata": metadata}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- objects and kubeconfig ---------------------------------------------------------------


def service(name: str, namespace: str = "shop", port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "clusterIP": "10.0.0.10",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    }


def endpoint_slice(
    name: str, service: str, addresses: Iterable[str], namespace: str = "shop", port: int = 8080
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}} for address in addresses
        ],
    }


def service_export(name: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": namespace},
    }


def write_kubeconfig(path: Path, clusters: Iterable[KubeCluster]) -> Path:
    """A kubeconfig with one context per cluster, named after it; the first is current."""
    found = list(clusters)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": c.name, "cluster": {"server": c.url}} for c in found],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "contexts": [
            {"name": c.name, "context": {"cluster": c.name, "user": "tester"}} for c in found
        ],
        "current-context": found[0].name if found else "",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --- following a source -------------------------------------------------------------------


class Follower:
    """Runs a source's `updates()` in a task and keeps what it yields, for bounded waits.
    Use as `async with Follower(source) as follower`."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.updates: list[SourceUpdate] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Follower:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        async for update in self.source.updates():
            self.updates.append(update)
            self._changed.set()

    @property
    def snapshots(self) -> list[SiteSnapshot]:
        return [u for u in self.updates if isinstance(u, SiteSnapshot)]

    async def until(
        self, check: Callable[[SiteSnapshot], bool], timeout: float = 2.0, what: str = ""
    ) -> SiteSnapshot:
        """The first snapshot yielded from now on (or the latest, if it already passes)
        for which `check` holds; fails after `timeout` seconds."""
        seen = len(self.snapshots)
        if self.snapshots and check(self.snapshots[-1]):
            return self.snapshots[-1]
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for snapshot in self.snapshots[seen:]:
                        if check(snapshot):
                            return snapshot
                    seen = len(self.snapshots)
                    self._changed.clear()
                    if self._task is not None and self._task.done():
                        self._task.result()
                        raise AssertionError("the source ended")
                    await self._changed.wait()
        except TimeoutError:
            status = self.source.status()
            raise AssertionError(
                f"no snapshot {what or check} within {timeout} s; last: "
                f"{self.snapshots[-1:]}; status: {status}"
            ) from None


def addresses(snapshot: SiteSnapshot) -> list[str]:
    return sorted(address for e in snapshot.endpoints for address in e.addresses)


def source_of(cluster: KubeCluster, kubeconfig: Path, **options: Any) -> KubernetesSource:
    """A source of `cluster` through its context in `kubeconfig` (`write_kubeconfig`)."""
    access = KubernetesAccess(kubeconfig=str(kubeconfig), context=cluster.name)
    return KubernetesSource(cluster.name, access, **options)
