"""Writing status back: what the control layer decided about an object, into the object.

An operator (or `kubectl get serviceexport -o yaml`, `kubectl describe httproute`) learns
why an export conflicts or a route is not accepted from the object itself, as the MCS and
Gateway APIs intend. The decisions are made elsewhere (`kontinuum.control.mcs`,
`kontinuum.control.route_binding`); the fields are rendered by `kontinuum.kube.conditions`.
This module only writes them, under these rules:

- Only the leader writes (`Leadership`, see `kontinuum.kube.lease`): replicas decide the
  same, but two writers would fight over the objects.
- No write storm: a plane is rebuilt on every endpoint change, decisions rarely change.
  An object is written only when its decision differs from the last one this writer
  wrote for it during the current term of leadership. A new term forgets: another
  leader may have written since.
- Each write reads the object first (GET) and sends nothing when it already holds what
  would be written: a new leader, or a restarted one, rewrites nothing that is right.
- The write is a JSON merge patch of `status` through the status subresource, so it never
  touches the object's spec or metadata, carrying the `resourceVersion` that was read: an
  object changed in between is answered `409 Conflict` and written again on the next
  round, from its new version, instead of overwriting what another writer just wrote.
- A failed write is not remembered, so the next round tries it again; an object that is
  gone (`404`) is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from kubernetes.client import CustomObjectsApi  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from kontinuum.discovery.kube_watch import describe
from kontinuum.kube.conditions import Render

log = logging.getLogger("kontinuum.kube.status")

REQUEST_TIMEOUT: Final = 10.0  # seconds, for each GET and PATCH


class Leadership(Protocol):
    """What the writer needs of an election (`LeaderElection` is one)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def term(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object to write the status of: which API holds it (a fleet cluster's name, or the
    config cluster's source name), its resource and its name."""

    api: str
    group: str
    version: str
    plural: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} in {self.api}"


@dataclass(frozen=True, slots=True)
class DesiredStatus:
    """What an object's status should say: `decision` is what was decided (when it is the
    same as last written, nothing is written), `render` the status fields that say it."""

    ref: ObjectRef
    decision: Hashable
    render: Render = field(compare=False)


ApiClients = Callable[[str], Awaitable[Any]]
"""The client of an API by name, or None when that API is not Kubernetes (a site of files
or DNS); raises when the client cannot be made."""


@dataclass(slots=True)
class WriteRound:
    """What one `write()` did, by outcome: `written`, `unchanged` (already right in the
    object), `failed`, `gone` (no such object), `skipped` (not leading, or no API)."""

    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return self.outcomes["failed"]


class StatusWriter:
    """Writes desired statuses into their objects (see the module doc)."""

    def __init__(
        self,
        clients: ApiClients,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clients = clients
        self._leadership = leadership
        self._clock = clock
        self._written: dict[ObjectRef, Hashable] = {}
        self._failing: set[ObjectRef] = set()  # failures already logged as warnings
        self._term = -1
        self.totals: Counter[tuple[str, str]] = Counter()  # (kind, outcome), for metrics

    async def write(self, desired: Iterable[DesiredStatus]) -> WriteRound:
        """Write what changed since this term's last write, if leading."""
        round_ = WriteRound()
        if not self._leadership.is_leader:
            self._written.clear()  # what is in the objects may change meanwhile
            return round_
        if self._leadership.term != self._term:
            self._term = self._leadership.term
            self._written.clear()
        current = {item.ref: item for item in desired}
        for ref in set(self._written) - set(current):
            del self._written[ref]  # no longer decided; if it comes back, write it again
        for ref, item in sorted(current.items(), key=lambda kv: str(kv[0])):
            if self._written.get(ref) == item.decision:
                continue
            if not self._leadership.is_leader:  # lost while writing: stop at once
                break
            outcome = await self._write_one(item)
            round_.outcomes[outcome] += 1
            self.totals[ref.kind, outcome] += 1
            if outcome != "failed":
                self._written[ref] = item.decision
        return round_

    async def _write_one(self, item: DesiredStatus) -> str:
        ref = item.ref
        try:
            client = await self._clients(ref.api)
        except Exception as exc:  # a kubeconfig that does not load: retried next round
            self._warn(ref, f"no client: {exc}")
            return "failed"
        if client is None:
            return "skipped"
        api = CustomObjectsApi(client)
        try:
            outcome = await asyncio.to_thread(self._read_and_patch, api, item)
        except ApiException as exc:
            if exc.status == 404:
                log.debug("status of %s: the object is gone", ref)
                return "gone"
            if exc.status == 409:  # changed since it was read: written from its new version
                log.debug("status of %s: %s; retrying", ref, describe(exc))
            else:
                self._warn(ref, describe(exc))
        except Exception as exc:  # an unreachable cluster, a timeout: retried next round
            self._warn(ref, describe(exc))
        else:
            self._recovered(ref)
            return outcome
        return "failed"

    def _read_and_patch(self, api: Any, item: DesiredStatus) -> str:
        ref = item.ref
        obj = api.get_namespaced_custom_object(
            ref.group, ref.version, ref.namespace, ref.plural, ref.name,
            _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        if not isinstance(obj, Mapping):
            raise TypeError(f"the API server answered a {type(obj).__name__}, not an object")
        status = item.render(obj, self._clock())
        held = obj.get("status")
        held = held if isinstance(held, Mapping) else {}
        if all(held.get(key) == value for key, value in status.items()):
            return "unchanged"
        metadata = obj.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
        body = {"metadata": {"resourceVersion": version}, "status": status}
        api.patch_namespaced_custom_object_status(
            ref.group, ref.version, ref.namespace, ref.plural, ref.name, body,
            _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        log.debug("status of %s written", ref)
        return "written"

    def _warn(self, ref: ObjectRef, problem: str) -> None:
        """Log a failed write: a warning the first time, then quietly until it succeeds."""
        level = logging.DEBUG if ref in self._failing else logging.WARNING
        log.log(level, "status of %s not written: %s; retrying", ref, problem)
        self._failing.add(ref)

    def _recovered(self, ref: ObjectRef) -> None:
        if ref in self._failing:
            self._failing.discard(ref)
            log.info("status of %s written again", ref)


__all__ = [
    "ApiClients",
    "DesiredStatus",
    "Leadership",
    "ObjectRef",
    "StatusWriter",
    "WriteRound",
]
