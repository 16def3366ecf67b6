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
- A leader that cannot renew for `renew_deadline` steps down (and becomes a candidate
  again); `renew_deadline < lease_duration` leaves a margin, so it stops acting as leader
  before any other candidate can consider the Lease expired.

The official client is blocking: each request runs in a thread (`asyncio.to_thread`) with
a request timeout, so a hung API server costs a renewal, not the event loop.
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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

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


class LeaderElection:
    """Runs for leadership of one Lease until cancelled (`run()`).

    `is_leader` and the `leading` event say whether this replica leads now; `term` counts
    the times it became leader, so a consumer can tell "still leading" from "leading again
    after someone else did" (what it wrote in between may have been overwritten).
    `on_change(leading)` is called on the event loop at each change.

    `client()` makes the client of the API that holds the Lease; until it succeeds (the
    cluster may not be in the fleet yet, a kubeconfig may not load), it is retried every
    `retry_period`.
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
    ) -> None:
        self.config = config or LeaseConfig()
        self.identity = identity or default_identity()
        self.leading = asyncio.Event()
        self.term = 0
        self._client = client
        self._api: Any = None  # CoordinationV1Api, once the client is made
        self._on_change = on_change
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._lease: Any = None  # the Lease as last read or written (its resourceVersion)
        self._rng = random.Random()

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        """Acquire, lead while renewals succeed, step down, repeat; until cancelled."""
        try:
            await self._connect()
            while True:
                await self._acquire()
                await self._renew()
        finally:
            if self.is_leader and self.config.release_on_cancel:
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(self._release))
            self._set(False)

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
                self._api = CoordinationV1Api(client)
                return
            if not warned:
                log.warning(
                    "%s: no client for %s: %s; retrying", self.identity, self._where(), problem
                )
                warned = True
            await asyncio.sleep(self.config.retry_period * (1 + self._rng.random() * JITTER))

    async def _acquire(self) -> None:
        while not await asyncio.to_thread(self._try_acquire_or_renew):
            period = self.config.retry_period
            await asyncio.sleep(period * (1 + self._rng.random() * JITTER))
        self.term += 1
        log.info("%s leads %s", self.identity, self._where())
        self._set(True)

    async def _renew(self) -> None:
        last = self._monotonic()
        while True:
            await asyncio.sleep(self.config.retry_period)
            # A renewal still hanging at the deadline counts as failed: leading on past it
            # could overlap with a successor's term.
            remaining = self.config.renew_deadline - (self._monotonic() - last)
            try:
                renewed = await asyncio.wait_for(
                    asyncio.to_thread(self._try_acquire_or_renew), max(remaining, 0.001)
                )
            except TimeoutError:
                renewed = False
            if renewed:
                last = self._monotonic()
                continue
            holder = self._observed.holder if self._observed is not None else ""
            if holder and holder != self.identity:  # taken over: leading on is unsafe
                log.warning("%s lost %s to %s", self.identity, self._where(), holder)
            elif self._monotonic() - last >= self.config.renew_deadline:
                deadline = self.config.renew_deadline
                log.warning(
                    "%s lost %s: not renewed for %.1f s", self.identity, self._where(), deadline
                )
            else:
                continue
            self._set(False)
            return

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

    def _try_acquire_or_renew(self) -> bool:
        try:
            return self._attempt()
        except ApiException as exc:
            if exc.status == 409:
                log.debug("%s: %s was written by another candidate", self.identity, self._where())
            else:
                log.warning("%s: %s: %s", self.identity, self._where(), describe(exc))
        except Exception as exc:  # connection errors of urllib3 and others: retried
            log.warning("%s: %s: %s", self.identity, self._where(), describe(exc))
        return False

    def _attempt(self) -> bool:
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
            self._lease = self._api.create_namespaced_lease(
                config.namespace, body, _request_timeout=timeout
            )
            self._observe(record)
            return True
        old = LeaseRecord.of(lease)
        self._observe(old)
        if old.holder != self.identity and still_held(old, self._observed_at, self._monotonic()):
            return False
        record = claim(old, self.identity, duration, now)
        lease.spec = record.spec()  # same metadata: the update is at the version read
        self._lease = self._api.replace_namespaced_lease(
            config.name, config.namespace, lease, _request_timeout=timeout
        )
        self._observe(record)
        return True

    def _observe(self, record: LeaseRecord) -> None:
        if record != self._observed:
            self._observed, self._observed_at = record, self._monotonic()

    def _release(self) -> None:
        """Hand the Lease over (client-go's release): held by nobody, expiring in 1 s."""
        if self._lease is None or self._observed is None:
            return
        now = self._wall_clock()
        record = replace(
            self._observed, holder="", duration_seconds=1, renew_time=now, acquire_time=now
        )
        lease = self._lease
        lease.spec = record.spec()
        self._api.replace_namespaced_lease(
            self.config.name,
            self.config.namespace,
            lease,
            _request_timeout=self.config.retry_period,
        )


__all__ = [
    "LeaderElection",
    "LeaseConfig",
    "LeaseRecord",
    "claim",
    "default_identity",
    "still_held",
]
