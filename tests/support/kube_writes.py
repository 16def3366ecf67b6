"""A simulated cluster that also takes writes: Leases and the status subresource.

`KubeCluster` (tests/support/kube.py) serves what a watching client reads; kontinuum's leader
election and status writer also write, so `WritableKubeCluster` scripts, through more kmock
request handlers, what an API server does with those writes:

- `coordination.k8s.io/v1` Leases: get, create (`409 AlreadyExists` when it exists) and
  replace, which is optimistic: a replace whose `metadata.resourceVersion` is not the stored
  one is answered `409 Conflict`, as etcd's compare-and-swap makes a real server answer.
  Every write takes the cluster's next resourceVersion.
- `GET .../<plural>/<name>` of every kind the cluster serves: the object, or `404 NotFound`.
- `PATCH .../<plural>/<name>/status` with a JSON merge patch (RFC 7386): only `status` is
  taken from the patch, as the status subresource does; a `metadata.resourceVersion` in the
  patch is a precondition (`409 Conflict` when the object is at another version), as the
  API server applies it. The change is a MODIFIED event for watches, like any other.

Every write is recorded (`lease_writes`, `status_patches`), so a test can tell that a
non-leader wrote nothing.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kmock

from tests.support.kube import RESOURCES, KubeCluster, Resource, _now

LEASES = ("coordination.k8s.io", "v1", "leases")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator without its own bookkeeping of writes: before any request handler
    runs, it stores created and patched objects itself and answers 404 or 409 by its own
    rules, which would decide these tests' writes instead of the scripted API server."""

    async def _handle(self, request: kmock.Request) -> Any:
        return await kmock.KubernetesScaffold._handle(self, request)


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message)


@dataclass
class WritableKubeCluster(KubeCluster):
    """A `KubeCluster` that also emulates Lease writes and ServiceExport status patches."""

    leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    lease_writes: Counter[str] = field(default_factory=Counter)  # by outcome: created, ...
    # (kind, namespace, name, patch) of every status PATCH, answered or refused
    status_patches: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    reads: Counter[str] = field(default_factory=Counter)  # GETs of one object, by kind
    refuse_status: int | None = None  # answer every status PATCH with this code (403, 404)
    # (monotonic time, User-Agent) of every status PATCH, and (time, holder) of every
    # Lease written: who wrote status, and who held a Lease then
    status_writers: list[tuple[float, str]] = field(default_factory=list)
    lease_holders: list[tuple[float, str]] = field(default_factory=list)

    async def __aenter__(self) -> WritableKubeCluster:
        await self.start()
        return self

    async def start(self) -> None:
        if self._handler is None:  # KubeCluster.start() takes this one instead of its own
            handler = _Emulator()
            ahead = handler.override  # before the read-only responders, which refuse writes
            ahead[kmock.resource(*LEASES)] << self._lease
            for resource in RESOURCES.values():
                selector = resource.selector
                ahead[selector][kmock.subresource("status")] << self._status_of(resource)
                handler[selector] << self._readable(resource)
            await handler.__aenter__()
            self._handler = handler
        await super().start()

    # --- Leases -----------------------------------------------------------------------------

    def lease(self, name: str, namespace: str = "kontinuum-system") -> dict[str, Any] | None:
        found = self.leases.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def _lease(self, request: kmock.Request) -> object:
        namespace = request.namespace or ""
        method = request.method
        if method == kmock.method.GET and request.name:
            found = self.leases.get((namespace, request.name))
            if found is None:
                raise _error(404, "NotFound", f'leases "{request.name}" not found')
            return copy.deepcopy(found)
        if method == kmock.method.POST and not request.name:
            body = _json(request)
            name = body["metadata"]["name"]
            if (namespace, name) in self.leases:
                self.lease_writes["exists"] += 1
                raise _error(409, "AlreadyExists", f'leases "{name}" already exists')
            self.lease_writes["created"] += 1
            return self._store(namespace, name, body, None)
        if method == kmock.method.PUT and request.name:
            body = _json(request)
            old = self.leases.get((namespace, request.name))
            if old is None:
                raise _error(404, "NotFound", f'leases "{request.name}" not found')
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent != old["metadata"]["resourceVersion"]:
                self.lease_writes["conflict"] += 1
                message = (
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{request.name}":'
                    " the object has been modified; please apply your changes to the latest"
                    " version and try again"
                )
                raise _error(409, "Conflict", message)
            self.lease_writes["replaced"] += 1
            return self._store(namespace, request.name, body, old)
        raise kmock.KubernetesEndpointNotFoundError()

    def _store(
        self, namespace: str, name: str, body: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        self._version += 1
        obj = {**body, "apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
        metadata = dict(obj.get("metadata") or {})
        metadata.update(name=name, namespace=namespace, resourceVersion=str(self._version))
        if old is None:
            metadata.update(uid=f"{self.name}-{self._version}", creationTimestamp=_now())
        else:
            metadata.update(
                uid=old["metadata"]["uid"], creationTimestamp=old["metadata"]["creationTimestamp"]
            )
        obj["metadata"] = metadata
        self.leases[namespace, name] = obj
        holder = (obj.get("spec") or {}).get("holderIdentity") or ""
        self.lease_holders.append((time.monotonic(), holder))
        return copy.deepcopy(obj)

    # --- one object, and its status ----------------------------------------------------------

    def _readable(self, resource: Resource) -> Callable[[kmock.Request], object]:
        """The read-only responder, and GET of one object."""
        lists_and_watches = self._responder(resource)

        def respond(request: kmock.Request) -> object:
            if (
                request.method != kmock.method.GET
                or not request.name
                or not self.serves(resource.kind)
            ):
                return lists_and_watches(request)
            self.reads[resource.kind] += 1
            found = self.object(resource.kind, request.namespace or "", request.name)
            if found is None:
                message = f'{resource.plural}.{resource.group} "{request.name}" not found'
                raise _error(404, "NotFound", message)
            return found

        return respond

    def _status_of(self, resource: Resource) -> Callable[[kmock.Request], object]:
        def respond(request: kmock.Request) -> object:
            if request.method != kmock.method.PATCH or not request.name:
                raise kmock.KubernetesEndpointNotFoundError()
            namespace = request.namespace or ""
            patch = _json(request)
            self.status_patches.append(
                (resource.kind, namespace, request.name, copy.deepcopy(patch))
            )
            self.status_writers.append((time.monotonic(), request.headers.get("User-Agent", "")))
            current = self.object(resource.kind, namespace, request.name)
            if self.refuse_status == 403:
                message = (
                    f'{resource.plural}.{resource.group} "{request.name}" is forbidden: User '
                    f'"tester" cannot patch resource "{resource.plural}/status"'
                )
                raise _error(403, "Forbidden", message)
            if current is None or self.refuse_status == 404:
                message = f'{resource.plural}.{resource.group} "{request.name}" not found'
                raise _error(404, "NotFound", message)
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                message = (
                    f"Operation cannot be fulfilled on {resource.plural}.{resource.group} "
                    f'"{request.name}": the object has been modified; please apply your '
                    "changes to the latest version and try again"
                )
                raise _error(409, "Conflict", message)
            status = {"status": patch["status"]} if "status" in patch else {}
            self.put(merge_patch(current, status))  # the next resourceVersion, a MODIFIED event
            return self.object(resource.kind, namespace, request.name)

        return respond

    def object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return next(
            (
                o
                for o in self.objects(kind)
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) == (namespace, name)
            ),
            None,
        )


def _json(request: kmock.Request) -> dict[str, Any]:
    """The request's JSON body (kmock parses only `application/json` into `data`)."""
    if isinstance(request.data, dict):
        return request.data
    loaded = json.loads(request.body or b"{}")
    assert isinstance(loaded, dict), loaded
    return loaded
