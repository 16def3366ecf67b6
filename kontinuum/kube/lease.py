"""Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.

Replicas are stateless readers (DESIGN principle 6), but a status condition must have one
writer, or two replicas fight over `lastTransitionTime`. The API server already is a
consistent store, so the leader is whoever holds a Lease there; there is no consensus of
kontinuum's own. The algorithm is client-go's (`tools/leaderelection`), so kontinuum
behaves as every Kubernetes controller an operator already knows:

- A candidate takes the Lease when it is absent, held by nobody, or expired; the leader
  renews it every `retry_period`. Each write is an update at the `resourceVersion` that was
  read: when two candidates race, the API server answers the loser `409 Conflict`.
- Expiry is judged on the candidate's own monotonic clock: a Lease is expired when its
  record has not changed for `lease_duration` since this candidate first saw that record,
  never by comparing `renewTime` with the local wall clock, which may be skewed against the
  leader's. A candidate that starts up therefore waits one full duration before taking a
  Lease that a dead leader left behind.
- A leader that cannot renew steps down (and becomes a candidate again) `renew_deadline`
  after it sent its last successful renewal; `renew_deadline < lease_duration` leaves a
  margin, so it stops acting as leader before any other candidate can consider the Lease
  expired. (client-go measures from the end of a retry period, which can overshoot by up
  to `retry_period`; measuring from the send time cannot.)

The official client is blocking: each request runs in a thread with a request timeout, so
a hung API server costs a renewal, not the event loop. The threads are the election's own
(two of them), so that status writes or file polling filling the event loop's default pool
never delay a renewal past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from kubernetes.client import (  # type: ignore[import-untyped]
    CoordinationV1Api,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from kontinuum.control.objects import dns_label, dns_subdomain
from kontinuum.discovery.kube_watch import describe

log = logging.getLogger("kontinuum.kube.lease")
T = TypeVar("T")

JITTER: Final = 1.2  # client-go's JitterFactor: a retry waits retry_period * [1, 2.2)


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Where the Lease is and its timings (client-go's defaults: 15 s, 10 s, 2 s).

    The Lease stores its duration in whole seconds, so `lease_duration` must be one at least."""

    name: str = "kontinuum-leader"
    namespace: str = "kontinuum-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = False  # True: a leader that stops hands the Lease over at once

    def __post_init__(self) -> None:
        if problem := dns_subdomain(self.name):
            raise ValueError(f"the Lease's name {problem}")
        if problem := dns_label(self.namespace):
            raise ValueError(f"the Lease's namespace {problem}")
        if self.lease_duration < 1 or self.lease_duration != int(self.lease_duration):
            raise ValueError(f"lease_duration must be whole seconds >= 1: {self.lease_duration}")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if not self.renew_deadline > JITTER * self.retry_period:
            raise ValueError(f"renew_deadline must be greater than {JITTER} * retry_period")
        if self.retry_period <= 0:
            raise ValueError("retry_period must be positive")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The election record a Lease's spec holds (client-go's `LeaderElectionRecord`)."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    @classmethod
    def of(cls, lease: Any) -> LeaseRecord:
        spec = lease.spec or V1LeaseSpec()
        return cls(
            holder=spec.holder_identity or "",
            duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            transitions=spec.lease_transitions or 0,
        )

    def spec(self) -> Any:
        return V1LeaseSpec(
            holder_identity=self.holder,
            lease_duration_seconds=self.duration_seconds,
            acquire_time=self.acquire_time,
            renew_time=self.renew_time,
            lease_transitions=self.transitions,
        )


def still_held(record: LeaseRecord, observed_at: float, now: float) -> bool:
    """Whether `record`, unchanged since `observed_at` (this candidate's monotonic clock), is
    still held by its holder at `now`. A record held by nobody is free."""
    return bool(record.holder) and now < observed_at + record.duration_seconds


def claim(old: LeaseRecord | None, identity: str, duration: int, now: datetime) -> LeaseRecord:
    """The record `identity` writes to take or renew the Lease that had `old` (None: absent).

    Renewing keeps the acquire time and transition count; taking it over from another
    holder (or from nobody, after a release) counts one more transition."""
    if old is not None and old.holder == identity:
        return replace(old, duration_seconds=duration, renew_time=now)
    transitions = 0 if old is None else old.transitions + 1
    return LeaseRecord(identity, duration, now, now, transitions)


def default_identity() -> str:
    """Hostname (the pod's name in Kubernetes) plus a random suffix, as client-go's callers
    do: two processes on one host, or a restarted pod, are different candidates."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one try to take or renew the Lease found (made in a thread, taken on the loop)."""

    held: bool  # this candidate holds the Lease now
    record: LeaseRecord | None = None  # as read, or as written when held
    read_at: float = 0.0  # monotonic time the record was read
    problem: str = ""  # why it failed, when it did


class LeaderElection:
    """Runs for leadership of one Lease until cancelled (`run()`).

    `is_leader` and the `leading` event say whether this replica leads now; `term` counts
    the times it became leader, so a consumer can tell "still leading" from "leading again
    after someone else did" (what it wrote in between may have been overwritten).
    `on_change(leading)` is called on the event loop at each change.

    `client()` makes the client of the API that holds the Lease; until it succeeds (the
    cluster may not be in the fleet yet, a kubeconfig may not load), it is retried every
    `retry_period`. `coordination` turns the client into the Lease API (tests pass fakes).

    A leader steps down exactly `renew_deadline` after it *sent* its last successful
    renewal, however the requests in between hang: any other candidate waits at least
    `lease_duration` after it saw that renewal, so two leaders never overlap.
    """

    def __init__(
        self,
        client: Callable[[], Awaitable[Any]],
        config: LeaseConfig | None = None,
        *,
        identity: str = "",
        on_change: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        coordination: Callable[[Any], Any] = CoordinationV1Api,
    ) -> None:
        self.config = config or LeaseConfig()
        self.identity = identity or default_identity()
        self.leading = asyncio.Event()
        self.term = 0
        self._client = client
        self._coordination = coordination
        self._api: Any = None  # the Lease API, once the client is made
        self._on_change = on_change
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._problem = ""  # the last failure logged as a warning, until an attempt succeeds
        self._rng = random.Random()
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="lease")
        self._pending: asyncio.Future[_Attempt] | None = None  # the attempt in its thread

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        """Acquire, lead while renewals succeed, step down, repeat; until cancelled. A
        cancelled leader steps down first and then, with `release_on_cancel`, hands the
        Lease over so that another replica need not wait for it to expire."""
        try:
            await self._connect()
            while True:
                renewed_at = await self._acquire()
                await self._renew(renewed_at)
        finally:
            leading = self.is_leader
            self._set(False)
            # An attempt cut off mid-request may still land: let it, so that the release
            # that follows is not undone by it.
            pending = self._pending
            if pending is not None and not pending.done():
                await asyncio.wait({pending}, timeout=self.config.renew_deadline)
            if leading and self.config.release_on_cancel:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._in_thread(self._release))
            self._threads.shutdown(wait=False)

    def _jittered(self) -> float:
        return self.config.retry_period * (1 + self._rng.random() * JITTER)

    async def _connect(self) -> None:
        warned = False
        while self._api is None:
            try:
                client = await self._client()
            except Exception as exc:  # the loaders raise many kinds; every one is retried
                client, problem = None, f"{type(exc).__name__}: {exc}"
            else:
                problem = "the cluster that holds it is not in the fleet (yet)"
            if client is not None:
                self._api = self._coordination(client)
                return
            if not warned:
                log.warning(
                    "%s: no client for %s: %s; retrying", self.identity, self._where(), problem
                )
                warned = True
            await asyncio.sleep(self._jittered())

    def _in_thread(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._threads, call, *args)

    async def _try(self) -> _Attempt:
        pending = self._pending = self._in_thread(self._attempt, self._observed, self._observed_at)
        attempt = await asyncio.shield(pending)  # cancelled, the attempt still completes
        self._take(attempt)
        return attempt

    async def _acquire(self) -> float:
        """Try until the Lease is this candidate's; the time the winning try was sent. A
        win that took `renew_deadline` or longer to come back is not trusted to lead on:
        the next try renews it first."""
        while True:
            sent = self._monotonic()
            if (await self._try()).held and self._monotonic() - sent < self.config.renew_deadline:
                break
            await asyncio.sleep(self._jittered())
        self.term += 1
        log.info("%s leads %s", self.identity, self._where())
        self._set(True)
        return sent

    async def _renew(self, renewed_at: float) -> None:
        """Renew every `retry_period`; step down at `renew_deadline` after the last renewal
        that succeeded was sent, or as soon as another holds the Lease."""
        config = self.config
        while True:
            deadline = renewed_at + config.renew_deadline
            await asyncio.sleep(max(min(config.retry_period, deadline - self._monotonic()), 0))
            sent = self._monotonic()
            if sent >= deadline:
                log.warning(
                    "%s lost %s: not renewed within %.1f s",
                    self.identity,
                    self._where(),
                    config.renew_deadline,
                )
                break
            try:
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a
                # cancellation that arrives as the attempt ends (CPython gh-86296).
                async with asyncio.timeout(deadline - sent):
                    attempt = await self._try()
            except TimeoutError:  # a renewal still hanging at the deadline has failed
                continue
            if attempt.held:
                renewed_at = sent
                continue
            holder = self._observed.holder if self._observed is not None else ""
            if holder and holder != self.identity:  # taken over: leading on is unsafe
                log.warning("%s lost %s to %s", self.identity, self._where(), holder)
                break
        self._set(False)

    def _take(self, attempt: _Attempt) -> None:
        """Apply what an attempt found, on the event loop (a thread that outlived its
        deadline must not change the election's state under a later attempt)."""
        if attempt.record is not None and attempt.record != self._observed:
            self._observed, self._observed_at = attempt.record, attempt.read_at
        if attempt.held:
            if self._problem:
                log.info("%s: %s can be renewed again", self.identity, self._where())
            self._problem = ""
        elif attempt.problem and attempt.problem != self._problem:
            log.warning("%s: %s: %s", self.identity, self._where(), attempt.problem)
            self._problem = attempt.problem
        elif attempt.problem:
            log.debug("%s: %s: %s", self.identity, self._where(), attempt.problem)

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        if self._on_change is not None:
            self._on_change(leading)

    def _where(self) -> str:
        return f"Lease {self.config.namespace}/{self.config.name}"

    # --- one attempt, in a thread (client-go's tryAcquireOrRenew) ---------------------------

    def _attempt(self, observed: LeaseRecord | None, observed_at: float) -> _Attempt:
        try:
            return self._read_and_claim(observed, observed_at)
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first: not a problem to report
                return _Attempt(False)
            return _Attempt(False, problem=describe(exc))
        except Exception as exc:  # connection errors of urllib3 and others: retried
            return _Attempt(False, problem=describe(exc))

    def _read_and_claim(self, observed: LeaseRecord | None, observed_at: float) -> _Attempt:
        config, timeout = self.config, self.config.renew_deadline
        duration = int(config.lease_duration)
        now = self._wall_clock()
        try:
            lease = self._api.read_namespaced_lease(
                config.name, config.namespace, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            record = claim(None, self.identity, duration, now)
            body = V1Lease(
                metadata=V1ObjectMeta(name=config.name, namespace=config.namespace),
                spec=record.spec(),
            )
            self._api.create_namespaced_lease(config.namespace, body, _request_timeout=timeout)
            return _Attempt(True, record, self._monotonic())
        read_at = self._monotonic()
        old = LeaseRecord.of(lease)
        since = observed_at if old == observed else read_at
        if old.holder != self.identity and still_held(old, since, read_at):
            return _Attempt(False, old, read_at)
        record = claim(old, self.identity, duration, now)
        lease.spec = record.spec()  # same metadata: the update is at the version read
        self._api.replace_namespaced_lease(
            config.name, config.namespace, lease, _request_timeout=timeout
        )
        return _Attempt(True, record, self._monotonic())

    def _release(self) -> None:
        """Hand the Lease over (client-go's release): held by nobody, expiring in 1 s. Read
        first, so that it is released at its latest version, and only if still held."""
        config = self.config
        lease = self._api.read_namespaced_lease(
            config.name, config.namespace, _request_timeout=config.retry_period
        )
        current = LeaseRecord.of(lease)
        if current.holder != self.identity:
            return
        now = self._wall_clock()
        record = replace(current, holder="", duration_seconds=1, renew_time=now, acquire_time=now)
        lease.spec = record.spec()
        self._api.replace_namespaced_lease(
            config.name, config.namespace, lease, _request_timeout=config.retry_period
        )


__all__ = [
    "LeaderElection",
    "LeaseConfig",
    "LeaseRecord",
    "claim",
    "default_identity",
    "still_held",
]
