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
- A failed write is tried again with a backoff; an object that is gone (`404`) is
  skipped. A refusal (`403`: kontinuum may not write it; `422`: invalid) is logged as an
  error, once, and tried again with the same backoff, in case it is fixed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import urllib3
from kubernetes.client import CustomObjectsApi  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from kontinuum.discovery.kube_watch import describe
from kontinuum.kube.conditions import Render

log = logging.getLogger("kontinuum.kube.status")

REQUEST_TIMEOUT: Final = 10.0  # seconds, for each GET and PATCH
DRAIN_TIMEOUT: Final = 5.0  # seconds a stopping leader waits for its writes in flight


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
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where} in {self.api}"


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

# Answers that will not change by asking again: permissions, validation, a wrong request.
_REFUSALS: Final = {400: "", 403: " (see the RBAC in deploy/)", 405: "", 422: ""}


class _Unreachable(Exception):  # noqa: N818 (an outcome: the API did not answer)
    """The API could not be reached: its other objects are not tried this round."""


@dataclass(slots=True)
class _Backoff:
    """A failed object: tried again at `at` (monotonic), or at once for a new decision."""

    decision: Hashable
    failures: int
    at: float


@dataclass(slots=True)
class WriteRound:
    """What one `write()` did, by outcome: `written`, `unchanged` (already right in the
    object), `gone` (no such object), `skipped` (no Kubernetes API), `failed` (retried
    with backoff), `refused` (the API server refuses the write: permissions, validation;
    retried with backoff too, in case that is fixed), `conflict` (the object changed since
    it was read: tried again shortly), `deferred` (not tried: its API did not answer)."""

    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.outcomes[o] for o in ("failed", "refused", "conflict", "deferred"))


_RETRIED: Final = ("failed", "refused", "conflict", "deferred")
CONFLICT_RETRY: Final = 1.0  # seconds: conflicts are normal where status lists are shared
WRITE_THREADS: Final = 4  # requests in flight at once, across APIs


class StatusWriter:
    """Writes desired statuses into their objects (see the module doc).

    The objects of each API are written one after the other, the APIs side by side (in
    `WRITE_THREADS` threads of the writer's own), so a cluster that does not answer delays
    only its own objects, and only once per round: its first failure to connect defers
    the rest to the same next try. A failed object is tried again after `backoff[0]`
    seconds, doubling up to `backoff[1]`, or at once when its decision changes.
    """

    def __init__(
        self,
        clients: ApiClients,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (5.0, 300.0),
    ) -> None:
        self._clients = clients
        self._leadership = leadership
        self._clock = clock
        self._monotonic = monotonic
        self._backoff = backoff
        self._written: dict[ObjectRef, Hashable] = {}
        self._retries: dict[ObjectRef, _Backoff] = {}
        self._failing: set[ObjectRef] = set()  # failures already logged as warnings
        self._inflight: set[asyncio.Future[str]] = set()
        self._threads = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="status")
        self._term = -1
        self.totals: Counter[tuple[str, str]] = Counter()  # (kind, outcome), for metrics

    def next_retry(self) -> float | None:
        """When (monotonic) the earliest failed object is due again, if any."""
        return min((r.at for r in self._retries.values()), default=None)

    def forget(self) -> None:
        """Read every object again on the next round (a resync: repairs a status someone
        else changed, or an object deleted and created again in between)."""
        self._written.clear()

    def close(self) -> None:
        """Let the writer's threads end (requests in flight still complete)."""
        self._threads.shutdown(wait=False)

    async def drain(self) -> None:
        """Wait for the requests in flight (their threads outlive a cancelled round), at
        most `DRAIN_TIMEOUT`: one still hanging then is refused by the resourceVersion it
        carries if a successor has written since."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=DRAIN_TIMEOUT)

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
        for ref in set(self._retries) - set(current):
            del self._retries[ref]
        self._failing &= set(current)  # one that comes back and fails is warned of again
        now = self._monotonic()
        due: dict[str, list[DesiredStatus]] = {}
        for ref, item in sorted(current.items(), key=lambda kv: str(kv[0])):
            if self._written.get(ref) == item.decision:
                self._retries.pop(ref, None)  # a decision that failed was taken back
                continue
            retry = self._retries.get(ref)
            if retry is not None and retry.decision == item.decision and retry.at > now:
                continue
            due.setdefault(ref.api, []).append(item)
        await asyncio.gather(*(self._write_api(items, round_) for items in due.values()))
        return round_

    async def _write_api(self, items: list[DesiredStatus], round_: WriteRound) -> None:
        for index, item in enumerate(items):
            if not self._leadership.is_leader:  # lost while writing: stop at once
                return
            try:
                outcome = await self._write_one(item)
            except _Unreachable:
                at = self._record(item, "failed", round_)
                for deferred in items[index + 1 :]:  # not tried: no failure of their own
                    self._record(deferred, "deferred", round_, at)
                return
            self._record(item, outcome, round_)

    def _record(
        self, item: DesiredStatus, outcome: str, round_: WriteRound, at: float | None = None
    ) -> float:
        """Count an outcome and schedule what is retried; when (monotonic) it is due."""
        ref = item.ref
        round_.outcomes[outcome] += 1
        self.totals[ref.kind, outcome] += 1
        if outcome in _RETRIED:
            before = self._retries.get(ref)
            failures = before.failures if before and before.decision == item.decision else 0
            if outcome in ("failed", "refused"):
                failures += 1
            if at is None:
                delay = min(self._backoff[0] * 2 ** max(failures - 1, 0), self._backoff[1])
                at = self._monotonic() + (CONFLICT_RETRY if outcome == "conflict" else delay)
            self._retries[ref] = _Backoff(item.decision, failures, at)
            return at
        self._retries.pop(ref, None)
        self._written[ref] = item.decision
        if ref in self._failing:
            self._failing.discard(ref)
            log.info("status of %s written again", ref)
        return self._monotonic()

    async def _write_one(self, item: DesiredStatus) -> str:
        ref = item.ref
        try:
            client = await self._clients(ref.api)
        except Exception as exc:  # a kubeconfig that does not load: retried with backoff
            self._warn(ref, f"no client: {exc}")
            raise _Unreachable from exc
        if client is None:
            return "skipped"
        loop = asyncio.get_running_loop()
        request = loop.run_in_executor(
            self._threads, self._read_and_patch, CustomObjectsApi(client), item
        )
        self._inflight.add(request)
        request.add_done_callback(_settled)
        request.add_done_callback(self._inflight.discard)
        try:
            return await asyncio.shield(request)  # cancelled, the request still completes
        except ApiException as exc:
            if not exc.status:  # the client's own failure to connect
                self._warn(ref, describe(exc))
                raise _Unreachable from exc
            if exc.status == 409:  # changed since it was read: written from its new version
                log.debug("status of %s: %s; retrying", ref, describe(exc))
                return "conflict"
            if exc.status in _REFUSALS:
                self._warn(ref, describe(exc) + _REFUSALS[exc.status], logging.ERROR)
                return "refused"
            self._warn(ref, describe(exc))
            return "failed"
        except _Gone:
            log.debug("status of %s: the object is gone", ref)
            return "gone"
        except _CONNECTION_ERRORS as exc:  # the API does not answer: its others wait too
            self._warn(ref, describe(exc))
            raise _Unreachable from exc
        except Exception as exc:  # this object's own trouble: a read timeout, a bad answer
            self._warn(ref, describe(exc))
            return "failed"

    def _read_and_patch(self, api: Any, item: DesiredStatus) -> str:
        ref = item.ref
        try:
            if ref.namespace:
                obj = api.get_namespaced_custom_object(
                    ref.group, ref.version, ref.namespace, ref.plural, ref.name,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
            else:  # cluster-scoped (a GatewayClass)
                obj = api.get_cluster_custom_object(
                    ref.group, ref.version, ref.plural, ref.name,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                raise _Gone from exc
            raise
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
        try:
            if ref.namespace:
                api.patch_namespaced_custom_object_status(
                    ref.group, ref.version, ref.namespace, ref.plural, ref.name, body,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
            else:
                api.patch_cluster_custom_object_status(
                    ref.group, ref.version, ref.plural, ref.name, body,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise
            if not self._exists(api, ref):
                raise _Gone from exc  # deleted between the read and the write
            raise ApiException(
                status=405,
                reason="the API serves no status subresource for it (is the CRD's "
                "status subresource enabled?)",
            ) from exc
        log.debug("status of %s written", ref)
        return "written"

    @staticmethod
    def _exists(api: Any, ref: ObjectRef) -> bool:
        try:
            if ref.namespace:
                api.get_namespaced_custom_object(
                    ref.group, ref.version, ref.namespace, ref.plural, ref.name,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
            else:
                api.get_cluster_custom_object(
                    ref.group, ref.version, ref.plural, ref.name,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _warn(self, ref: ObjectRef, problem: str, level: int = logging.WARNING) -> None:
        """Log a failed write at `level` the first time, then quietly until it succeeds."""
        log.log(
            logging.DEBUG if ref in self._failing else level,
            "status of %s not written: %s; retrying",
            ref,
            problem,
        )
        self._failing.add(ref)


class _Gone(Exception):  # noqa: N818 (an outcome: the object is not there)
    """The object to write the status of does not exist (any more)."""


# Failing to connect (not to be answered in time once connected: that is one object's).
_CONNECTION_ERRORS: Final = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.ProtocolError,  # the connection was reset or closed mid-answer
    ConnectionError,
    _Unreachable,
)


def _settled(request: asyncio.Future[str]) -> None:
    """Retrieve what a request raised, also when nobody awaits it any more (a round that
    was cancelled): asyncio would otherwise report it as never retrieved."""
    if not request.cancelled():
        request.exception()


__all__ = [
    "ApiClients",
    "DesiredStatus",
    "Leadership",
    "ObjectRef",
    "StatusWriter",
    "WriteRound",
]
