"""The threads of a `KubernetesSource`: one list-then-watch loop per kind, on the official
client's blocking API, reporting to the event loop (`kontinuum.discovery.kube_view`
events).

Each kind is listed in all namespaces, then watched from the list's `resourceVersion` with
bookmarks; a watch that ends (the server's `timeoutSeconds`, a read timeout on a quiet
stream, a dropped connection) is resumed from the last version seen. A watch that expired
(`410 Gone`, as a status or as an `ERROR` event) is replaced by a new list, at once. Any
other failure reports `Failed`, then lists again after an exponential backoff with jitter:
a failed kind is always listed again, so nothing that happened while it was out of sync is
missed. A missing API of an optional kind (its CRD is not installed) is an empty list,
looked at again every `backoff` maximum; so is one kontinuum may not list (403) before
it was ever listed, which also degrades the source's health until it may (a 403 after a
list is a failure: the last view serves).

Answers are read as raw JSON rather than the client's typed models: a typed list fails as a
whole on one object it cannot deserialize (a string where a number belongs), and here one
bad object must cost only itself (`kontinuum.control.fleet` reports it). The JSON is the
object as `kubectl get -o yaml` prints it, which is what the fleet parser reads.

The threads are daemons, each blocked on at most one request at a time; `Watches.stop()`
shuts that request's socket down, so they end promptly when the source stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import kubernetes.config  # type: ignore[import-untyped]
import urllib3
from kubernetes.client import (  # type: ignore[import-untyped]
    ApiClient,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]
from kubernetes.watch.watch import iter_resp_lines  # type: ignore[import-untyped]

from kontinuum.control.model import KubernetesAccess
from kontinuum.discovery.kube_view import (
    KINDS,
    SERVICE,
    Changed,
    Failed,
    Heard,
    Listed,
    WatchedKind,
    WatchEvent,
)

log = logging.getLogger("kontinuum.discovery.kubernetes")

LIST_TIMEOUT: Final = (10.0, 60.0)  # connect, read (seconds)
# A watch's read waits for the next event or bookmark (about one a minute from a real API
# server); when none comes the watch is resumed, and a server that is really gone shows
# on that new request.
WATCH_TIMEOUT: Final = (10.0, 90.0)
WATCH_SECONDS: Final = (240, 360)  # the server ends a watch after this long, spread
QUICK_END: Final = 1.0  # a watch that ends sooner with nothing is resumed after a backoff


class Backoff:
    """Delays between failed attempts: doubling from `initial` up to `maximum`, each drawn at
    random from the upper half of its step (the jitter spreads the retries of many
    watches, e.g. of every cluster after the network came back). Always within
    [initial, maximum]."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.attempts + 1, 64))
        self.attempts += 1
        return self._rng.uniform(max(self.initial, ceiling / 2), ceiling)

    def reset(self) -> None:
        self.attempts = 0


def new_api_client(access: KubernetesAccess, connections: int = len(KINDS) + 1) -> Any:
    """A client of the cluster (blocking: reads files, may run a credential plugin) that
    keeps up to `connections` connections open: one per watched kind, and one more for
    the requests in between.

    Each client has a configuration of its own; the client library's global default
    configuration is never read or changed, so clusters do not leak into each other."""
    configuration = Configuration()
    configuration.retries = False  # failures surface at once; the watchers retry with backoff
    configuration.connection_pool_maxsize = connections
    if access.in_cluster:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        return ApiClient(configuration)
    return kubernetes.config.new_client_from_config(
        config_file=access.kubeconfig or None,
        context=access.context or None,
        persist_config=False,  # kontinuum reads kubeconfig files, it never writes them
        client_configuration=configuration,
    )


def describe(exc: BaseException) -> str:
    """A failed request in a few words, for logs and the source's status."""
    if isinstance(exc, ApiException):
        if not exc.status:
            return f"cannot reach the API server: {exc.reason}"
        message = ""
        try:
            body = json.loads(exc.body) if exc.body else None
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            message = f": {body['message']}"
        return f"the API server answered {exc.status} {exc.reason}{message}"
    if isinstance(exc, WatchError):
        return f"the watch failed: {exc}"
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach the API server: {reason}"
    return f"{type(exc).__name__}: {exc}"


class GoneError(Exception):
    """410 Gone: the watch's resourceVersion is older than the server keeps; list again."""


class WatchError(Exception):
    """The watch stream sent an error other than 410, or something that is not an event."""


class _Stopped(Exception):  # noqa: N818 (not an error: how a thread learns to end)
    """The source stopped: the thread ends."""


def _version(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return version if isinstance(version, str) else ""


class KindWatcher:
    """The list-then-watch loop of one kind, in a thread of its own (see the module doc)."""

    def __init__(
        self,
        source: str,
        kind: WatchedKind,
        api: Any,
        post: Callable[[WatchEvent], None],
        backoff: Backoff,
        stop: threading.Event,
        done: Callable[[], None],
    ) -> None:
        self.source = source  # the source's name, for logs
        self.kind = kind
        self._api = api
        self._post_event = post
        self._backoff = backoff
        self._stop = stop
        self._done = done
        self._lock = threading.Lock()
        self._response: Any = None  # the request in flight, shut down by `interrupt`
        self._listed = False  # listed once: a 403 from then on is a failure, not "none"
        self.thread = threading.Thread(
            target=self._run, name=f"{source} {kind.plural}", daemon=True
        )

    def interrupt(self) -> None:
        """Unblock the request in flight (call after setting the stop event)."""
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed or released by its thread: nothing to unblock
                log.debug("%s: %s: nothing to interrupt", self.source, self.kind)

    def _post(self, event: WatchEvent) -> None:
        if self._stop.is_set():
            raise _Stopped
        self._post_event(event)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _run(self) -> None:
        try:
            self._loop()
        except _Stopped:
            pass
        except Exception:  # a bug: say so, the other kinds carry on (this one stays out of sync)
            log.exception("%s: the watcher of %s failed", self.source, self.kind)
            with contextlib.suppress(_Stopped):
                self._post(Failed(self.kind, "the watcher failed (see the log); not retried"))
        finally:
            with self._lock:
                self._response = None
            self._done()

    def _loop(self) -> None:
        version = ""
        relist = True
        while True:
            try:
                if relist:
                    version = self._list()
                    relist = False
                    self._backoff.reset()
                    if not version:  # nothing to watch (the API is missing): look again later
                        self._sleep(self._backoff.maximum)
                        relist = True
                        continue
                started, since = time.monotonic(), version
                version = self._watch(version)
                if version != since or time.monotonic() - started >= QUICK_END:
                    self._backoff.reset()  # it served: resume at once
                else:  # ended at once with nothing: do not hammer the server
                    self._sleep(self._backoff.next())
            except GoneError as exc:
                log.info(
                    "%s: the watch of %s expired (%s): listing again",
                    self.source,
                    self.kind,
                    exc,
                )
                relist = True
            except (_Stopped, KeyboardInterrupt):
                raise
            except Exception as exc:  # every failure is reported, then retried
                if self._stop.is_set():
                    raise _Stopped from exc
                message = describe(exc)
                delay = self._backoff.next()
                level = logging.WARNING if self._backoff.attempts == 1 else logging.DEBUG
                log.log(
                    level,
                    "%s: %s: %s; retrying in %.1f s",
                    self.source,
                    self.kind,
                    message,
                    delay,
                )
                self._post(Failed(self.kind, message))
                relist = True
                self._sleep(delay)

    def _request(self, **kwargs: Any) -> Any:
        """Send the kind's list (or watch) request; the response is registered for
        `interrupt` before its body is read."""
        if self._stop.is_set():
            raise _Stopped
        kwargs["_preload_content"] = False
        kind = self.kind
        if kind is SERVICE:  # the core group is not at /apis/<group>: its own calls
            response = CoreV1Api(self._api).list_service_for_all_namespaces(**kwargs)
        elif kind.group == "" and kind.plural == "namespaces":
            response = CoreV1Api(self._api).list_namespace(**kwargs)
        else:  # any other group's kind, built in or custom, in all namespaces
            response = CustomObjectsApi(self._api).list_cluster_custom_object(
                kind.group, kind.version, kind.plural, **kwargs
            )
        with self._lock:
            self._response = response
        if self._stop.is_set():
            self._close(response)
            raise _Stopped
        return response

    def _close(self, response: Any) -> None:
        with self._lock:
            self._response = None
        response.close()  # not back to the pool: the rest of the body is unread
        response.release_conn()

    def _list(self) -> str:
        """List the kind, report it, and return the list's resourceVersion ("" when the
        kind's API is not there)."""
        try:
            response = self._request(_request_timeout=LIST_TIMEOUT)
        except ApiException as exc:
            kind = self.kind
            consequence = kind.missing or f"no {kind} are read"
            if exc.status == 404 and kind.optional:
                note = (
                    f"the API server has no {kind.api_version} {kind.plural} (is the "
                    f"{kind.crd} CRD installed?): {consequence}"
                )
                self._post(Listed(self.kind, (), note))
                return ""
            if exc.status == 403 and (kind.optional or kind.spared) and not self._listed:
                # One kind's RBAC must not block the others' first view; once listed, a
                # 403 is a failure like any other (the last view serves, marked stale).
                note = (
                    f"kontinuum may not list {kind.api_version} {kind.plural} ({describe(exc)};"
                    f" see the RBAC in deploy/): {consequence}"
                )
                self._post(Listed(self.kind, (), note, forbidden=True))
                return ""
            raise
        try:
            data = response.data
        finally:
            self._close(response)
        answer = json.loads(data)
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise WatchError(f"the list of {self.kind} is not a Kubernetes list")
        self._post(Listed(self.kind, tuple(items)))
        self._listed = True
        return _version(answer) or "0"

    def _watch(self, version: str) -> str:
        """Watch from `version` until the stream ends; return the last version seen."""
        try:
            response = self._request(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=random.randint(*WATCH_SECONDS),
                _request_timeout=WATCH_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise GoneError(describe(exc)) from exc
            raise
        self._post(Heard(self.kind))
        try:
            for line in iter_resp_lines(response):
                if line:
                    version = self._event(line, version)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Broken after it began (a reset, a quiet stream's read timeout): resume. If the
            # server is gone, the next request says so.
            if self._stop.is_set():
                raise _Stopped from exc
            log.debug("%s: the watch of %s ended: %s", self.source, self.kind, exc)
        finally:
            self._close(response)
        if self._stop.is_set():
            raise _Stopped
        return version

    def _event(self, line: str, version: str) -> str:
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise WatchError(f"not a watch event: {line[:80]!r}") from exc
        obj = event.get("object") if isinstance(event, dict) else None
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise WatchError(f"not a watch event: {line[:80]!r}")
        if kind == "ERROR":
            message = f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}"
            if obj.get("code") == 410:
                raise GoneError(message)
            raise WatchError(message)
        if kind == "BOOKMARK":
            self._post(Heard(self.kind))
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self._post(Changed(self.kind, kind, obj))
        else:
            log.warning("%s: unknown watch event type %r", self.source, kind)
            return version
        return _version(obj) or version


class Watches:
    """The watchers of one cluster's kinds, started and stopped together; `source` is the
    name of the source they work for, for logs."""

    def __init__(
        self,
        source: str,
        api: Any,
        post: Callable[[WatchEvent], None],
        backoff: tuple[float, float],
        kinds: Sequence[WatchedKind] = KINDS,
    ) -> None:
        self._api = api
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running = len(kinds)
        self.watchers = tuple(
            KindWatcher(source, kind, api, post, Backoff(*backoff), self._stop, self._ended)
            for kind in kinds
        )

    def start(self) -> None:
        for watcher in self.watchers:
            watcher.thread.start()

    def stop(self) -> None:
        """Stop every watcher; their threads end promptly, without being waited for."""
        self._stop.set()
        for watcher in self.watchers:
            watcher.interrupt()

    def alive(self) -> bool:
        return any(watcher.thread.is_alive() for watcher in self.watchers)

    def _ended(self) -> None:
        """A watcher's thread ends; the last one closes the client's pooled connections."""
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self._api.rest_client.pool_manager.clear()
            self._api.close()
