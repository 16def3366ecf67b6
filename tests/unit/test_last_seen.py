"""The saved last views of cluster sources: the snapshot codec, the store on disk, and the
keeper that writes only what changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kontinuum.control.model import (
    Endpoint,
    EndpointPort,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.discovery.last_seen import LastSeenViews, SavedView, ViewKeeper
from kontinuum.discovery.snapshot_codec import SnapshotText, decode_snapshot, encode_snapshot
from tests.support.net import eventually

# --- the codec ------------------------------------------------------------------------------

texts = st.text(max_size=12)
protocols = st.sampled_from(["TCP", "UDP", "SCTP"])
app_protocols = st.none() | texts
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
created = st.none() | st.datetimes(timezones=st.none() | st.just(UTC) | offsets)

service_ports = st.builds(
    ServicePort,
    port=st.integers(),
    name=texts,
    protocol=protocols,
    app_protocol=app_protocols,
    target_port=st.integers() | texts,
)
endpoint_ports = st.builds(
    EndpointPort, port=st.integers(), name=texts, protocol=protocols, app_protocol=app_protocols
)
services = st.builds(
    Service,
    cluster=texts,
    namespace=texts,
    name=texts,
    ports=st.lists(service_ports, max_size=3).map(tuple),
    type=st.sampled_from(["ClusterIP", "Headless"]),
    workspace=texts,
)
endpoints = st.builds(
    Endpoint,
    cluster=texts,
    namespace=texts,
    service=texts,
    addresses=st.lists(texts, max_size=3).map(tuple),
    ports=st.lists(endpoint_ports, max_size=3).map(tuple),
    address_type=st.sampled_from(["IPv4", "IPv6"]),
    ready=st.booleans(),
    serving=st.booleans(),
    terminating=st.booleans(),
    zone=texts,
    node_name=texts,
    hostname=texts,
    mutual_tls=st.booleans(),
)
exports = st.builds(ServiceExport, cluster=texts, namespace=texts, name=texts, created=created)
snapshots = st.builds(
    SiteSnapshot,
    cluster=texts,
    services=st.lists(services, max_size=3).map(tuple),
    endpoints=st.lists(endpoints, max_size=4).map(tuple),
    exports=st.lists(exports, max_size=3).map(tuple),
    stale=st.booleans(),
)


@given(snapshots)
def test_a_snapshot_comes_back_from_json_exactly(snapshot: SiteSnapshot) -> None:
    text = json.dumps(encode_snapshot(snapshot))
    back = decode_snapshot(json.loads(text))
    assert back == snapshot
    # equal instants are not enough: the same wall time and UTC offset (or none)
    assert [_wall_and_offset(e.created) for e in back.exports] == [
        _wall_and_offset(e.created) for e in snapshot.exports
    ]


@given(snapshots, snapshots)
def test_a_snapshot_s_text_is_its_json_whatever_its_last_text_carried_over(
    first: SiteSnapshot, second: SiteSnapshot
) -> None:
    # the second carries over some of the first's very parts, among new ones
    mixed = replace(
        second,
        services=(*first.services[:1], *second.services),
        endpoints=(*second.endpoints, *first.endpoints[1:]),
        exports=first.exports,
    )
    text = SnapshotText()
    for snapshot in (first, mixed, second, first):
        assert text(snapshot) == json.dumps(encode_snapshot(snapshot), separators=(",", ":"))


def _wall_and_offset(moment: datetime | None) -> tuple[datetime, timedelta | None] | None:
    return None if moment is None else (moment.replace(tzinfo=None), moment.utcoffset())


WEB = Service("eu", "shop", "web", (ServicePort(80, "http", target_port="http"),))
ENDPOINT = Endpoint("eu", "shop", "web", ("10.1.0.1",), (EndpointPort(8080, "http"),), zone="a")
EXPORT = ServiceExport("eu", "shop", "web", datetime(2024, 5, 1, 12, 0, 1, 5, tzinfo=UTC))
SNAPSHOT = SiteSnapshot("eu", (WEB,), (ENDPOINT,), (EXPORT,))


def test_the_codec_writes_every_field_by_its_model_name() -> None:
    encoded = encode_snapshot(SNAPSHOT)
    assert encoded["exports"] == [
        {
            "cluster": "eu",
            "namespace": "shop",
            "name": "web",
            "created": "2024-05-01T12:00:01.000005+00:00",
        }
    ]
    assert encoded["services"][0]["ports"] == [
        {"port": 80, "name": "http", "protocol": "TCP", "app_protocol": None, "target_port": "http"}
    ]
    assert encoded["endpoints"][0]["addresses"] == ["10.1.0.1"]
    assert decode_snapshot(encoded) == SNAPSHOT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("stale"), "fields"),
        (lambda d: d.update(extra=1), "fields"),
        (lambda d: d.update(stale="yes"), "stale must be bool"),
        (lambda d: d["services"][0]["ports"][0].update(port=True), "port must be int"),
        (lambda d: d["services"][0]["ports"][0].update(port="80"), "port must be int"),
        (lambda d: d["services"][0].update(type="NodePort"), "type must be one of"),
        (lambda d: d["endpoints"][0].update(addresses=[1]), "addresses must be strings"),
        (lambda d: d["endpoints"][0]["ports"][0].update(protocol="tcp"), "protocol must be"),
        (lambda d: d["exports"][0].update(created=5), "created must be a string or null"),
        (lambda d: d["exports"][0].update(created="yesterday"), "isoformat"),
        (lambda d: d.update(services={}), "services must be list"),
        (lambda d: d["endpoints"].append([]), "endpoint: must be an object"),
    ],
)
def test_the_codec_refuses_what_it_did_not_write(change: object, message: str) -> None:
    data = encode_snapshot(SNAPSHOT)
    assert callable(change)
    change(data)
    with pytest.raises(ValueError, match=message):
        decode_snapshot(data)


# --- the store --------------------------------------------------------------------------------


def test_a_saved_view_loads_as_it_was_written_in_a_private_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = LastSeenViews(state)
    view = SavedView("kubernetes:eu", (SNAPSHOT, replace(SNAPSHOT, cluster="us")), 1714564801.25)
    store.save(view)
    assert LastSeenViews(state).load("kubernetes:eu") == view  # a new process reads it
    path = store.path("kubernetes:eu")
    assert path.parent == state / "sources"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert store.load("kubernetes:us") is None  # nothing saved, nothing said

    newer = SavedView("kubernetes:eu", (SNAPSHOT,), 1714564900.0)
    store.save(newer)  # replaces it whole
    assert LastSeenViews(state).load("kubernetes:eu") == newer
    store.delete("kubernetes:eu")
    assert not path.exists()
    assert store.load("kubernetes:eu") is None


# A saved view as written, to damage one field of.
_SAVED = (
    b'{"format":1,"source":"kubernetes:eu","current_at":1.0,"snapshots":[{"cluster":"eu",'
    b'"services":[{"cluster":"eu","namespace":"shop","name":"web","ports":[],'
    b'"type":"ClusterIP","workspace":"shop"}],"endpoints":[],"exports":[],"stale":false}]}'
)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"format": 1, "source": "kubernetes:eu", "current_at": 1.0, "snap', "Unterminated"),
        (b"\xff\xfe", "codec can't decode"),
        (b"[]", "not a JSON object"),
        (b'{"format": 0, "source": "kubernetes:eu", "current_at": 1, "snapshots": []}', "format"),
        (b'{"format": 1, "source": "kubernetes:us", "current_at": 1, "snapshots": []}', "of 'k"),
        (b'{"format": 1, "source": "kubernetes:eu", "current_at": NaN, "snapshots": []}', "fin"),
        (b'{"format": 1, "source": "kubernetes:eu", "current_at": "1", "snapshots": []}', "num"),
        (b'{"format": 1, "source": "kubernetes:eu", "current_at": 1, "snapshots": [{}]}', "fie"),
        (_SAVED.replace(b'"type":"ClusterIP"', b'"type":["ClusterIP"]'), "type must be one of"),
        (b"[" * 100_000 + b"]" * 100_000, "recursion"),
    ],
)
def test_a_file_that_cannot_be_trusted_is_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    store = LastSeenViews(tmp_path)
    store.save(SavedView("kubernetes:eu", (SNAPSHOT,), 1.0))
    store.path("kubernetes:eu").write_bytes(content)
    caplog.clear()
    assert store.load("kubernetes:eu") is None
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("ignoring the saved view of kubernetes:eu in ")
    assert reason in record.getMessage()


def test_a_store_that_cannot_be_written_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the directory should be")
    store = LastSeenViews(blocked)
    for current_at in (1.0, 2.0, 3.0):
        store.save(SavedView("kubernetes:eu", (SNAPSHOT,), current_at))
    (record,) = caplog.records
    assert record.getMessage().startswith("cannot save the last view of kubernetes:eu in ")
    assert store.load("kubernetes:eu") is None


# --- the keeper -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def keeping(store: LastSeenViews, clock: Clock) -> AsyncIterator[ViewKeeper]:
    keeper = ViewKeeper(store, clock)
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_writes(keeper: ViewKeeper, count: int) -> None:
    await eventually(lambda: keeper.writes >= count, timeout=3.0, what=f"{count} write(s)")


async def test_the_keeper_writes_a_view_only_when_it_changes(tmp_path: Path) -> None:
    store, clock = LastSeenViews(tmp_path), Clock()
    async with keeping(store, clock) as keeper:
        keeper.follow("kubernetes:eu", keep_stale_for=3600)
        keeper.saw("kubernetes:dns", SNAPSHOT)  # not followed: never written
        keeper.saw("kubernetes:eu", SNAPSHOT)
        await until_writes(keeper, 1)
        assert store.load("kubernetes:eu") == SavedView("kubernetes:eu", (SNAPSHOT,), 1000.0)

        clock.now = 1010.0
        keeper.saw("kubernetes:eu", SNAPSHOT)  # the same
        keeper.saw("kubernetes:eu", replace(SNAPSHOT))  # equal
        changed = replace(SNAPSHOT, endpoints=(replace(ENDPOINT, addresses=("10.1.0.2",)),))
        keeper.saw("kubernetes:eu", changed)
        await until_writes(keeper, 2)
        await asyncio.sleep(0.05)  # nothing else is on its way
        assert keeper.writes == 2
        assert store.load("kubernetes:eu") == SavedView("kubernetes:eu", (changed,), 1010.0)
        assert store.load("kubernetes:dns") is None


async def test_a_stale_view_saves_when_the_view_was_last_current(tmp_path: Path) -> None:
    store, clock = LastSeenViews(tmp_path), Clock()
    async with keeping(store, clock) as keeper:
        keeper.follow("kubernetes:eu", keep_stale_for=3600)
        keeper.saw("kubernetes:eu", SNAPSHOT)
        await until_writes(keeper, 1)
        clock.now = 1200.0  # in sync all along, then lost
        keeper.saw("kubernetes:eu", replace(SNAPSHOT, stale=True))
        await until_writes(keeper, 2)
        assert store.load("kubernetes:eu") == SavedView("kubernetes:eu", (SNAPSHOT,), 1200.0)

        clock.now = 1500.0  # its endpoints dropped: what is saved stays the view in sync
        keeper.saw("kubernetes:eu", replace(SNAPSHOT, endpoints=(), stale=True))
        await asyncio.sleep(0.05)
        assert keeper.writes == 2

        clock.now = 1600.0  # back, the same view: in sync again now
        keeper.saw("kubernetes:eu", SNAPSHOT)
        await until_writes(keeper, 3)
        assert store.load("kubernetes:eu") == SavedView("kubernetes:eu", (SNAPSHOT,), 1600.0)


async def test_a_view_in_sync_has_its_time_written_again_as_it_ages(tmp_path: Path) -> None:
    store, clock = LastSeenViews(tmp_path), Clock()
    async with keeping(store, clock) as keeper:
        keeper.follow("kubernetes:eu", keep_stale_for=10)  # written again after 1 s
        keeper.saw("kubernetes:eu", SNAPSHOT)
        await until_writes(keeper, 1)
        clock.now = 1000.5  # less than a tenth of keep_stale_for: nothing to write yet
        await asyncio.sleep(1.2)
        assert keeper.writes == 1
        clock.now = 1002.0
        await until_writes(keeper, 2)
        assert store.load("kubernetes:eu") == SavedView("kubernetes:eu", (SNAPSHOT,), 1002.0)


async def test_a_forgotten_source_has_its_view_deleted(tmp_path: Path) -> None:
    store, clock = LastSeenViews(tmp_path), Clock()
    async with keeping(store, clock) as keeper:
        keeper.follow("kubernetes:eu", keep_stale_for=3600)
        keeper.saw("kubernetes:eu", SNAPSHOT)
        await until_writes(keeper, 1)
        assert store.path("kubernetes:eu").exists()
        keeper.forget("kubernetes:eu")
        await until_writes(keeper, 2)
        assert not store.path("kubernetes:eu").exists()
