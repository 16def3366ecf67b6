"""`kontinuum zone`: a site's control plane that dials out to the global one.

It discovers its site locally: a directory of the site's Service, EndpointSlice and
ServiceExport YAML, watched for changes, or the site's Kubernetes API, listed and watched
by the Kubernetes source (`kontinuum.discovery.kubernetes`: the objects of its view, as
`kubectl get -o yaml` prints them, published whenever the view changes; while the API
is out of sync, the last view with the site's state, stale since then), or the site's
DNS, looked up by the DNS source (`kontinuum.discovery.dns`: its snapshot as the standard
objects describing it, `kontinuum.federation.snapshot_objects`; while lookups fail, the
last answers with the site's state, stale since the first failure). It dials the
global's federation address over mutual TLS with its certificate (`kontinuum ca issue --namespace
kontinuum-system --service-account zone-<site> --cluster <site>`), and publishes the
site's objects on the `ZoneToGlobal` stream, sending only what changed
(`kontinuum.federation.publisher`). A response is sent once the previous one was
answered, so a burst of changes goes out as one. Before each dial it checks that the
global is the fleet's control plane (`kontinuum.federation.global_identity`). When the
stream fails, it dials again after a backoff doubling from 0.5 s to 30 s (with jitter),
with its certificate read again (renewed in place, it is the new one that connects); on
reconnect the global says what it holds, and only what differs is sent.

A zone may dial several global replicas (`kontinuum.federation.global_links`): it
publishes its site to each, on a link of its own, and names its own replica id
(`kontinuum-zone-replica`) beside its site, so that several replicas of one zone may
publish at once (the global makes one of them the active publisher). A link that reaches
a global instance another link reaches already (the global's first request names it) is
closed before it publishes, and stays idle while the other is up.

With a copy of the fleet (`kontinuum.federation.fleet_copy`), it also subscribes to
`GlobalToZone` on a second stream of the same channel settings: the fleet-wide objects and
the other sites' exported services, which the zone's own mesh serves to the site's proxies
(`kontinuum.federation_app`), with the site's objects as the zone reads them. It
subscribes on one link at a time, preferring one whose publishing stream is up; when that
subscription ends, it goes on at once on another link that is up, naming what its copy
holds, so that only what differs crosses and the copy is not marked stale meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.control.model import ConfigError, DnsAccess, KubernetesAccess, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.dns import DnsSource
from kontinuum.discovery.kube_watch import Backoff
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.listing import yaml_files
from kontinuum.discovery.static import FileKey, directory_changes, file_key, read_documents
from kontinuum.federation.fleet_copy import FleetCopy
from kontinuum.federation.global_identity import GlobalCheck, GlobalIdentityError
from kontinuum.federation.global_links import (
    RESOLVE_INTERVAL,
    GlobalTarget,
    Link,
    Links,
    default_replica_id,
    global_entries,
    resolve,
)
from kontinuum.federation.objects import (
    GLOBAL_TO_ZONE,
    MAX_MESSAGE_BYTES,
    REPLICA_METADATA,
    SERVICE,
    SITE_METADATA,
    TYPE_URL,
    ZONE_TO_GLOBAL,
    ObjectError,
    SiteObject,
    SiteState,
    site_object,
    stale_site,
)
from kontinuum.federation.snapshot_objects import snapshot_bodies
from kontinuum.xds.limits import cut, shown

log = logging.getLogger("kontinuum.zone")

_EOF: Final = grpc.aio.EOF  # type: ignore[attr-defined]
_OPTIONS: Final[list[tuple[str, Any]]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def _cancelled(task: asyncio.Task[Any] | None) -> bool:
    """Whether `task` itself is being cancelled (not only something it awaited)."""
    return task is not None and task.cancelling() > 0


class CredentialsError(ValueError):
    """A credentials directory that cannot be used; the message says why, on one line."""


@dataclass(frozen=True, slots=True)
class ZoneSettings:
    """Who the zone is, where the global is, and where the site's objects are."""

    site: str
    global_address: str  # one or more HOST:PORT of global replicas, comma-separated
    credentials: Path  # cert.pem, key.pem, ca.pem (`kontinuum ca issue --out`)
    # Where the site's objects are: a directory of YAML files, its Kubernetes API, or its
    # DNS.
    config: Path | KubernetesAccess | DnsAccess
    server_name: str = ""  # the name the global's certificate is checked against
    poll_interval: float = 0.5
    backoff: tuple[float, float] = (0.5, 30.0)
    replica: str = ""  # this replica's id ("": its host name)


def channel_credentials(directory: Path) -> grpc.ChannelCredentials:
    """Mutual TLS with the certificate `kontinuum ca issue` wrote to `directory`."""
    files = {}
    for name in ("cert.pem", "key.pem", "ca.pem"):
        try:
            files[name] = (directory / name).read_bytes()
        except OSError as error:
            raise CredentialsError(
                f"cannot read {directory / name}: {error.strerror or error} (`kontinuum ca "
                "issue --out DIR` writes cert.pem, key.pem and ca.pem)"
            ) from None
    return grpc.ssl_channel_credentials(
        root_certificates=files["ca.pem"],
        private_key=files["key.pem"],
        certificate_chain=files["cert.pem"],
    )


def site_objects(documents: Iterable[Document]) -> tuple[list[SiteObject], list[str]]:
    """The objects of documents (a `kubectl get -o yaml` List counts as its items), and a
    line per one left out. Only Services, EndpointSlices and ServiceExports are published;
    the global checks each fully (and refuses what is invalid)."""
    problems: list[str] = []
    objects: dict[str, SiteObject] = {}
    for document in documents:
        body, where = document.body, f"{document.file}: document {document.index}"
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(f"{where}: not an object")
            continue
        items = body.get("items") if str(body.get("kind", "")).endswith("List") else None
        for item in items if isinstance(items, list) else [body]:
            try:
                obj = site_object(item if isinstance(item, dict) else {})
            except ObjectError as error:
                problems.append(f"{where}: {error}")
                continue
            if obj.name in objects:
                problems.append(f"{where}: {obj.name} is declared twice; the first counts")
                continue
            objects[obj.name] = obj
    return list(objects.values()), problems


_FileRead = tuple[FileKey, list[SiteObject], list[str]]  # its key when read, objects, problems


class SiteFiles:
    """The site's YAML files (in a directory, sorted): only the files that changed since
    the last `read` (by modification time, size and inode) are read and hashed again, so a
    change costs its file, not the site.

    An error stays in its file, as in the fleet files: a file that cannot be read (invalid
    YAML, a read error) or is suddenly empty (a write caught halfway) keeps its last good
    objects in force, whole, and says so; deleting a file is how its objects are removed.
    A directory that cannot be listed keeps every file's last objects."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, _FileRead] = {}

    def read(self) -> tuple[list[SiteObject], list[str]]:
        """Every object of the files, and a line per file or object left out (see
        `site_objects`; an object declared in two files counts in the first)."""
        try:
            paths = yaml_files(self.directory)
        except OSError as error:
            problem = f"{self.directory}: cannot list: {error.strerror or error}; kept as it was"
            return self._merged(self._files, [problem])
        files = {}
        for path in paths:
            key = file_key(path) or (0, 0, 0)  # gone meanwhile: read, which says so
            cached = self._files.get(path)
            if cached is None or cached[0] != key or key == (0, 0, 0):
                cached = self._read(path, key, cached)
            files[path] = cached
        self._files = files
        return self._merged(files, [])

    def _read(self, path: str, key: FileKey, cached: _FileRead | None) -> _FileRead:
        """The file at `path` read anew (its key, objects and problems); `cached`: what it
        held when last read, if it was."""
        errors: list[ConfigError] = []
        name = str(Path(path).relative_to(self.directory))
        objects, problems = site_objects(read_documents(path, name, errors))
        problems = [str(error) for error in errors] + problems
        emptied = key[1] == 0 and cached is not None and bool(cached[1])
        if emptied:
            problems.append(f"{name}: suddenly empty (a write caught halfway?)")
        # A file that cannot be read whole (a YAML error) or was emptied is held; an
        # object of a kind not published is only left out.
        if (errors or emptied) and cached is not None and cached[1]:
            # Its last good objects stay, under this read's key: read again only when the
            # file changes again.
            kept = f"{name}: its last good version ({len(cached[1])} objects) stays"
            objects, problems = cached[1], [*problems, kept]
        return (key, objects, problems)

    def _merged(
        self,
        files: dict[str, _FileRead],
        problems: list[str],
    ) -> tuple[list[SiteObject], list[str]]:
        merged: dict[str, SiteObject] = {}
        for path, (_, objects, found_problems) in files.items():
            problems += found_problems
            for obj in objects:
                if obj.name in merged:
                    where = Path(path).relative_to(self.directory)
                    problems.append(f"{where}: {obj.name} is declared twice; the first counts")
                    continue
                merged[obj.name] = obj
        return list(merged.values()), problems


class Zone:
    """A zone publishing its site to the global until cancelled (see the module doc).
    `on_site`: called with the site's objects whenever they are read, and since when their
    source is out of sync (None: in sync); `copy`: where what the global sends the zone
    goes (None: the zone does not subscribe)."""

    def __init__(
        self,
        options: ZoneSettings,
        on_site: Callable[[list[SiteObject], float | None], None] | None = None,
        copy: FleetCopy | None = None,
    ) -> None:
        self.options = options
        self.replica = options.replica or default_replica_id()
        self.publisher = Links()  # a link per global replica
        self.synced = asyncio.Event()  # the site was read once
        self.copy = copy
        self._on_site = on_site
        self._problems: list[str] = []
        # The open streams, by what they do and the target of their link (see `_dial`).
        self._streams: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._targets: list[GlobalTarget] = []  # the global replicas, as last looked up
        self._looked_up = asyncio.Event()  # the global replicas were looked up once
        self._look_again = asyncio.Event()  # a link broke: look the replicas up again
        self._heard = False  # the current subscription got a response
        self.global_check = GlobalCheck()  # that the global is the control plane

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._discover(), name="site files")
            group.create_task(self._link_all(), name="global")
            if self.copy is not None:
                group.create_task(self._follow_fleet(), name="fleet")

    async def _discover(self) -> None:
        where = self.options.config
        if isinstance(where, KubernetesAccess):
            await self._watch_cluster(where)
            return
        if isinstance(where, DnsAccess):
            await self._look_up_dns(where)
            return
        changes = directory_changes(where, self.options.poll_interval)
        files = SiteFiles(where)
        try:
            while True:
                self._publish(*await asyncio.to_thread(files.read))
                await anext(changes)
        finally:
            await changes.aclose()

    async def _watch_cluster(self, access: KubernetesAccess) -> None:
        source = KubernetesSource(self.options.site, access, backoff=self.options.backoff)
        async for update in source.updates():
            stale_since = None
            if getattr(update, "stale", False):
                stale_since = source.view.out_of_sync_since or time.time()
            self._publish(*site_objects(source.view.documents()), stale_since=stale_since)

    async def _look_up_dns(self, access: DnsAccess) -> None:
        source = DnsSource(self.options.site, access)
        stale_since: float | None = None
        async for update in source.updates():
            if not isinstance(update, SiteSnapshot):
                continue
            if not update.stale:
                stale_since = None
            elif stale_since is None:
                stale_since = time.time()
            objects, problems = [], []
            for body in snapshot_bodies(update):
                try:
                    objects.append(site_object(body))
                except ObjectError as error:  # a name too long for an object, say
                    problems.append(f"{self.options.site}: {error}")
            self._publish(objects, problems, stale_since=stale_since)

    def _publish(
        self, objects: list[SiteObject], problems: list[str], stale_since: float | None = None
    ) -> None:
        """Publish the site's objects; `stale_since`: the source of them is out of sync
        since then (the global is told, with the site's state)."""
        if problems != self._problems:
            for problem in problems:
                log.error("%s", problem)
            self._problems = problems
        state: list[SiteState] = []
        if stale_since is not None:
            state.append(stale_site(self.options.site, stale_since))
        self.publisher.publish([*objects, *state])
        if self._on_site is not None:
            self._on_site(objects, stale_since)
        self.synced.set()

    async def _link_all(self) -> None:
        """Keep a publishing link to each global replica, looked up again whenever a link
        breaks and every `RESOLVE_INTERVAL` seconds."""
        await self.synced.wait()
        entries = global_entries(self.options.global_address)
        links: dict[str, asyncio.Task[None]] = {}
        backoff = Backoff(*self.options.backoff)
        try:
            while True:
                self._look_again.clear()
                found, problems = await asyncio.to_thread(
                    resolve, entries, self.options.server_name
                )
                for problem in problems:
                    log.warning("%s", problem)
                if found or not problems:  # a failed lookup keeps the replicas known
                    self._targets = found
                current = {target.target: target for target in self._targets}
                for gone in [t for t in links if t not in current]:
                    links.pop(gone).cancel()
                    self.publisher.drop(gone)
                for target in current.values():
                    if target.target not in links:
                        links[target.target] = asyncio.create_task(
                            self._publishing(target), name=f"publishing to {target.shown}"
                        )
                self._looked_up.set()
                wait = RESOLVE_INTERVAL if self._targets else backoff.next()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._look_again.wait()
        finally:
            for task in links.values():
                task.cancel()
            await asyncio.gather(*links.values(), return_exceptions=True)

    async def _publishing(self, target: GlobalTarget) -> None:
        """Publish the site to one global replica, dialing again after a backoff."""
        link = self.publisher.link(target.target)
        backoff = Backoff(*self.options.backoff)
        while True:
            try:
                problem = await self._dial(
                    partial(self._stream, link=link), "publishing to", target, backoff
                )
            finally:
                self.publisher.down(link)
            if link.idle:
                # Another link reaches the same global instance: one stream of this replica
                # there, not two replacing each other; go on once that link is down.
                await self.publisher.until_unreached(link)
                link.idle = False
                continue
            delay = backoff.next()
            self._redial_in(delay, backoff, "publishing to", target, problem)
            await asyncio.sleep(delay)

    async def _follow_fleet(self) -> None:
        """Subscribe to the fleet on one link at a time (see the module doc)."""
        copy = self.copy
        assert copy is not None
        await self._looked_up.wait()
        backoff = Backoff(*self.options.backoff)
        index, failures = 0, 0
        while True:
            targets = self._targets
            if not targets:
                copy.unsubscribed()
                await asyncio.sleep(backoff.next())
                continue
            order = targets[index % len(targets) :] + targets[: index % len(targets)]
            up = [t for t in order if self._link_up(t)]
            target = (up or order)[0]
            index = targets.index(target)
            self._heard = False
            problem = await self._dial(self._subscribe, "subscribing to", target, backoff)
            failures = 0 if self._heard else failures + 1
            index += 1
            others = [t for t in self._targets if t != target and self._link_up(t)]
            if self._heard and others:
                # Another replica holds the same fleet: go on there at once, the copy
                # still whole (the next subscription names what it holds).
                log.warning(
                    "subscribing to the global %s: %s; going on with another replica",
                    target.shown,
                    cut(problem),
                )
                continue
            copy.unsubscribed()
            # Another replica not tried since the last one answered: at once.
            untried = len(self._targets) > 1 and failures < len(self._targets)
            delay = 0.0 if untried else backoff.next()
            self._redial_in(delay, backoff, "subscribing to", target, problem)
            await asyncio.sleep(delay)

    def _link_up(self, target: GlobalTarget) -> bool:
        """Whether the site is published to `target` now (its link is up)."""
        return self.publisher.is_up(target.target)

    def _redial_in(
        self, delay: float, backoff: Backoff, what: str, target: GlobalTarget, problem: str
    ) -> None:
        log.log(
            logging.WARNING if backoff.attempts <= 1 else logging.DEBUG,
            "%s the global %s: %s; dialing again in %.1f s",
            what,
            target.shown,
            cut(problem),
            delay,
        )

    async def _dial(
        self,
        stream: Callable[[grpc.aio.Channel, Backoff, GlobalTarget], Coroutine[Any, Any, None]],
        what: str,
        target: GlobalTarget,
        backoff: Backoff,
    ) -> str:
        """Open one stream to a global replica and run it until it ends: why it ended."""
        options = list(_OPTIONS)
        if target.server_name:
            options.append(("grpc.ssl_target_name_override", target.server_name))
        key = (what, target.target)
        broken = False  # by the link: the other stream on it redials too
        try:
            # Read anew at each dial: the certificate is renewed in place (cert-manager,
            # `kontinuum ca issue` again) and a new stream presents the new one.
            credentials = await asyncio.to_thread(channel_credentials, self.options.credentials)
            await asyncio.to_thread(
                self.global_check.verify,
                target.address,
                self.options.credentials,
                target.server_name,
            )
            async with grpc.aio.secure_channel(
                target.target, credentials, options=options
            ) as channel:
                opened = asyncio.create_task(stream(channel, backoff, target), name=what)
                self._streams[key] = opened
                try:
                    await opened
                except asyncio.CancelledError:
                    if _cancelled(asyncio.current_task()):
                        raise
                    problem = "the other stream to the global broke"
                else:
                    problem = "the global ended the stream"
        except grpc.aio.AioRpcError as error:
            problem = f"{error.code().name}: {error.details()}"
            broken = True
        except asyncio.InvalidStateError:  # written to as it ended
            problem = "the stream ended"
            broken = True
        except CredentialsError as error:
            problem = str(error)
        except GlobalIdentityError as error:
            problem = str(error)
            log.error("refused the global: %s", cut(problem))
        except OSError as error:  # the check's own connection
            problem = f"cannot reach it: {error}"
        finally:
            self._streams.pop(key, None)
        if broken:
            # Both streams to a replica ride one link: a stream that broke (a cut, a reset)
            # means the other, perhaps idle and waiting to read, is likely gone too, though
            # it would notice only at its keepalive, tens of seconds later.
            for (_, other_target), other in list(self._streams.items()):
                if other_target == target.target:
                    other.cancel()
            self._look_again.set()
        return problem

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SITE_METADATA, self.options.site), (REPLICA_METADATA, self.replica))

    async def _stream(
        self, channel: grpc.aio.Channel, backoff: Backoff, target: GlobalTarget, *, link: Link
    ) -> None:
        method: Any = channel.stream_stream(
            f"/{SERVICE}/{ZONE_TO_GLOBAL}",
            request_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
        )
        call: Any = method(metadata=self._metadata())
        try:
            first = await call.read()
            if first is _EOF:
                return
            if first.type_url != TYPE_URL:
                log.error("global asked for %s, not %s", first.type_url, TYPE_URL)
                return
            link.instance = first.node.id
            if self.publisher.reached_elsewhere(link, link.instance):
                # Closed before any response: the global attaches a stream at its first.
                link.idle = True
                log.info(
                    "the global %s is instance %s, which another link reaches: idle while "
                    "that link is up",
                    target.shown,
                    shown(link.instance),
                )
                return
            link.publisher.connect(dict(first.initial_resource_versions))
            backoff.reset()
            log.info(
                "connected to the global %s: it holds %d object(s) of site %s",
                target.shown,
                len(first.initial_resource_versions),
                self.options.site,
            )
            link.wake.set()
            sender = asyncio.create_task(self._send(call, link), name="send")
            reader = asyncio.create_task(self._answers(call, link), name="answers")
            try:
                done, _ = await asyncio.wait((sender, reader), return_when="FIRST_COMPLETED")
                for task in done:
                    task.result()  # raises what ended the stream
            finally:
                for task in (sender, reader):
                    task.cancel()
                await asyncio.gather(sender, reader, return_exceptions=True)
        finally:
            call.cancel()

    async def _subscribe(
        self, channel: grpc.aio.Channel, backoff: Backoff, target: GlobalTarget
    ) -> None:
        """GlobalToZone: subscribe naming what the copy holds, apply and answer each
        response."""
        copy = self.copy
        assert copy is not None
        method: Any = channel.stream_stream(
            f"/{SERVICE}/{GLOBAL_TO_ZONE}",
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )
        call: Any = method(metadata=self._metadata())
        try:
            await call.write(copy.subscription())
            first = True
            while True:
                response = await call.read()
                if response is _EOF:
                    return
                if first:
                    first = False
                    backoff.reset()
                    self._heard = True
                    log.info(
                        "subscribed to the global %s (instance %s): %d resource(s) new or changed",
                        target.shown,
                        shown(response.control_plane.identifier),
                        len(response.resources),
                    )
                await call.write(copy.take(response))
        finally:
            call.cancel()

    async def _send(self, call: Any, link: Link) -> None:
        while True:
            await link.wake.wait()
            link.wake.clear()
            if link.publisher.unanswered:
                continue  # the answer wakes this again
            response = link.publisher.response()
            if response is not None:
                log.debug(
                    "sending %d object(s), %d removal(s)",
                    len(response.resources),
                    len(response.removed_resources),
                )
                await call.write(response)

    async def _answers(self, call: Any, link: Link) -> None:
        while True:
            request = await call.read()
            if request is _EOF:
                return
            answer = link.publisher.answer(request)
            if answer is not None and not answer.accepted:
                log.error("the global refused objects: %s", cut(answer.error))
            link.wake.set()
