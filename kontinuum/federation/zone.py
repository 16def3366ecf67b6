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

With a copy of the fleet (`kontinuum.federation.fleet_copy`), it also subscribes to
`GlobalToZone` on a second stream of the same channel settings: the fleet-wide objects and
the other sites' exported services, which the zone's own mesh serves to the site's proxies
(`kontinuum.federation_app`), with the site's objects as the zone reads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
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
from kontinuum.federation.objects import (
    GLOBAL_TO_ZONE,
    MAX_MESSAGE_BYTES,
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
from kontinuum.federation.publisher import Publisher
from kontinuum.federation.snapshot_objects import snapshot_bodies
from kontinuum.xds.limits import cut

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
    global_address: str
    credentials: Path  # cert.pem, key.pem, ca.pem (`kontinuum ca issue --out`)
    # Where the site's objects are: a directory of YAML files, its Kubernetes API, or its
    # DNS.
    config: Path | KubernetesAccess | DnsAccess
    server_name: str = ""  # the name the global's certificate is checked against
    poll_interval: float = 0.5
    backoff: tuple[float, float] = (0.5, 30.0)


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
        self.publisher = Publisher()
        self.synced = asyncio.Event()  # the site was read once
        self.copy = copy
        self._on_site = on_site
        self._wake = asyncio.Event()
        self._problems: list[str] = []
        # The open streams of the link to the global, by what they do (see `_dial`).
        self._streams: dict[str, asyncio.Task[None]] = {}
        self.global_check = GlobalCheck()  # that the global is the control plane

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._discover(), name="site files")
            group.create_task(self._dial(self._stream, "publishing to"), name="global")
            if self.copy is not None:
                group.create_task(self._dial(self._subscribe, "subscribing to"), name="fleet")

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
        self._wake.set()

    async def _dial(
        self, stream: Callable[[grpc.aio.Channel, Backoff], Coroutine[Any, Any, None]], what: str
    ) -> None:
        await self.synced.wait()
        backoff = Backoff(*self.options.backoff)
        options = list(_OPTIONS)
        if self.options.server_name:
            options.append(("grpc.ssl_target_name_override", self.options.server_name))
        while True:
            broken = False  # by the link: the other stream redials too
            try:
                # Read anew at each dial: the certificate is renewed in place (cert-manager,
                # `kontinuum ca issue` again) and a new stream presents the new one.
                credentials = await asyncio.to_thread(channel_credentials, self.options.credentials)
                await asyncio.to_thread(
                    self.global_check.verify,
                    self.options.global_address,
                    self.options.credentials,
                    self.options.server_name,
                )
                async with grpc.aio.secure_channel(
                    self.options.global_address, credentials, options=options
                ) as channel:
                    opened = asyncio.create_task(stream(channel, backoff), name=what)
                    self._streams[what] = opened
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
                self._streams.pop(what, None)
                if stream == self._stream:
                    self.publisher.disconnect()
                elif self.copy is not None:
                    self.copy.unsubscribed()
            if broken:
                # Both streams ride one link: a stream that broke (a cut, a reset) means
                # the other, perhaps idle and waiting to read, is likely gone too, though
                # it would notice only at its keepalive, tens of seconds later.
                for other in self._streams.values():
                    other.cancel()
            delay = backoff.next()
            log.log(
                logging.WARNING if backoff.attempts <= 1 else logging.DEBUG,
                "%s the global %s: %s; dialing again in %.1f s",
                what,
                self.options.global_address,
                cut(problem),
                delay,
            )
            await asyncio.sleep(delay)

    async def _stream(self, channel: grpc.aio.Channel, backoff: Backoff) -> None:
        method: Any = channel.stream_stream(
            f"/{SERVICE}/{ZONE_TO_GLOBAL}",
            request_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
        )
        call: Any = method(metadata=((SITE_METADATA, self.options.site),))
        try:
            first = await call.read()
            if first is _EOF:
                return
            if first.type_url != TYPE_URL:
                log.error("global asked for %s, not %s", first.type_url, TYPE_URL)
                return
            self.publisher.connect(dict(first.initial_resource_versions))
            backoff.reset()
            log.info(
                "connected to the global %s: it holds %d object(s) of site %s",
                self.options.global_address,
                len(first.initial_resource_versions),
                self.options.site,
            )
            self._wake.set()
            sender = asyncio.create_task(self._send(call), name="send")
            reader = asyncio.create_task(self._answers(call), name="answers")
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

    async def _subscribe(self, channel: grpc.aio.Channel, backoff: Backoff) -> None:
        """GlobalToZone: subscribe naming what the copy holds, apply and answer each
        response."""
        copy = self.copy
        assert copy is not None
        method: Any = channel.stream_stream(
            f"/{SERVICE}/{GLOBAL_TO_ZONE}",
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )
        call: Any = method(metadata=((SITE_METADATA, self.options.site),))
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
                    log.info(
                        "subscribed to the global %s: %d resource(s) new or changed",
                        self.options.global_address,
                        len(response.resources),
                    )
                await call.write(copy.take(response))
        finally:
            call.cancel()

    async def _send(self, call: Any) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.publisher.unanswered:
                continue  # the answer wakes this again
            response = self.publisher.response()
            if response is not None:
                log.debug(
                    "sending %d object(s), %d removal(s)",
                    len(response.resources),
                    len(response.removed_resources),
                )
                await call.write(response)

    async def _answers(self, call: Any) -> None:
        while True:
            request = await call.read()
            if request is _EOF:
                return
            answer = self.publisher.answer(request)
            if answer is not None and not answer.accepted:
                log.error("the global refused objects: %s", cut(answer.error))
            self._wake.set()
