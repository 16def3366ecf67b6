"""A real Envoy process for end-to-end tests: bootstrap, admin helpers, clean shutdown.

Every method here blocks (subprocess and HTTP calls to the admin port); tests that run
the xDS server in their own event loop call them through `asyncio.to_thread`.

An Envoy given `netns` runs under `ip netns exec` and binds its admin to a Unix socket in
its workdir instead of a TCP port: a socket path is reachable from the test's own network
namespace, a loopback port inside the Envoy's namespace is not.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from kontinuum.bootstrap import envoy_bootstrap
from tests.support.net import free_port

Mode = Literal["sotw", "delta"]

# sun_path holds 108 bytes; pytest's tmp_path for a long test name can exceed it.
_MAX_SOCKET_PATH = 100


def bootstrap(
    node_id: str,
    view: str,
    xds_port: int,
    mode: Mode,
    metadata: dict[str, str] | None = None,
    stats_port: int | None = None,
) -> dict[str, Any]:
    """kontinuum's Envoy bootstrap, reconnecting quickly after a control-plane restart;
    with `stats_port`, Prometheus' listener on 127.0.0.1 there (and a fixed admin port)."""
    return envoy_bootstrap(
        node_id=node_id,
        cluster=view,
        xds_address=f"127.0.0.1:{xds_port}",
        admin_port=0 if stats_port is None else free_port(),
        delta=mode == "delta",
        reconnect_backoff=("0.1s", "1s"),
        metadata=metadata,
        stats_address=None if stats_port is None else f"127.0.0.1:{stats_port}",
    )


class Envoy:
    """One Envoy subprocess with its bootstrap, log and admin address under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        node_id: str,
        view: str,
        xds_port: int,
        mode: Mode,
        binary: str,
        log_level: str = "info",
        metadata: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
        netns: str | None = None,
        stats_port: int | None = None,
    ) -> None:
        """`config` replaces kontinuum's ADS bootstrap (a static Envoy); `netns` is the
        network namespace to run in (see the module docstring for its admin)."""
        self.workdir = workdir
        self.node_id = node_id
        self.view = view
        self.mode = mode
        workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path = workdir / "bootstrap.json"
        self.log_path = workdir / "envoy.log"
        self.admin_path = workdir / "admin.address"
        self.netns = netns
        self._socket_dir: Path | None = None
        self.admin_socket: Path | None = None
        self.stats_port = stats_port
        document = (
            bootstrap(node_id, view, xds_port, mode, metadata, stats_port)
            if config is None
            else config
        )
        if netns is not None:
            self.admin_socket = workdir / "admin.sock"
            if len(str(self.admin_socket)) > _MAX_SOCKET_PATH:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="envoy-admin-"))
                self.admin_socket = self._socket_dir / "admin.sock"
            document = {
                **document,
                "admin": {"address": {"pipe": {"path": str(self.admin_socket)}}},
            }
        self.bootstrap_path.write_text(json.dumps(document))
        prefix = ["ip", "netns", "exec", netns] if netns is not None else []
        self._command = [
            *prefix,
            binary,
            "--config-path",
            str(self.bootstrap_path),
            "--admin-address-path",
            str(self.admin_path),
            # No shared memory or domain sockets for hot restart: any number of Envoys
            # (and leftovers of killed ones) coexist without base-id clashes.
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            log_level,
            # `main` lists every extension at info: keep the log about xDS and traffic.
            "--component-log-level",
            "main:warning",
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.admin_socket is not None:  # a restart binds it afresh
            self.admin_socket.parent.mkdir(parents=True, exist_ok=True)
            self.admin_socket.unlink(missing_ok=True)
        # Envoy logs to stderr, line by line: the file also catches startup errors.
        # `ip netns exec` execs the command, so the child process is Envoy itself.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the process and reap it; safe to call more than once."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def wait_admin(self, timeout: float = 10.0) -> str:
        """Wait until the admin endpoint answers; returns its base URL."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self._admin is None and self.admin_path.exists():
                address = self.admin_path.read_text().strip()
                if address:
                    self._admin = f"unix:{address}" if self.admin_socket else f"http://{address}"
            if self._admin is not None:
                try:
                    self.admin("/server_info")
                    return self._admin
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Envoy admin not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_live(self, timeout: float = 10.0) -> None:
        """Wait until Envoy finished its initial xDS fetch (admin `/ready` says LIVE)."""
        self.wait_admin(timeout)
        self.wait_for(lambda: self._ready_state() == "LIVE", timeout, "Envoy to become LIVE")

    def _ready_state(self) -> str:
        try:
            return self.admin("/ready").strip()
        except urllib.error.HTTPError as error:  # 503 while initializing
            with error:
                return error.read().decode().strip()

    def _check_alive(self) -> None:
        if self._process is None:
            raise AssertionError("Envoy was not started")
        code = self._process.poll()
        if code is not None:
            raise AssertionError(f"Envoy exited with code {code}\n{self.log_tail()}")

    def wait_for(
        self,
        check: Callable[[], Any],
        timeout: float = 10.0,
        what: str = "",
        interval: float = 0.05,
    ) -> Any:
        """Poll `check` (Envoy must stay alive) until truthy; fail with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or check}\n{self.log_tail()}"
                )
            time.sleep(interval)

    # -- admin -------------------------------------------------------------------------------

    def admin(self, path: str, timeout: float = 5.0) -> str:
        if self._admin is None:
            raise AssertionError("Envoy admin address not known yet (call wait_admin)")
        if self.admin_socket is not None:
            return _unix_get(str(self.admin_socket), path, timeout)
        with urllib.request.urlopen(self._admin + path, timeout=timeout) as response:
            return str(response.read().decode())

    def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        path = "/config_dump?include_eds" + (f"&resource={resource}" if resource else "")
        return dict(json.loads(self.admin(path)))

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges by name (histograms are left out)."""
        path = "/stats?format=json"
        if filter_regex:
            path += "&filter=" + urllib.parse.quote(filter_regex)
        entries = json.loads(self.admin(path)).get("stats", [])
        return {
            e["name"]: int(e["value"])
            for e in entries
            if isinstance(e.get("value"), int | str) and str(e["value"]).isdigit()
        }

    def stat(self, name: str) -> int | None:
        return self.stats("^" + re.escape(name) + "$").get(name)

    def clusters(self) -> dict[str, Any]:
        return dict(json.loads(self.admin("/clusters?format=json")))

    def cluster_endpoints(self, name: str) -> list[int]:
        """The ports of the hosts Envoy currently has for cluster `name`."""
        for status in self.clusters().get("cluster_statuses", []):
            if status.get("name") == name:
                return sorted(
                    int(h["address"]["socket_address"]["port_value"])
                    for h in status.get("host_statuses", [])
                )
        return []

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                text = log.read().decode(errors="replace")
        except OSError:
            return f"(no Envoy log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- Envoy {self.node_id} ({self.mode}) log tail: {self.log_path} ---\n{tail}"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _unix_get(socket_path: str, path: str, timeout: float) -> str:
    """A GET over a Unix socket that fails like `urlopen` (HTTPError on 4xx/5xx)."""
    connection = _UnixConnection(socket_path, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status >= 400:
            raise urllib.error.HTTPError(
                f"unix:{socket_path}{path}",
                response.status,
                response.reason,
                response.msg,
                io.BytesIO(body),
            )
        return body.decode()
    finally:
        connection.close()
