"""Cross-cluster routing end to end: fleet YAML in, a real Envoy sidecar, real HTTP backends.

Each test writes a fleet directory (ClusterProfiles, each site's Services, EndpointSlices and
ServiceExports, and fleet-wide HTTPRoutes / LocalityPolicies), serves it the way
`kontinuum serve --config` does (StaticSource -> Aggregator -> Mesh -> XdsServer), starts a
sidecar in `eu-central` and sends HTTP requests through its outbound listener with a
`Host:` header. What is asserted is what a client or a backend sees.

A `Service` backendRef means that Service in the proxy's own cluster (eu-central); the
cluster-set host `<svc>.demo.svc.clusterset.local` spreads over every exporting site.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.routing_state import failing_conditions
from tests.e2e.backends import Backend, Reply, request
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.routing_fleet import NAMESPACE, Workload, write_fleet
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

HELLO = "hello.demo.svc.clusterset.local"
REPO = Path(__file__).resolve().parents[2]


# --- serving a fleet, backends, a sidecar ------------------------------------------------------


class StartBackend:
    """`servers(name, flaky_every=..., delay=..., echo=...)` starts a `Backend`."""

    def __init__(self) -> None:
        self.started: list[Backend] = []

    def __call__(
        self,
        name: str,
        *,
        flaky_every: int = 0,
        delay: float = 0.0,
        echo: Iterable[str] | None = None,
    ) -> Backend:
        backend = Backend(name, flaky_every=flaky_every, delay=delay, echo=echo)
        self.started.append(backend)
        return backend.start()


@pytest.fixture
def servers() -> Iterator[StartBackend]:
    """HTTP backends on loopback with the routing tests' options; all stopped at the end."""
    start = StartBackend()
    yield start
    for backend in start.started:
        backend.stop()


@contextlib.contextmanager
def backend_process(name: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A backend in its own process (so a test can kill it): (process, port)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.backends", "--name", name],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        line = process.stdout.readline().decode() if ready else ""
        assert line.strip(), f"backend process {name} did not start (exit {process.poll()})"
        yield process, int(line.strip().rpartition(":")[2])
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


async def start_sidecar(
    envoys: StartEnvoy, xds_port: int, namespace: str = NAMESPACE
) -> tuple[Envoy, int]:
    """A sidecar of `namespace` (demo) in eu-central, LIVE; (envoy, outbound port)."""
    outbound = free_port()
    envoy = envoys(
        view="eu-central",
        xds_port=xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace=namespace, role="sidecar", outbound_port=outbound),
    )
    await asyncio.to_thread(envoy.wait_live, 15)
    return envoy, outbound


# --- clients ---------------------------------------------------------------------------------


async def until(
    port: int,
    host: str,
    check: Callable[[Reply], bool],
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    seconds: float = 15.0,
) -> Reply:
    """Repeat one request until its reply passes `check` (bounded in time and count)."""
    deadline = time.monotonic() + seconds
    last = Reply(0, "no request sent")
    for _ in range(int(seconds / 0.05) + 1):
        last = await asyncio.to_thread(request, port, host, path, headers, 2.0)
        if check(last) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert check(last), f"{host}{path} never as expected; last reply {last}"
    return last


def _answered_by(name: str) -> Callable[[Reply], bool]:
    return lambda reply: reply.backend == name


async def burst(
    port: int,
    host: str,
    paths: list[str],
    headers: Mapping[str, str] | None = None,
    workers: int = 8,
) -> list[Reply]:
    """One GET per path, `workers` at a time; the replies in order."""

    def run() -> list[Reply]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda path: request(port, host, path, headers), paths))

    return await asyncio.to_thread(run)


def shares(replies: list[Reply]) -> dict[str | None, float]:
    """The fraction of replies each backend gave (None: not a 200 from a backend)."""
    counts = Counter(reply.backend for reply in replies)
    return {name: count / len(replies) for name, count in counts.items()}


def http_route(name: str, parent: str, rules: str) -> str:
    """An HTTPRoute of namespace demo attached (GAMMA) to Service `parent`, port 80."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NAMESPACE}, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {parent}, port: 80}}]
  rules:
{rules}"""


def locality_policy(name: str, service: str, spec: str) -> str:
    return f"""apiVersion: policy.kontinuum.io/v1alpha1
kind: LocalityPolicy
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {service}}}]
{spec}"""


# --- 1. weighted splits ----------------------------------------------------------------------


async def test_weighted_splits_hold_their_shares(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    """A LocalityPolicy's 90/10 across two sites and an HTTPRoute's 75/25 across two
    Services each hold within 4 points over 2000 requests."""
    eu, paris, us, v2 = (servers(n) for n in ("eu-central", "edge-paris", "us-east", "hello-v2"))
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("hello", (eu.port,)),
                Workload("hello-v2", (v2.port,), exported=False),
                Workload("hello-split", (), exported=False),
            ],
            "edge-paris": [Workload("hello", (paris.port,))],
            "us-east": [Workload("hello", (us.port,))],
        },
        [
            locality_policy(
                "hello-weights",
                "hello",
                "  weights:\n"
                "  - {cluster: eu-central, weight: 90}\n"
                "  - {cluster: edge-paris, weight: 10}\n",
            ),
            http_route(
                "hello-split",
                "hello-split",
                "  - backendRefs:\n"
                "    - {name: hello, port: 80, weight: 75}\n"
                "    - {name: hello-v2, port: 80, weight: 25}\n",
            ),
        ],
    )
    served = await serve_fleet(root)
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, HELLO, _answered_by("edge-paris"))  # both localities are in
    await until(outbound, "hello-split.demo", _answered_by("hello-v2"))

    by_site = shares(await burst(outbound, HELLO, ["/"] * 2000))
    assert by_site.get("eu-central", 0) == pytest.approx(0.90, abs=0.04), by_site
    assert by_site.get("edge-paris", 0) == pytest.approx(0.10, abs=0.04), by_site
    assert set(by_site) == {"eu-central", "edge-paris"}, by_site  # us-east: unnamed, never

    by_service = shares(await burst(outbound, "hello-split.demo", ["/"] * 2000))
    assert by_service.get("eu-central", 0) == pytest.approx(0.75, abs=0.04), by_service
    assert by_service.get("hello-v2", 0) == pytest.approx(0.25, abs=0.04), by_service
    assert set(by_service) == {"eu-central", "hello-v2"}, by_service
    print(f"LocalityPolicy 90/10: {by_site}; HTTPRoute 75/25: {by_service}")


def documented(name: str) -> str:
    """The YAML example of docs/routing.md that defines the object `name`, as written."""
    text = (REPO / "docs" / "routing.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    found = [block for block in blocks if f"{{name: {name}," in block]
    assert len(found) == 1, f"docs/routing.md has {len(found)} examples of {name}"
    return found[0]


async def test_the_documented_split_leaves_every_other_path_of_the_service_working(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    """docs/routing.md's `hello-split`, copied as written: `/split` is split, and the
    service's other paths still reach it (a route takes the service over: without a rule
    for them they would get 404)."""
    eu, us = servers("eu-central"), servers("us-east")
    root = write_fleet(
        tmp_path / "fleet",
        {"eu-central": [Workload("hello", (eu.port,))], "us-east": [Workload("hello", (us.port,))]},
        [documented("hello-split")],
    )
    served = await serve_fleet(root)
    (status,) = [s for s in served.mesh.routing_state.statuses if s.name == "hello-split"]
    assert not failing_conditions(status), status  # accepted, every backend resolved
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, HELLO, lambda reply: reply.status == 200, path="/split")
    for path in ("/", "/other", "/split/x", "/splitting"):
        reply = await asyncio.to_thread(request, outbound, HELLO, path)
        assert reply.status == 200, (path, reply)
        assert reply.backend in {"eu-central", "us-east"}, (path, reply)


# --- 2. matches ------------------------------------------------------------------------------


async def test_header_and_path_matches_pick_the_backend(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    api, exact, canary = servers("api"), servers("exact"), servers("canary")
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("shop", (), exported=False),
                Workload("shop-api", (api.port,), exported=False),
                Workload("shop-exact", (exact.port,), exported=False),
                Workload("shop-canary", (canary.port,), exported=False),
            ]
        },
        [
            http_route(
                "shop",
                "shop",
                "  - matches: [{path: {type: PathPrefix, value: /api}}]\n"
                "    backendRefs: [{name: shop-api, port: 80}]\n"
                "  - matches: [{path: {type: Exact, value: /exact}}]\n"
                "    backendRefs: [{name: shop-exact, port: 80}]\n"
                '  - matches: [{headers: [{name: X-Canary, value: "true"}]}]\n'
                "    backendRefs: [{name: shop-canary, port: 80}]\n",
            )
        ],
    )
    served = await serve_fleet(root)
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "shop.demo", _answered_by("api"), path="/api")

    canary_header = {"X-Canary": "true"}
    cases: list[tuple[str, dict[str, str], int, str | None]] = [
        ("/api", {}, 200, "api"),
        ("/api/items/7", {}, 200, "api"),
        ("/apiary", {}, 404, None),  # a prefix matches whole path segments
        ("/exact", {}, 200, "exact"),
        ("/exact/more", {}, 404, None),
        ("/", canary_header, 200, "canary"),
        ("/anything", canary_header, 200, "canary"),
        ("/anything", {"X-Canary": "false"}, 404, None),
        ("/api/x", canary_header, 200, "api"),  # the longer path match wins
        ("/exact", canary_header, 200, "exact"),  # an exact path before a header
        ("/other", {}, 404, None),  # no rule matches: no catch-all is added
    ]
    for path, headers, status, backend in cases:
        reply = await asyncio.to_thread(request, outbound, "shop.demo", path, headers)
        assert (reply.status, reply.backend) == (status, backend), (path, headers, reply)


# --- 3. retries ------------------------------------------------------------------------------


async def test_a_retry_turns_a_flaky_backends_503_into_success(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    flaky = servers("flaky", flaky_every=2)  # the 2nd, 4th, ... request gets 503
    root = write_fleet(
        tmp_path / "fleet",
        {"eu-central": [Workload("flaky", (flaky.port,), exported=False)]},
        [
            http_route(
                "flaky",
                "flaky",
                "  - matches: [{path: {type: PathPrefix, value: /retried}}]\n"
                "    backendRefs: [{name: flaky, port: 80}]\n"
                "    retry: {attempts: 2, codes: [503], backoff: 10ms}\n"
                "  - matches: [{path: {type: PathPrefix, value: /plain}}]\n"
                "    backendRefs: [{name: flaky, port: 80}]\n",
            )
        ],
    )
    served = await serve_fleet(root)
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "flaky.demo", _answered_by("flaky"), path="/plain")

    # One at a time, so that the backend's every-other-request 503 is deterministic.
    plain = [await asyncio.to_thread(request, outbound, "flaky.demo", "/plain") for _ in range(100)]
    plain_failed = [r.status for r in plain if r.status != 200]
    assert plain_failed, "the backend is not flaky: nothing to retry"
    assert set(plain_failed) == {503}, plain_failed

    before = flaky.requests
    retried = [
        await asyncio.to_thread(request, outbound, "flaky.demo", "/retried") for _ in range(100)
    ]
    failed = [r for r in retried if r.status != 200 or r.backend != "flaky"]
    assert failed == [], failed[:3]
    attempts = flaky.requests - before
    assert attempts > 100, attempts  # the backend did answer 503s, which were retried
    print(f"without retry: {len(plain_failed)}/100 failed; with retry: 0/100, {attempts} attempts")


# --- 4. timeouts -----------------------------------------------------------------------------


async def test_a_slow_backend_hits_the_request_timeout(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    slow, fast = servers("slow", delay=2.0), servers("fast")
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("api", (), exported=False),
                Workload("slow", (slow.port,), exported=False),
                Workload("fast", (fast.port,), exported=False),
            ]
        },
        [
            http_route(
                "api",
                "api",
                "  - matches: [{path: {type: PathPrefix, value: /slow}}]\n"
                "    backendRefs: [{name: slow, port: 80}]\n"
                "    timeouts: {request: 500ms}\n"
                "  - matches: [{path: {type: PathPrefix, value: /fast}}]\n"
                "    backendRefs: [{name: fast, port: 80}]\n"
                "    timeouts: {request: 500ms}\n",
            )
        ],
    )
    served = await serve_fleet(root)
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "api.demo", _answered_by("fast"), path="/fast")

    # Two slow requests only: three timeouts in a row would eject the slow endpoint.
    slow_replies = await burst(outbound, "api.demo", ["/slow/1", "/slow/2"], workers=2)
    fast_replies = await burst(outbound, "api.demo", ["/fast"] * 20, workers=4)
    for reply in slow_replies:
        assert reply.status == 504, reply
        assert 0.4 <= reply.seconds < 1.5, reply  # the 500 ms timeout, not the 2 s backend
    assert len(slow.received()) == 2  # the requests did reach the slow backend
    assert [r.backend for r in fast_replies] == ["fast"] * 20, fast_replies[:3]
    timings = [round(r.seconds, 3) for r in slow_replies]
    print(f"slow: {[r.status for r in slow_replies]} after {timings} s; fast: 20 x 200")


# --- 5. mirrors ------------------------------------------------------------------------------


async def test_mirrored_traffic_arrives_at_the_mirror(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    main, shadow = servers("main"), servers("shadow")
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("shop", (), exported=False),
                Workload("shop-main", (main.port,), exported=False),
                Workload("shadow", (shadow.port,), exported=False),
            ]
        },
        [
            http_route(
                "shop",
                "shop",
                "  - filters:\n"
                "    - type: RequestMirror\n"
                "      requestMirror: {backendRef: {name: shadow, port: 80}}\n"
                "    backendRefs: [{name: shop-main, port: 80}]\n",
            )
        ],
    )
    served = await serve_fleet(root)
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "shop.demo", _answered_by("main"))

    sent = [f"/mirror/{i}" for i in range(300)]
    replies = await burst(outbound, "shop.demo", sent)
    assert [r.backend for r in replies] == ["main"] * len(sent), replies[:3]

    def mirrored() -> list[str]:
        return [r.path for r in shadow.received() if r.path.startswith("/mirror/")]

    deadline = time.monotonic() + 5
    for _ in range(100):  # mirrors are sent asynchronously: wait for them, 5 s at most
        if len(mirrored()) >= len(sent) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    copies = mirrored()
    assert sorted(copies) == sorted(sent), f"{len(copies)} of {len(sent)} copies arrived"
    hosts = {r.headers.get("host") for r in shadow.received() if r.path.startswith("/mirror/")}
    assert hosts == {"shop.demo-shadow"}, hosts  # Envoy marks a mirrored request's host
    main_paths = [r.path for r in main.received() if r.path.startswith("/mirror/")]
    assert sorted(main_paths) == sorted(sent)
    print(f"mirror: {len(copies)}/{len(sent)} copies, client saw main {len(replies)} times")


# --- 6. failover -----------------------------------------------------------------------------


def _timeline(port: int, host: str, seconds: float, limit: int) -> list[tuple[float, Reply]]:
    """Sequential GETs for `seconds` (at most `limit`): (time since start, reply)."""
    start = time.monotonic()
    found: list[tuple[float, Reply]] = []
    for _ in range(limit):
        now = time.monotonic() - start
        if now > seconds:
            break
        found.append((now, request(port, host, timeout=2.0)))
        time.sleep(0.002)
    return found


async def test_failover_follows_the_declared_order(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    """us-east first, then edge-paris, and the sidecar's own eu-central (unnamed) last."""
    eu, paris = servers("eu-central"), servers("edge-paris")
    with backend_process("us-east") as (us_east, us_port):
        root = write_fleet(
            tmp_path / "fleet",
            {
                "eu-central": [Workload("hello", (eu.port,))],
                "edge-paris": [Workload("hello", (paris.port,))],
                "us-east": [Workload("hello", (us_port,))],
            },
            [
                locality_policy(
                    "hello-failover",
                    "hello",
                    "  failover:\n  - clusters: [us-east]\n  - clusters: [edge-paris]\n",
                )
            ],
        )
        served = await serve_fleet(root)
        envoy, outbound = await start_sidecar(envoys, served.xds_port)
        await until(outbound, HELLO, _answered_by("us-east"))
        first = await burst(outbound, HELLO, ["/"] * 50, workers=4)
        assert {r.backend for r in first} == {"us-east"}, shares(first)

        us_east.send_signal(signal.SIGKILL)
        us_east.wait(5)
        # Outlier detection ejects the dead endpoint after 3 failures (for 15 s): follow
        # the switch to edge-paris and then 3 s of traffic, well inside the ejection.
        timeline = await asyncio.to_thread(_timeline, outbound, HELLO, 3.5, 2000)
        switch = next((i for i, (_, r) in enumerate(timeline) if r.backend == "edge-paris"), None)
        assert switch is not None, [r for _, r in timeline[:5]]
        during = [r for _, r in timeline[:switch] if r.status != 200]
        # Not even the request that met the dead endpoint first: its retries move on to
        # the next priority while outlier detection ejects the dead one.
        assert during == [], during
        after = [r for _, r in timeline[switch:]]
        window = timeline[-1][0] - timeline[switch][0]
        assert window >= 2.0, window
        assert [r for r in after if r.backend != "edge-paris"] == [], Counter(
            (r.status, r.backend) for r in after
        )
        assert all(r.backend != "eu-central" for _, r in timeline)
        ejected = await asyncio.to_thread(
            envoy.stat,
            f"cluster.outbound|80||{HELLO}.outlier_detection.ejections_active",
        )
        assert ejected == 1, ejected
        print(
            f"failover: {[(r.status, r.body[:60]) for r in during]} before the switch "
            f"({timeline[switch][0]:.3f} s after the kill), then {len(after)} requests "
            f"in {window:.1f} s all answered by edge-paris"
        )

    paris.stop()  # the last named step fails too: the sidecar's own cluster comes last
    await until(outbound, HELLO, _answered_by("eu-central"))
    # Once outlier detection has ejected edge-paris too (after 3 failed attempts on it),
    # every request goes to eu-central at once; until then an attempt may still meet it.
    ejected = f"cluster.outbound|80||{HELLO}.outlier_detection.ejections_active"
    for _ in range(100):  # bounded: 100 requests, a few seconds
        if await asyncio.to_thread(envoy.stat, ejected) == 2:
            break
        await asyncio.to_thread(request, outbound, HELLO, "/", None, 2.0)
    assert await asyncio.to_thread(envoy.stat, ejected) == 2
    last = await burst(outbound, HELLO, ["/"] * 50, workers=4)
    assert {r.backend for r in last} == {"eu-central"}, shares(last)


# --- 7. a missing backend --------------------------------------------------------------------


async def test_a_route_to_a_missing_backend_answers_500_and_reports_it(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    main, other = servers("main"), servers("other")
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("shop", (), exported=False),
                Workload("shop-main", (main.port,), exported=False),
                Workload("other", (other.port,)),
            ]
        },
        [
            http_route(
                "shop",
                "shop",
                "  - matches: [{path: {type: PathPrefix, value: /gone}}]\n"
                "    backendRefs: [{name: shop-gone, port: 80}]\n"
                "  - matches: [{path: {type: PathPrefix, value: /half}}]\n"
                "    backendRefs:\n"
                "    - {name: shop-main, port: 80, weight: 1}\n"
                "    - {name: shop-gone, port: 80, weight: 1}\n"
                "  - backendRefs: [{name: shop-main, port: 80}]\n",
            )
        ],
    )
    served = await serve_fleet(root)
    statuses = [s for s in served.mesh.routing_state.statuses if s.name == "shop"]
    assert len(statuses) == 1, served.mesh.routing_state.statuses
    failing = failing_conditions(statuses[0])
    assert failing, statuses[0]
    assert {(c.type, c.status, c.reason) for _, c in failing} == {
        ("ResolvedRefs", "False", "BackendNotFound")
    }, failing
    assert "shop-gone" in failing[0][1].message, failing
    accepted = [c for p in statuses[0].parents for c in p.conditions if c.type == "Accepted"]
    assert [c.status for c in accepted] == ["True"], accepted  # the route still serves

    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "shop.demo", _answered_by("main"))

    gone = await burst(outbound, "shop.demo", ["/gone"] * 20, workers=4)
    assert [r.status for r in gone] == [500] * 20, gone[:3]
    half = await burst(outbound, "shop.demo", ["/half"] * 400)
    codes = Counter(r.status for r in half)
    assert set(codes) == {200, 500}, codes
    assert codes[500] / len(half) == pytest.approx(0.5, abs=0.1), codes
    assert {r.backend for r in half if r.status == 200} == {"main"}
    rest = await burst(outbound, "shop.demo", ["/", "/x"] * 10, workers=4)
    assert [r.backend for r in rest] == ["main"] * 20, rest[:3]
    others = await burst(outbound, "other.demo.svc.clusterset.local", ["/"] * 20, workers=4)
    assert [r.backend for r in others] == ["other"] * 20, others[:3]
    print(f"missing backend: /gone 20 x 500; /half {dict(codes)}; others 200")


# --- 8. header modifiers and rewrites --------------------------------------------------------


async def test_header_modifiers_and_url_rewrites_reach_the_backend(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    echo = servers("echo", echo=("host", "x-env", "x-trace", "x-debug"))
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("shop", (), exported=False),
                Workload("shop-echo", (echo.port,), exported=False),
            ]
        },
        [
            http_route(
                "shop",
                "shop",
                "  - matches: [{path: {type: PathPrefix, value: /api}}]\n"
                "    filters:\n"
                "    - type: URLRewrite\n"
                "      urlRewrite:\n"
                "        hostname: shop.internal\n"
                "        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}\n"
                "    - type: RequestHeaderModifier\n"
                "      requestHeaderModifier:\n"
                "        set: [{name: X-Env, value: prod}]\n"
                '        add: [{name: X-Trace, value: "1"}]\n'
                "        remove: [X-Debug]\n"
                "    - type: ResponseHeaderModifier\n"
                "      responseHeaderModifier:\n"
                "        set: [{name: Cache-Control, value: no-store}]\n"
                "        add: [{name: X-Served-By, value: kontinuum}]\n"
                "    backendRefs: [{name: shop-echo, port: 80}]\n"
                "  - matches: [{path: {type: PathPrefix, value: /strip}}]\n"
                "    filters:\n"
                "    - type: URLRewrite\n"
                "      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}\n"
                "    backendRefs: [{name: shop-echo, port: 80}]\n"
                "  - matches: [{path: {type: Exact, value: /health}}]\n"
                "    filters:\n"
                "    - type: URLRewrite\n"
                "      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /healthz}}\n"
                "    backendRefs: [{name: shop-echo, port: 80}]\n",
            )
        ],
    )
    served = await serve_fleet(root)
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "shop.demo", _answered_by("echo"), path="/api")

    sent = {"X-Env": "dev", "X-Debug": "yes", "X-Trace": "0"}
    reply = await asyncio.to_thread(request, outbound, "shop.demo", "/api/items?q=1", sent)
    assert reply.backend == "echo", reply
    assert reply.echoed() == {
        "path": "/v1/items?q=1",
        "header host": "shop.internal",
        "header x-env": "prod",  # set: overwritten
        "header x-trace": "0, 1",  # add: appended
    }, reply.body  # and X-Debug removed
    assert reply.headers.get("cache-control") == "no-store", reply.headers
    assert reply.headers.get("x-served-by") == "kontinuum", reply.headers
    assert reply.headers.get("x-backend") == "echo", reply.headers

    expected_paths = {
        "/api": "/v1",
        "/api/": "/v1/",
        "/api/a/b": "/v1/a/b",
        "/api?q=2": "/v1?q=2",
        "/strip/three": "/three",
        "/strip": "/",
        "/strip/": "/",
        "/health": "/healthz",
    }
    for path, rewritten in expected_paths.items():
        reply = await asyncio.to_thread(request, outbound, "shop.demo", path)
        assert reply.echoed().get("path") == rewritten, (path, reply)
    plain = await asyncio.to_thread(request, outbound, "shop.demo", "/health")
    assert "cache-control" not in plain.headers, plain.headers  # only the /api rule's filter
    assert (await asyncio.to_thread(request, outbound, "shop.demo", "/apiary")).status == 404
    received = echo.received()[-1]
    assert received.path == "/healthz", received


async def test_each_weighted_backend_gets_its_own_backend_ref_header_modifiers(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    """The Gateway API's per-backend RequestHeaderModifier / ResponseHeaderModifier
    (HTTPRouteRequestHeaderModifierBackendWeights): of a 50/50 split, every request that
    reaches v1 carries v1's header and none of v2's, and the reply carries v1's response
    header; the same for v2. The rule's own filter applies to both."""
    echoed = ("backend", "x-env", "x-trace")
    v1, v2 = servers("v1", echo=echoed), servers("v2", echo=echoed)

    def backend_ref(name: str) -> str:
        return (
            f"    - name: shop-{name}\n"
            "      port: 80\n"
            "      filters:\n"
            "      - type: RequestHeaderModifier\n"
            "        requestHeaderModifier:\n"
            f"          set: [{{name: Backend, value: {name}}}, {{name: X-Env, value: {name}}}]\n"
            f"          add: [{{name: X-Trace, value: {name}}}]\n"
            "      - type: ResponseHeaderModifier\n"
            f"        responseHeaderModifier: {{set: [{{name: X-Picked, value: {name}}}]}}\n"
        )

    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("shop", (), exported=False),
                Workload("shop-v1", (v1.port,), exported=False),
                Workload("shop-v2", (v2.port,), exported=False),
            ]
        },
        [
            http_route(
                "shop",
                "shop",
                "  - filters:\n"
                "    - type: RequestHeaderModifier\n"
                "      requestHeaderModifier: {set: [{name: X-Env, value: prod}]}\n"
                "    backendRefs:\n" + backend_ref("v1") + backend_ref("v2"),
            )
        ],
    )
    served = await serve_fleet(root)
    (status,) = [s for s in served.mesh.routing_state.statuses if s.name == "shop"]
    assert not failing_conditions(status), status  # accepted, every backend resolved
    _, outbound = await start_sidecar(envoys, served.xds_port)
    await until(outbound, "shop.demo", lambda reply: reply.status == 200)

    sent = {"Backend": "client", "X-Trace": "client"}
    replies = await burst(outbound, "shop.demo", ["/"] * 100, sent)
    for reply in replies:
        assert reply.backend in {"v1", "v2"}, reply
        name = reply.backend
        assert reply.echoed() == {
            "path": "/",
            "header backend": name,  # set: the client's value overwritten
            "header x-env": "prod",  # the rule's filter, applied after the backend's
            "header x-trace": f"client, {name}",  # add: appended
        }, reply.body
        assert reply.headers.get("x-picked") == name, reply.headers
    by_backend = shares(replies)
    assert set(by_backend) == {"v1", "v2"}, by_backend
    for backend, name in ((v1, "v1"), (v2, "v2")):
        assert {r.headers.get("backend") for r in backend.received()} == {name}


# --- 9. GAMMA consumer and producer routes ----------------------------------------------------


def workspace_grant(consumer: str) -> str:
    """payments lets workspace `consumer` reach its Service billing."""
    return f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: {consumer}-may-bill, namespace: payments}}
spec:
  from: [{{group: "", kind: Namespace, namespace: {consumer}}}]
  to: [{{group: "", kind: Service, name: billing}}]
"""


def billing_route(namespace: str, value: str) -> str:
    """An HTTPRoute of `namespace` attached to payments/billing that marks its replies."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: billing, namespace: {namespace}}}
spec:
  parentRefs: [{{group: "", kind: Service, namespace: payments, name: billing}}]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: X-Route, value: {value}}}]}}
    backendRefs: [{{name: billing, namespace: payments, port: 80}}]
"""


async def test_a_consumer_route_changes_its_own_namespace_s_calls_only(
    tmp_path: Path, serve_fleet: ServeFleet, servers: StartBackend, envoys: StartEnvoy
) -> None:
    """GEP-1294: demo's route to payments/billing (no ReferenceGrant: its backend is one
    demo may reach) applies to demo's callers and wins over payments' producer route for
    them; ops' callers get the producer route."""
    billing, front = servers("billing"), servers("front")
    root = write_fleet(
        tmp_path / "fleet",
        {
            "eu-central": [
                Workload("billing", (billing.port,), namespace="payments"),
                Workload("front", (front.port,), namespace="web"),
            ]
        },
        [
            workspace_grant("demo"),
            workspace_grant("ops"),
            billing_route("payments", "producer"),
            billing_route("demo", "consumer"),
        ],
    )
    served = await serve_fleet(root)
    failing = [failing_conditions(s) for s in served.mesh.routing_state.statuses]
    assert failing == [[], []], served.mesh.routing_state.statuses
    host = "billing.payments.svc.clusterset.local"
    (_, demo), (_, ops) = [
        await start_sidecar(envoys, served.xds_port, namespace) for namespace in ("demo", "ops")
    ]
    mine = await until(demo, host, lambda r: r.headers.get("x-route") == "consumer")
    theirs = await until(ops, host, lambda r: r.headers.get("x-route") == "producer")
    assert (mine.backend, theirs.backend) == ("billing", "billing")
    for port, marked in ((demo, "consumer"), (ops, "producer")):
        replies = await burst(port, host, ["/"] * 20, workers=4)
        assert {(r.backend, r.headers.get("x-route")) for r in replies} == {("billing", marked)}, (
            replies[:3]
        )
    # Another namespace's service by its short and its cluster.local name: the same routes.
    names = ["billing.payments", "billing.payments:80", "billing.payments.svc.cluster.local"]
    for port, marked in ((demo, "consumer"), (ops, "producer")):
        for name in names:
            reply = await asyncio.to_thread(request, port, name)
            assert (reply.backend, reply.headers.get("x-route")) == ("billing", marked), reply
    # A namespace that may not reach billing reaches it by no name: no route opens it.
    _, web = await start_sidecar(envoys, served.xds_port, "web")
    await until(web, "front.web", _answered_by("front"))  # its configuration is in
    for name in [host, *names]:
        assert (await asyncio.to_thread(request, web, name)).status == 404, name
