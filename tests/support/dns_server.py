"""A real DNS server for tests: BIND 9's `named` (Debian's bind9) on a free loopback port.

    with DnsServer("edge.test", "_http._tcp.hello SRV 0 0 8080 a.hello\\na.hello A 10.0.0.1"):
        ...

It serves one primary zone with 1-second TTLs (and a 1-second negative TTL) whose records
tests change the way operators do, with DNS UPDATE (RFC 2136) messages over TCP
(`update`). `named` runs in the foreground (`-g`, logging to a file the failure message
quotes) as a child of the test process, in a directory of its own, listening on
127.0.0.1 only (UDP and TCP, one free port), with no control channel.

Two ways to make lookups fail, both real server behaviour:

- `delegate_away(name)` delegates `name` to a nameserver that has no address. Recursion
  is on (for 127.0.0.1 only) so the server follows the delegation, finds no server to
  ask, and answers SERVFAIL at once; `undelegate(name)` brings the name back. The server
  is also authoritative for the root zone, so recursion never leaves the machine.
- `pause()` stops the process (SIGSTOP): queries time out; `resume()` continues it.

As root, named drops to user `bind` (as Debian runs it): the directory is made under the
system's temporary directory, readable by `bind`, and its files belong to `bind` so the
zone's journal can be written.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.update

from tests.support.net import free_port

NAMED_PATHS = ("/usr/sbin/named",)
INSTALL_HINT = (
    "the DNS tests need BIND 9's named and dig (Debian packages bind9 and dnsutils): "
    "`make system-deps` installs them as root (apt-get install bind9 dnsutils)"
)
BLACKHOLE_NS = "nowhere"  # a nameserver name the zone has no address for


def find_named() -> str | None:
    """The named binary: on PATH or where Debian installs it (/usr/sbin is not always on
    a non-root PATH)."""
    return shutil.which("named") or next((p for p in NAMED_PATHS if os.access(p, os.X_OK)), None)


def free_dns_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP right now."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1")


def _apparmor_hint(log: str) -> str:
    enabled = Path("/sys/module/apparmor/parameters/enabled")
    denied = "permission denied" in log.lower()
    with contextlib.suppress(OSError):
        if denied and enabled.read_text().strip() == "Y":
            return (
                "\n(AppArmor is enabled: its usr.sbin.named profile may keep named out of "
                f"{tempfile.gettempdir()}; `aa-complain /usr/sbin/named` lifts it)"
            )
    return ""


class DnsServer:
    """One named serving `zone` (see the module doc). `records` are zone-file lines,
    names relative to the zone; every record's TTL is `ttl` unless a line says otherwise."""

    address = "127.0.0.1"

    def __init__(self, zone: str = "edge.test", records: str = "", ttl: int = 1) -> None:
        self.zone = zone.rstrip(".")
        self.records = records
        self.ttl = ttl
        self.port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_text = ""

    @property
    def server(self) -> str:
        """The server as `kontinuum.io/dns-server` names it."""
        return f"{self.address}:{self.port}"

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> DnsServer:
        named = find_named()
        if named is None:
            raise RuntimeError(f"no named binary: {INSTALL_HINT}")
        self.port = free_dns_port()
        directory = Path(tempfile.mkdtemp(prefix="kontinuum-named-"))
        self.directory = directory
        directory.chmod(0o755)
        (directory / "named.conf").write_text(self._config(directory))
        (directory / f"{self.zone}.zone").write_text(self._zone_file())
        (directory / "root.zone").write_text(self._root_zone())
        command = [named, "-g", "-4", "-n", "1", "-c", str(directory / "named.conf")]
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                bind = pwd.getpwnam("bind")
                for path in [directory, *directory.iterdir()]:
                    os.chown(path, bind.pw_uid, bind.pw_gid)
                command += ["-u", "bind"]
        with (directory / "named.log").open("wb") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(
                    f"named exited with status {self._process.returncode} before serving "
                    f"{self.zone}:\n{log}{_apparmor_hint(log)}"
                )
            with contextlib.suppress(OSError, dns.exception.DNSException):
                if self.rcode("@", "SOA", timeout=0.2) == "NOERROR":
                    return
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"named did not serve {self.zone} within {timeout}s:\n{log}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate named (also when paused) and wait for it; remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.directory is not None:
            self._log_text = self.log_tail()
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def pause(self) -> None:
        """Stop named in its tracks (SIGSTOP): queries reach its socket and time out."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        if self.directory is None:
            return self._log_text
        with contextlib.suppress(OSError):
            text = (self.directory / "named.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    # --- configuration ---------------------------------------------------------------------

    def _config(self, directory: Path) -> str:
        return f"""
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    listen-on port {self.port} {{ {self.address}; }};
    listen-on-v6 {{ none; }};
    // Only so a delegation to a nameserver without address answers SERVFAIL
    // (delegate_away); the root zone below keeps recursion on this machine.
    recursion yes;
    allow-recursion {{ {self.address}; }};
    allow-query {{ {self.address}; }};
    dnssec-validation no;
    empty-zones-enable no;
    notify no;
    servfail-ttl 0;
    max-cache-size 16m;
}};
controls {{ }};
zone "." {{ type primary; file "root.zone"; }};
zone "{self.zone}" {{
    type primary;
    file "{self.zone}.zone";
    allow-update {{ {self.address}; }};
}};
"""

    def _soa(self) -> str:
        # serial refresh retry expire minimum: the last is the negative TTL (RFC 2308)
        return (
            f"@ SOA ns.{self.zone}. hostmaster.{self.zone}. 1 {self.ttl} {self.ttl} 60 {self.ttl}"
        )

    def _zone_file(self) -> str:
        return (
            f"$ORIGIN {self.zone}.\n$TTL {self.ttl}\n{self._soa()}\n@ NS ns\nns A {self.address}\n"
            f"{self.records}\n"
        )

    def _root_zone(self) -> str:
        return (
            f"$ORIGIN .\n$TTL {self.ttl}\n{self._soa()}\n@ NS ns.{self.zone}.\n"
            f"ns.{self.zone}. A {self.address}\n"
        )

    # --- the protocol ----------------------------------------------------------------------

    def rcode(self, name: str, rdtype: str, timeout: float = 2.0) -> str:
        """The server's answer code to a query for `name` (relative to the zone, or
        absolute with a final dot), such as NOERROR, NXDOMAIN or SERVFAIL."""
        query = dns.message.make_query(self.absolute(name), rdtype)
        response = dns.query.udp(query, self.address, timeout=timeout, port=self.port)
        return dns.rcode.to_text(response.rcode())

    def absolute(self, name: str) -> str:
        if name.endswith("."):
            return name
        return f"{self.zone}." if name in ("", "@") else f"{name}.{self.zone}."

    def update(self, *, add: Iterable[str] = (), delete: Iterable[str] = ()) -> None:
        """Change the zone with one DNS UPDATE over TCP: `delete` lines are `name [type
        [data]]` (deleted first), `add` lines `name ttl type data`, names relative to the
        zone."""
        message = dns.update.UpdateMessage(f"{self.zone}.")
        for line in delete:
            name, *rest = line.split()
            message.delete(self.absolute(name), *rest)
        for line in add:
            name, ttl, rdtype, *data = line.split()
            message.add(self.absolute(name), int(ttl), rdtype, " ".join(data))
        response = dns.query.tcp(message, self.address, timeout=5, port=self.port)
        if response.rcode() != dns.rcode.NOERROR:
            raise AssertionError(
                f"DNS UPDATE refused: {dns.rcode.to_text(response.rcode())}\n{self.log_tail()}"
            )

    def delegate_away(self, name: str) -> None:
        """Delegate `name` to a nameserver without address: queries at or below it get
        SERVFAIL (recursion finds no server to ask)."""
        self.update(add=[f"{name} {self.ttl} NS {BLACKHOLE_NS}.{self.zone}."])

    def undelegate(self, name: str) -> None:
        self.update(delete=[f"{name} NS"])


def dig(server: DnsServer, name: str, rdtype: str) -> subprocess.CompletedProcess[str]:
    """`dig @127.0.0.1 -p PORT NAME TYPE +short`: the operator's way to look."""
    binary = shutil.which("dig")
    if binary is None:
        raise RuntimeError(f"no dig binary: {INSTALL_HINT}")
    command = [binary, f"@{server.address}", "-p", str(server.port), name, rdtype, "+short"]
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
