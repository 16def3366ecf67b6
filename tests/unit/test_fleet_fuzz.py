"""Hostile fleet files against the loader `serve` and `validate` read them with.

Hypothesis writes fleet directories whose files hold the real kinds with fields replaced,
deleted or grown past Kubernetes' limits, random nesting of mappings, lists and scalars,
huge strings, YAML tricks (aliases, recursion, tags), and then damages whole files
(truncated, random bytes, invalid UTF-8). Whatever the files hold, `load_fleet` returns
errors instead of raising, every error names its file on one line, the valid objects next
to the invalid ones (in the same files) still load, binding the routes as `validate` does
raises nothing either, and memory stays proportional to the input.
"""

from __future__ import annotations

import copy
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kontinuum.control.mcs import build_plane
from kontinuum.control.model import Grant
from kontinuum.control.route_binding import bind_routes
from kontinuum.discovery.static import load_fleet
from tests.support.fleet_objects import (
    CLUSTER_OBJECTS,
    EXPORT,
    FLEET_OBJECTS,
    GRANT,
    GRANTED,
    PROFILE,
    SERVICE,
    SLICE,
    WEB,
    WEB_ADDRESS,
)

# Strings that mean something somewhere in the loader, and strings at and past its limits.
TEXTS = (
    "", "None", "web", "Web", "default", "http", "TCP", "HTTP", "IPv4", "IPv6", "FQDN",
    "127.0.0.1", "::1", "0.0.0.0", "fd00::1", "kubernetes.io/service-name",
    "kontinuum.io/tls-mode", "mutual", "a/b/c", "/x", "x/", "example.com/", "Service",
    "EndpointSlice", "v1", "discovery.k8s.io/v1", "10s", "1h1m1s1ms", "*.example.org",
    "a" * 63, "a" * 64, "a" * 253, "a" * 254, "a." * 127, "\u2028", "x\ny", "é", "\x85",
)  # fmt: skip
KEYS = st.one_of(
    st.sampled_from(
        ("name", "namespace", "labels", "annotations", "spec", "ports", "port", "endpoints",
         "addresses", "items", "kind", "apiVersion", "metadata", "rules", "matches")
    ),
    st.text(max_size=8),
    st.integers(-3, 3),
    st.none(),
    st.booleans(),
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(TEXTS),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=6),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
# Lengths at and past the limits the loader enforces (ports, endpoints, addresses, ...).
GROWTH = st.sampled_from((0, 1, 2, 17, 33, 65, 101, 129, 1001, 1500))
HUGE = st.sampled_from((64, 254, 5_000, 300_000))

# Whole-file damage: YAML a loader may choke on, bytes that are not UTF-8.
SNIPPETS = (
    "--- !!python/object/apply:os.system [ls]\n",
    "--- &a [*a, *a]\n",
    "--- &m {kind: Service, apiVersion: v1, metadata: *m, spec: *m}\n",
    "---\n" + "[" * 3000 + "]" * 3000 + "\n",
    "---\n" + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "--- {? [a]: b}\n",
    "--- {a: !!timestamp 2020-99-99}\n",
    "--- {a: !!binary '!!!'}\n",
    "--- {<<: [1, 2]}\n",
    "%YAML 2.0\n--- {a: 1}\n",
    "--- {a: 1, a: 2, kind: Service}\n",
    "--- \"\\ud800\"\n",
    "--- !!set {a, b}\n",
    "---\nx: &x [1, 1, 1, 1, 1, 1, 1, 1]\ny: &y [*x, *x, *x, *x, *x, *x, *x, *x]\n"
    "z: &z [*y, *y, *y, *y, *y, *y, *y, *y]\nkind: EndpointSlice\n"
    "apiVersion: discovery.k8s.io/v1\nmetadata: {name: bomb, labels: *z, annotations: *z}\n"
    "addressType: IPv4\nendpoints: [{addresses: *z}, {addresses: *y}]\nports: *z\n",
)  # fmt: skip
BAD_BYTES = st.one_of(
    st.sampled_from((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\t")),
    st.binary(min_size=1, max_size=6),
)


def _paths(value: object, at: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield at
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*at, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*at, index))


def _parent(doc: Any, path: tuple[object, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def documents(draw: st.DrawFn, templates: tuple[dict[str, Any], ...]) -> object:
    """A template with up to four of its fields replaced, deleted, grown or made huge; or a
    value of random shape; or a `v1 List` of such documents."""
    shape = draw(st.sampled_from(("template", "template", "template", "random", "list")))
    if shape == "random":
        return draw(VALUES)
    if shape == "list":
        items = draw(st.lists(documents(templates), max_size=3))
        return {"apiVersion": "v1", "kind": "List", "items": items}
    doc: Any = copy.deepcopy(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(list(_paths(doc))))
        action = draw(st.sampled_from(("replace", "text", "delete", "grow", "huge", "add")))
        target = _parent(doc, path)[path[-1]] if path else doc
        if action == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(TEXTS) | KEYS)] = draw(st.sampled_from(TEXTS) | VALUES)
        elif not path:
            continue
        elif action == "delete" and isinstance(_parent(doc, path), dict):
            del _parent(doc, path)[path[-1]]
        elif action == "grow":
            element = target[0] if isinstance(target, list) and target else target
            if isinstance(element, str):
                element = element[:64]  # many copies, not many huge strings
            _parent(doc, path)[path[-1]] = [element] * draw(GROWTH)
        elif action == "huge":
            _parent(doc, path)[path[-1]] = draw(st.sampled_from("a.-/")) * draw(HUGE)
        elif action == "text":
            _parent(doc, path)[path[-1]] = draw(st.sampled_from(TEXTS))
        else:
            _parent(doc, path)[path[-1]] = draw(VALUES)
    return doc


_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(docs: list[object]) -> str:
    return yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)


@st.composite
def damaged_files(draw: st.DrawFn, templates: tuple[dict[str, Any], ...]) -> bytes:
    """A file of documents, then damaged as a whole (or random bytes altogether)."""
    data = _dump(draw(st.lists(documents(templates), max_size=3))).encode()
    damage = draw(st.sampled_from(("none", "truncate", "bytes", "snippet", "raw")))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(BAD_BYTES) + data[at:]
    elif damage == "snippet":
        data += draw(st.sampled_from(SNIPPETS)).encode()
    elif damage == "raw":
        data = draw(st.binary(max_size=300))
    return data


def _renamed(body: dict[str, Any], name: str) -> dict[str, Any]:
    renamed = copy.deepcopy(body)
    renamed["metadata"]["name"] = name
    return renamed


# Valid objects after the damaged ones in the same files, under names no template has.
TAIL_GRANT = _renamed(GRANT, "tail")
TAIL_GRANT["spec"]["to"] = [{"group": "", "kind": "Service", "name": "tail-billing"}]
TAIL_SERVICE = _renamed(SERVICE, "tail")
TAIL_SLICE = _renamed(SLICE, "tail-1")
TAIL_SLICE["metadata"]["labels"] = {"kubernetes.io/service-name": "tail"}
TAIL_SLICE["endpoints"] = [{"addresses": ["127.0.0.8"]}]


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, bytes]:
    """The files of a fleet directory: valid objects before and after the damaged ones in
    the same files, and files damaged as a whole."""
    fleet_docs = [GRANT, *draw(st.lists(documents(FLEET_OBJECTS), max_size=4)), TAIL_GRANT]
    cluster_docs = [
        SERVICE,
        SLICE,
        EXPORT,
        *draw(st.lists(documents(CLUSTER_OBJECTS), max_size=5)),
        TAIL_SERVICE,
        TAIL_SLICE,
    ]
    return {
        "00-anchor.yaml": _dump([PROFILE]).encode(),
        "10-fleet.yaml": _dump(fleet_docs).encode(),
        "20-damaged.yaml": draw(damaged_files(FLEET_OBJECTS)),
        "clusters/eu/10-objects.yaml": _dump(cluster_docs).encode(),
        "clusters/eu/20-damaged.yml": draw(damaged_files(CLUSTER_OBJECTS)),
    }


# PyYAML's own objects cost up to about 62 bytes per byte of input (a block list of
# one-character scalars; about 190 for a flow list, "[1,1,1,...]", not generated here) and
# dominate the peak; the loader adds little (past a limit, one error per list and at most
# 101 per object). Twice PyYAML's worst, then: what trips it is a cost that grows faster
# than the input, such as an alias expanded into copies.
BYTES_PER_INPUT_BYTE = 128
BASELINE = 2 << 20


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(fleets())
def test_hostile_fleet_files_are_reported_never_raised(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        tracemalloc.start()
        try:
            fleet, errors = load_fleet(root)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        plane = build_plane(fleet)
        bind_routes(fleet.routing, plane, fleet.grants)

    size = sum(len(data) for data in files.values())
    assert peak <= BASELINE + BYTES_PER_INPUT_BYTE * size, (peak, size)
    for error in errors:
        assert error.file in files, error
        line = str(error)
        assert line.startswith(f"{error.file}: "), line
        assert len(line.splitlines()) == 1, line
    eu = fleet.snapshot("eu")
    assert eu is not None
    assert eu.service("default", "web") == WEB
    assert WEB_ADDRESS in {a for e in eu.endpoints_of("default", "web") for a in e.addresses}
    assert "web" in {e.name for e in eu.exports}
    assert GRANTED in fleet.grants
    assert eu.service("default", "tail") is not None
    assert [e.addresses for e in eu.endpoints_of("default", "tail")] == [("127.0.0.8",)]
    assert Grant("payments", "demo", "tail-billing") in fleet.grants


def test_a_file_libyaml_cannot_read_is_one_error_on_one_line(tmp_path: Path) -> None:
    """PyYAML words some errors on two lines; an error line is still one line."""
    (tmp_path / "00-anchor.yaml").write_text(_dump([PROFILE]))
    (tmp_path / "10-nul.yaml").write_bytes(b"kind: Service\x00\n")
    fleet, errors = load_fleet(tmp_path)
    assert [str(e) for e in errors] == [
        "10-nul.yaml: invalid YAML: unacceptable character #x0000: control characters are not "
        'allowed in "<unicode string>", position 13'
    ]
    assert [site.name for site in fleet.sites] == ["eu"]
