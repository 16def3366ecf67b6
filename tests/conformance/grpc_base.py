"""The gRPC part of the conformance base, and eventually consistent gRPC expectations.

Upstream's base gives the gRPC cases their own echo backends; here they are real gRPC
servers in the test process (`tests.e2e.grpc_echo`) behind fleet Services that the module
adds to the base (`grpc_base`):

- Gateway cases: `grpc-infra-backend-v1`, `-v2`, `-v3` in the infra namespace, port 8080 with
  `appProtocol: kubernetes.io/h2c`, as upstream's.
- Mesh cases: upstream's mesh `echo`, `echo-v1` and `echo-v2` answer gRPC on port 7070 named
  `grpc` (only `echo`'s port has `appProtocol: kubernetes.io/h2c`). The HTTP base already
  holds those names, so here they are `grpc-echo`, `grpc-echo-v1` and `grpc-echo-v2`, with
  the same port, port names and appProtocols; `grpc-echo` leads to both versions.

A round makes every call of a case once; `expect_rounds` repeats rounds (bounded) until
every call has had its expected result `CONSECUTIVE` rounds in a row, as upstream's
eventually consistent gRPC requests do. A proxyless client (`ProxylessRounds`) runs the
`grpc_echo` script in a subprocess with its own xDS client and reports its rounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conformance.base import CLUSTER, INFRA, MESH
from tests.conformance.harness import CONSECUTIVE, TRAFFIC_TIMEOUT, Conformance
from tests.e2e import grpc_client, grpc_echo
from tests.e2e.grpc_echo import Call, Result

UNIMPLEMENTED = "err UNIMPLEMENTED"
# A proxyless client has no proxy to answer a call that no route matches: gRPC fails it
# with UNAVAILABLE itself.
NO_ROUTE_PROXYLESS = "err UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class GrpcService:
    """A Service of one gRPC port whose endpoints are the gRPC echo `backends`."""

    namespace: str
    name: str
    port: int
    app_protocol: str | None
    backends: tuple[str, ...]
    port_name: str = "grpc"


GRPC_SERVICES: tuple[GrpcService, ...] = (
    *(
        GrpcService(
            INFRA,
            f"grpc-infra-backend-v{n}",
            8080,
            "kubernetes.io/h2c",
            (f"grpc-infra-backend-v{n}",),
        )
        for n in (1, 2, 3)
    ),
    GrpcService(MESH, "grpc-echo", 7070, "kubernetes.io/h2c", ("grpc-echo-v1", "grpc-echo-v2")),
    GrpcService(MESH, "grpc-echo-v1", 7070, None, ("grpc-echo-v1",)),
    GrpcService(MESH, "grpc-echo-v2", 7070, None, ("grpc-echo-v2",)),
)


def _service_yaml(service: GrpcService, backend_ports: Mapping[str, int]) -> str:
    protocol = f", appProtocol: {service.app_protocol}" if service.app_protocol else ""
    docs = [
        f"""apiVersion: v1
kind: Service
metadata: {{name: {service.name}, namespace: {service.namespace}}}
spec:
  ports: [{{name: {service.port_name}, port: {service.port}, protocol: TCP{protocol}}}]
"""
    ]
    for index, backend in enumerate(service.backends, start=1):
        docs.append(
            f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service.name}-{index}
  namespace: {service.namespace}
  labels: {{kubernetes.io/service-name: {service.name}}}
addressType: IPv4
ports: [{{name: {service.port_name}, port: {backend_ports[backend]}, protocol: TCP{protocol}}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""
        )
    return "---\n".join(docs)


@contextlib.contextmanager
def grpc_base(conformance: Conformance) -> Iterator[None]:
    """The gRPC backends running and their Services in the fleet, for one module."""
    names = list(dict.fromkeys(b for s in GRPC_SERVICES for b in s.backends))
    with grpc_echo.echo_backends(names) as ports:
        by_namespace: dict[str, list[str]] = {}
        for service in GRPC_SERVICES:
            by_namespace.setdefault(service.namespace, []).append(_service_yaml(service, ports))
        conformance.add_base(
            {
                f"clusters/{CLUSTER}/{namespace}-grpc.yaml": "---\n".join(docs)
                for namespace, docs in by_namespace.items()
            }
        )
        yield


# --- expectations --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrpcExpected:
    """A call's expected outcome (`ok <backend>` or `err <code>`), and metadata the backend
    must have received with these values, or not at all."""

    outcome: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    absent: Sequence[str] = ()


def ok(backend: str, **metadata: str) -> GrpcExpected:
    return GrpcExpected(f"ok {backend}", metadata)


def mismatch(result: Result, expected: GrpcExpected) -> str | None:
    if result.outcome != expected.outcome:
        return f"{result.outcome} (want {expected.outcome})"
    seen = result.metadata or {}
    for name, value in expected.metadata.items():
        if seen.get(name) != value:
            return f"backend saw {name}: {seen.get(name)!r} (want {value!r})"
    for name in expected.absent:
        if name in seen:
            return f"backend saw {name}: {seen[name]!r} (want none)"
    return None


Round = Callable[[], list[Result]]
"""Makes every call of a case once (in order) and returns the results."""


def through(address: str, calls: Sequence[Call], root_certificates: bytes | None = None) -> Round:
    """Rounds of `calls` through an Envoy listener at `address` (`127.0.0.1:<port>`), over
    TLS with `root_certificates`."""
    return lambda: [
        grpc_echo.call_through(address, call, root_certificates=root_certificates) for call in calls
    ]


def expect_rounds(
    next_round: Round, cases: Sequence[tuple[Call, GrpcExpected]], timeout: float = TRAFFIC_TIMEOUT
) -> None:
    """Rounds until every call has been as expected `CONSECUTIVE` rounds in a row (bounded
    by `timeout`); fail with each call's last difference otherwise."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    problems: list[str] = ["no round made"]
    for _ in range(int(timeout / 0.05) + CONSECUTIVE):
        results = next_round()
        problems = [
            f"{call}: {problem}"
            for (call, expected), result in zip(cases, results, strict=True)
            if (problem := mismatch(result, expected)) is not None
        ]
        if not problems:
            in_a_row += 1
            if in_a_row == CONSECUTIVE:
                return
            continue
        in_a_row = 0
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError("\n".join(problems))


def weighted_split(
    conformance: Conformance,
    next_round: Round,
    before: str,
    weighted: str,
    only: GrpcExpected,
    rounds: int = 10,
) -> Counter[str]:
    """The outcomes of `rounds` rounds once route `weighted` is in force. `before` (the same
    route sending every call to one backend, `only`) goes first: once another backend
    answers, `weighted` is in force, whatever the backends of the parent itself."""
    assert conformance.apply(before) == ()
    calls = len(next_round())
    expect_rounds(next_round, [(Call(), only)] * calls)
    assert conformance.apply(weighted) == ()
    for _ in range(int(TRAFFIC_TIMEOUT / 0.05)):
        if any(r.outcome != only.outcome for r in next_round()):
            break
    return Counter(r.outcome for _ in range(rounds) for r in next_round())


def assert_split(outcomes: Counter[str], first: str, second: str) -> None:
    """70% to `first` and 30% to `second`, within about four standard deviations either way
    for 200 calls, and no call anywhere else (a weight 0 gets none)."""
    assert set(outcomes) == {f"ok {first}", f"ok {second}"}, outcomes
    share = outcomes[f"ok {first}"] / sum(outcomes.values())
    assert 0.55 <= share <= 0.85, outcomes


class ProxylessRounds:
    """The `grpc_echo` client in a subprocess: a proxyless gRPC client of `target`
    (`xds:///...`) with its own bootstrap, making `calls` in rounds; `next_round()` reads
    its next round (bounded)."""

    def __init__(self, workdir: Path, xds_port: int, namespace: str, target: str) -> None:
        self.workdir = workdir
        self.bootstrap = grpc_client.write_bootstrap(
            workdir / "bootstrap.json",
            xds_port,
            node_id=f"proxyless-{workdir.name}",
            cluster=CLUSTER,
            namespace=namespace,
        )
        self.target = target

    @contextlib.contextmanager
    def calling(self, calls: Sequence[Call]) -> Iterator[Round]:
        stderr_path = self.workdir / "client.stderr"
        env = {"GRPC_XDS_BOOTSTRAP": str(self.bootstrap), "PYTHONUNBUFFERED": "1"}
        env.update({k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ})
        argv = [sys.executable, grpc_echo.__file__, self.target, "--seconds", "60"]
        argv += ["--calls", json.dumps([c.to_json() for c in calls])]
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=stderr, env=env, bufsize=0
            )
        assert process.stdout is not None
        fd = process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        pending = bytearray()

        def next_line() -> bytes:
            deadline = time.monotonic() + TRAFFIC_TIMEOUT
            while b"\n" not in pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return b""
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b""
                pending.extend(chunk)
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            return line

        def next_round() -> list[Result]:
            line = next_line()
            if not line:
                tail = stderr_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"the proxyless client said nothing more; stderr:\n{tail}")
            return [Result(outcome, metadata) for outcome, metadata in json.loads(line)]

        try:
            yield next_round
        finally:
            selector.close()
            if process.poll() is None:
                process.kill()
            process.wait(10)
            process.stdout.close()
