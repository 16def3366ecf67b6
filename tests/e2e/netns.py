"""Clusters on separate networks, built from Linux network namespaces (needs root and `ip`).

A `FleetNetwork` is one WAN namespace holding a bridge, plus one namespace per cluster
plugged into that bridge by a veth pair. A cluster's pods listen on 127.0.0.x inside its
own namespace, so no other cluster can reach them; only what listens on the cluster's WAN
address (its east-west gateway) is reachable from the other clusters and from the WAN.

A cluster can also sit behind NAT (`FleetNetwork(["eu", "edge"], behind_nat=["edge"])`), as
an edge site behind a home or shop router does: its namespace is plugged into a router
namespace of its own on a private subnet, the router is on the WAN and masquerades what the
cluster opens towards it (nftables), and the WAN has no route to the private subnet. Only the
cluster's published address (routed to it by the router, its `address`) answers from the
WAN, on the ports `Nat.publish` opens; `Nat.cut` and `Nat.restore` cut its uplink and bring
it back.

Every interface is created inside a namespace of the fleet, never in the host's, so
deleting the namespaces removes everything and parallel fleets cannot clash on interface
names or addresses. Namespaces are named `kn-<pid>-<seq>` (the WAN) and
`kn-<pid>-<seq>-<cluster>`: a fleet whose creating process died is swept by the next run.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.e2e.envoy import Envoy

PREFIX = "kn-"
_NAME = re.compile(r"kn-(\d+)-\d+(-[a-z][a-z0-9-]*)?")
_CLUSTER = re.compile(r"[a-z][a-z0-9-]{0,31}")
_REPO = Path(__file__).resolve().parents[2]
_SEQUENCE = itertools.count()
_SWEPT = threading.Event()

# One long-lived client per namespace: a fresh interpreter per request costs ~100 ms.
_CLIENT = r"""
import http.client, json, sys, urllib.parse
for line in sys.stdin:
    url, headers, timeout = json.loads(line)
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        result = [response.status, response.read().decode(errors="replace")]
    except (OSError, http.client.HTTPException) as error:
        result = [0, f"{type(error).__name__}: {error}"]
    finally:
        connection.close()
    print(json.dumps(result), flush=True)
"""


def netns_unavailable(nat: bool = False) -> str | None:
    """Why this process cannot build namespaces (with a NAT router), or None if it can."""
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2's `ip` on PATH (apt-get install iproute2)"
    if nat and shutil.which("nft") is None:
        return "NAT in network-namespace tests needs `nft` on PATH (apt-get install nftables)"
    if os.geteuid() != 0:
        return f"network-namespace tests need root (`ip netns add`), running as uid {os.geteuid()}"
    return None


def ip(*args: str) -> str:
    """Run `ip ARGS` and return its stdout; fail with its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def harness_namespaces() -> list[str]:
    """The namespaces on this machine that this harness created (any process)."""
    names = (line.split()[0] for line in ip("netns", "list").splitlines() if line.strip())
    return [name for name in names if _NAME.fullmatch(name)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs in namespace `name` (it would keep it alive), then delete it."""
    for pid in ip("netns", "pids", name).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "delete", name)


def sweep_leftovers() -> list[str]:
    """Delete the namespaces of fleets whose creating process is dead; returns their names."""
    swept = []
    for name in harness_namespaces():
        match = _NAME.fullmatch(name)
        assert match is not None
        if not _alive(int(match.group(1))):
            try:
                _delete_namespace(name)
            except RuntimeError:
                continue  # a parallel run swept it first
            swept.append(name)
    return swept


def _terminate(process: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """SIGTERM the process group (a session leader's children too), then SIGKILL it."""
    if process.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:  # started with start_new_session=False
                process.send_signal(sig)
            try:
                process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    process.wait(timeout)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@dataclass
class BackendProcess:
    """A `tests.e2e.backends` server running as a process inside a namespace."""

    name: str
    address: str
    port: int
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"


class Namespace:
    """One network namespace: run processes and send HTTP requests from inside it."""

    def __init__(self, name: str, address: str, label: str) -> None:
        self.name = name
        self.address = address  # on the WAN
        self.label = label
        self._processes: list[subprocess.Popen[Any]] = []
        self._envoys: list[Envoy] = []
        self._client: subprocess.Popen[str] | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Namespace({self.label!r}, {self.name}, {self.address})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed to run inside this namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` in the namespace, in its own process group; killed when the fleet ends."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)
        process: subprocess.Popen[Any] = subprocess.Popen(self.command(argv), **kwargs)
        self._processes.append(process)
        return process

    def run(
        self, argv: Sequence[str], timeout: float = 10.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the namespace to completion; its output is captured as text."""
        done = subprocess.run(
            self.command(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{argv} in {self.name} exited with {done.returncode}: {done.stderr.strip()}"
            )
        return done

    def terminate(self, process: subprocess.Popen[Any]) -> None:
        """Stop one process started by `popen` (and its group) before the fleet ends."""
        _terminate(process)

    # -- HTTP from inside ---------------------------------------------------------------------

    def http_get(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 2.0
    ) -> tuple[int, str]:
        """GET `url` from inside the namespace: (status, body), or (0, error) if it failed."""
        with self._client_lock:
            client = self._client
            if client is None or client.poll() is not None:
                client = self._client = self.popen(
                    [sys.executable, "-I", "-S", "-c", _CLIENT],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write(json.dumps([url, headers or {}, timeout]) + "\n")
            client.stdin.flush()
            # Connect and read each get `timeout`; the interpreter's start gets the rest.
            line = _read_line(client.stdout, 2 * timeout + 5)
            if line is None:
                _terminate(client)
                self._client = None
                raise AssertionError(f"the HTTP client in {self.name} hung or died on {url}")
        status, body = json.loads(line)
        return int(status), str(body)

    def wait_http(self, url: str, timeout: float = 5.0) -> None:
        """Poll `url` from inside until something answers it (any HTTP status)."""
        deadline = time.monotonic() + timeout
        while True:
            status, text = self.http_get(url, timeout=1.0)
            if status:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing answered {url} in {self.name}: {text}")
            time.sleep(0.05)

    # -- servers inside -----------------------------------------------------------------------

    def backend(
        self, name: str, *, address: str = "127.0.0.1", port: int = 0, timeout: float = 5.0
    ) -> BackendProcess:
        """Start a backend answering `backend <name>` on `address:port` in this namespace."""
        argv = ["--name", name, "--address", address, "--port", str(port)]
        process = self.popen(
            [sys.executable, "-m", "tests.e2e.backends", *argv],
            stdout=subprocess.PIPE,
            text=True,
            cwd=_REPO,
        )
        assert process.stdout is not None
        line = _read_line(process.stdout, timeout)
        if not line:
            self.terminate(process)
            raise AssertionError(f"backend {name} did not start in {self.name} (see stderr)")
        return BackendProcess(name, address, int(line.rpartition(":")[2]), process)

    def envoy(self, workdir: Path, **kwargs: Any) -> Envoy:
        """Start an `Envoy(workdir, netns=<this>, **kwargs)`; stopped when the fleet ends."""
        envoy = Envoy(workdir, netns=self.name, **kwargs)
        self._envoys.append(envoy)
        envoy.start()
        return envoy

    def stop_all(self) -> None:
        for envoy in self._envoys:
            envoy.stop()
        for process in self._processes:
            _terminate(process)
        self._client = None


class Nat:
    """The router of a cluster behind NAT: on the WAN with its own address, the cluster
    behind it on a private subnet.

    What the cluster opens towards the WAN is masqueraded as the router's address; nothing
    from the WAN reaches the private subnet (no route leads there), and the cluster's
    published address, routed to it, lets in only connections to the ports `publish` opens.
    """

    TABLE = "kontinuum-nat"
    CUT = "kontinuum-cut"

    def __init__(self, router: Namespace, cluster: Namespace, private: str, published: str):
        self.router = router
        self.cluster = cluster
        self.private = private  # a /24
        self.published = published
        self.private_address = f"{private}.2"  # the cluster's address on the private subnet

    def build(self) -> None:
        router, cluster, gateway = self.router.name, self.cluster.name, f"{self.private}.1"
        ip("-n", router, "link", "add", "lan0", "type", "veth", "peer", "wan0", "netns", cluster)
        ip("-n", router, "addr", "add", f"{gateway}/24", "dev", "lan0")
        ip("-n", router, "link", "set", "lan0", "up")
        ip("-n", cluster, "addr", "add", f"{self.private_address}/24", "dev", "wan0")
        ip("-n", cluster, "link", "set", "wan0", "up")
        ip("-n", cluster, "addr", "add", f"{self.published}/32", "dev", "lo")
        ip("-n", cluster, "route", "add", "default", "via", gateway, "src", self.private_address)
        ip("-n", router, "route", "add", f"{self.published}/32", "via", self.private_address)
        self.router.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        # The router answers the WAN's ARP for the published address it routes inwards.
        self.router.run(["sysctl", "-q", "-w", "net.ipv4.conf.wan0.proxy_arp=1"])
        self.nft(f"""
            table ip {self.TABLE} {{
                chain forward {{
                    type filter hook forward priority filter; policy drop;
                    ct state established,related accept
                    iifname "lan0" oifname "wan0" accept
                }}
                chain postrouting {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname "wan0" ip saddr {self.private}.0/24 masquerade
                }}
            }}
        """)

    def nft(self, ruleset: str) -> None:
        """Load `ruleset` (nft syntax) into the router's namespace."""
        done = subprocess.run(
            self.router.command(["nft", "-f", "-"]),
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0:
            raise RuntimeError(f"nft in {self.router.name} failed: {done.stderr.strip()}")

    def publish(self, port: int) -> None:
        """Let the WAN open TCP connections to the cluster's published address on `port`."""
        self.nft(
            f'add rule ip {self.TABLE} forward iifname "wan0" '
            f"ip daddr {self.published} tcp dport {port} accept\n"
        )

    def cut(self) -> None:
        """Cut the cluster's uplink: every packet crossing the router, either way, is refused
        (a TCP reset, so that both ends see the cut at their next packet, not after their
        keepalive)."""
        self.nft(f"""
            table ip {self.CUT} {{
                chain forward {{
                    type filter hook forward priority filter - 10; policy accept;
                    meta l4proto tcp reject with tcp reset
                    reject
                }}
            }}
        """)

    def restore(self) -> None:
        """Bring the uplink back, as it was before `cut`."""
        self.nft(f"delete table ip {self.CUT}\n")


def _read_line(stream: IO[str], timeout: float) -> str | None:
    """The next line of a child's stdout, or None at EOF or after `timeout` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        return None
    return stream.readline().strip() or None


class FleetNetwork:
    """A WAN bridge and one isolated namespace per cluster; everything is removed on exit.

    `with FleetNetwork(["eu", "us"]) as network:` then `network.cluster("eu").address` is
    where eu's gateway listens and `network.wan` is where a control plane can run.
    """

    def __init__(self, clusters: Iterable[str], behind_nat: Iterable[str] = ()) -> None:
        self.names = list(clusters)
        natted = set(behind_nat)
        for cluster in self.names:
            if not _CLUSTER.fullmatch(cluster):
                raise ValueError(f"cluster name {cluster!r} must match {_CLUSTER.pattern}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate cluster names in {self.names}")
        sequence = next(_SEQUENCE)
        root = f"{PREFIX}{os.getpid()}-{sequence}"
        # Nothing of a fleet is visible outside its namespaces, so the subnet cannot clash;
        # it still differs between fleets to tell them apart in logs and captures.
        self.subnet = f"10.250.{(os.getpid() + sequence) % 256}"
        self.wan = Namespace(root, f"{self.subnet}.1", "wan")
        self._clusters = {
            name: Namespace(f"{root}-{name}", f"{self.subnet}.{11 + index}", name)
            for index, name in enumerate(self.names)
        }
        unknown = natted - set(self.names)
        if unknown:
            raise ValueError(f"behind_nat names no cluster of the fleet: {sorted(unknown)}")
        self._nats: dict[str, Nat] = {}
        for index, name in enumerate(self.names):
            if name in natted:
                cluster = self._clusters[name]
                router = Namespace(f"{cluster.name}-nat", cluster.address, f"{name}-nat")
                cluster.address = f"{self.subnet}.{101 + index}"  # published, routed to it
                self._nats[name] = Nat(router, cluster, f"192.168.{index}", cluster.address)
        self._created: list[Namespace] = []

    def cluster(self, name: str) -> Namespace:
        return self._clusters[name]

    def nat(self, cluster: str) -> Nat:
        """The NAT router in front of `cluster` (one of `behind_nat`)."""
        return self._nats[cluster]

    @property
    def namespaces(self) -> list[Namespace]:
        routers = [nat.router for nat in self._nats.values()]
        return [self.wan, *routers, *self._clusters.values()]

    def __enter__(self) -> FleetNetwork:
        problem = netns_unavailable(nat=bool(self._nats))
        if problem is not None:
            raise RuntimeError(problem)
        if not _SWEPT.is_set():
            _SWEPT.set()
            sweep_leftovers()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        wan = self.wan.name
        self._add(self.wan)
        ip("-n", wan, "link", "add", "br0", "type", "bridge")
        ip("-n", wan, "addr", "add", f"{self.wan.address}/24", "dev", "br0")
        ip("-n", wan, "link", "set", "br0", "up")
        for index, (name, namespace) in enumerate(self._clusters.items()):
            nat = self._nats.get(name)
            on_wan = namespace if nat is None else nat.router
            self._add(on_wan)
            veth = f"veth{index}"  # interface names live inside the namespaces: no clashes
            peer = ("peer", "wan0", "netns", on_wan.name)  # born inside the cluster
            ip("-n", wan, "link", "add", veth, "type", "veth", *peer)
            ip("-n", wan, "link", "set", veth, "master", "br0", "up")
            ip("-n", on_wan.name, "addr", "add", f"{on_wan.address}/24", "dev", "wan0")
            ip("-n", on_wan.name, "link", "set", "wan0", "up")
            if nat is not None:
                self._add(namespace)
                nat.build()

    def _add(self, namespace: Namespace) -> None:
        ip("netns", "add", namespace.name)
        self._created.append(namespace)
        ip("-n", namespace.name, "link", "set", "lo", "up")

    def close(self) -> None:
        """Stop every process, then delete every namespace (and with them every veth)."""
        errors = []
        for namespace in reversed(self._created):
            for step in (namespace.stop_all, functools.partial(_delete_namespace, namespace.name)):
                try:
                    step()
                except Exception as error:
                    errors.append(f"{namespace.name}: {type(error).__name__}: {error}")
        self._created.clear()
        if errors:
            raise RuntimeError("; ".join(errors))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except RuntimeError:
            if exc is None:
                raise
