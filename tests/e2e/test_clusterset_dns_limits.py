"""The bounds of the `clusterset.local` DNS server, over real sockets with real clients:
a flood of heavy messages, one client opening many TCP connections, a reset in the middle
of pipelined queries, and any bytes or any dnspython-built message over UDP and TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import socket
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from kontinuum.app import serve_fleet
from kontinuum.control.mcs import build_plane
from kontinuum.control.plane import ServicePlane
from kontinuum.discovery.static import load_fleet
from kontinuum.dns import ClusterSetResponder, DnsServer, DnsThread
from kontinuum.dns.thread import LoopFactory
from tests.support.clusterset_dns import LOOPBACK, ClusterSetDns
from tests.support.fleet import fast
from tests.support.net import eventually, free_port, wait_until

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet"
HELLO = "hello.demo.svc.clusterset.local"
ANOTHER_CLIENT = "127.0.0.2"  # loopback too: a second client address on one machine


def example_plane() -> ServicePlane:
    fleet, errors = load_fleet(EXAMPLE)
    assert errors == []
    return build_plane(fleet)


PLANE = example_plane()


def hello_query() -> dns.message.QueryMessage:
    return dns.message.make_query(HELLO, "A")


def assert_hello(response: dns.message.Message) -> None:
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in response.answer[0]] == ["127.0.0.1"]


def ask_tcp(port: int, source: str = LOOPBACK, timeout: float = 5.0) -> dns.message.Message:
    """A query over a new TCP connection; retried while the server still counts the
    connections of an earlier step (closed by the client, not yet seen closed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dns.query.tcp(hello_query(), LOOPBACK, port=port, timeout=timeout, source=source)
        except (EOFError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def erroneous(records: list[logging.LogRecord]) -> list[str]:
    """What was logged at WARNING or above, or with a traceback."""
    return [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in records
        if r.levelno >= logging.WARNING or r.exc_info
    ]


def crafted(size: int) -> bytes:
    """A message of `size` bytes that is costly to parse: 65535 questions, each a pointer to
    the first (the server used to parse every one of them)."""
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x00"
    first = name + struct.pack(">HH", 1, 1)
    header = struct.pack(">6H", 0x5151, 0, 65535, 0, 0, 0)
    pointers = b"\xc0\x0c\x00\x01\x00\x01" * ((size - len(header) - len(first)) // 6)
    return header + first + pointers


# --- a flood does not hold up the rest ---------------------------------------------------------


class Flood:
    """Sends crafted 59 KB messages, over UDP and TCP in turn, every 5 ms, until stopped (at
    most 3,000: 15 s at least)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        message = crafted(59_000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            while self.sent < 3_000 and not self._stop.wait(0.005):
                if self.sent % 2:
                    udp.sendto(message, (LOOPBACK, self.port))
                else:
                    with (
                        contextlib.suppress(OSError),
                        socket.create_connection((LOOPBACK, self.port), timeout=5) as tcp,
                    ):
                        tcp.sendall(len(message).to_bytes(2, "big") + message)
                self.sent += 1


async def healthz(port: int) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: kontinuum\r\n\r\n")
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def dns_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "clusterset-dns"]


async def test_a_dns_flood_does_not_hold_up_the_admin_endpoint(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet)
    admin, port = free_port(), free_port()
    serving = asyncio.create_task(
        serve_fleet(
            fast(path=fleet),
            f"{LOOPBACK}:{free_port()}",
            f"{LOOPBACK}:{admin}",
            dns_address=f"{LOOPBACK}:{port}",
        )
    )
    try:
        first = await asyncio.to_thread(wait_until, lambda: _udp_answer(port), 20, 0.1, "DNS")
        assert first is not None
        assert_hello(first)
        # The DNS server has a thread (and so an event loop) of its own: this test's loop
        # runs the admin endpoint and xDS.
        [thread] = dns_threads()
        assert thread is not threading.current_thread()

        with Flood(port) as flood:
            await eventually(lambda: flood.sent >= 20, what="the flood to be under way")
            for _ in range(5):
                response = await asyncio.wait_for(healthz(admin), 30)
                assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
                assert response.endswith(b"\r\n\r\nok\n")
            still_flooding = flood.running
        assert still_flooding, f"the flood ended ({flood.sent} sent) before the probes did"
        again = await asyncio.to_thread(_udp_answer, port)
        assert again is not None
        assert_hello(again)
        assert_hello(await asyncio.to_thread(ask_tcp, port))
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    assert dns_threads() == []


def _udp_answer(port: int) -> dns.message.Message | None:
    try:
        return dns.query.udp(hello_query(), LOOPBACK, port=port, timeout=0.5)
    except (OSError, dns.exception.Timeout):
        return None


def test_heavy_messages_are_not_read() -> None:
    """The server used to parse them (0.3 s for 59 KB) and answer FORMERR; now it drops them
    unread, and answers FORMERR to a small message of many questions without reading it."""
    with (
        ClusterSetDns(lambda: PLANE) as served,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.settimeout(5)
        sock.sendto(crafted(59_000), (LOOPBACK, served.port))
        sock.sendto(crafted(500), (LOOPBACK, served.port))
        sock.sendto(hello_query().to_wire(), (LOOPBACK, served.port))
        replies = [dns.message.from_wire(sock.recv(65535)) for _ in range(2)]
        # The first reply is the 500-byte message's: header only, not a question copied.
        assert (replies[0].id, replies[0].rcode(), replies[0].question) == (
            0x5151,
            dns.rcode.FORMERR,
            [],
        )
        assert_hello(replies[1])


def test_the_dns_thread_starts_and_stops_cleanly() -> None:
    """A port in use fails the start and ends the thread; a stop while starting is kept."""
    with ClusterSetDns(lambda: PLANE) as served:
        taken = DnsThread(DnsServer(ClusterSetResponder(lambda: PLANE)))
        with pytest.raises(OSError, match="address already in use"):
            taken.start(LOOPBACK, served.port).result(10)
        assert taken.stop().result(10) is None
        taken.join(10)
    early = DnsThread(DnsServer(ClusterSetResponder(lambda: PLANE)), name="early-dns")
    started = early.start(LOOPBACK, 0)
    early.stop().result(10)  # asked before it listens, maybe
    early.join(10)
    assert started.result(0) > 0
    assert not [t for t in threading.enumerate() if t.name == "early-dns"]
    with pytest.raises(RuntimeError, match="started already"):
        early.start(LOOPBACK, 0)


# --- TCP connections ---------------------------------------------------------------------------


def test_one_client_cannot_hold_every_tcp_connection() -> None:
    with ClusterSetDns(lambda: PLANE, max_connections_per_client=8) as served:
        held: list[socket.socket] = []
        try:
            for _ in range(8):
                sock = socket.create_connection((LOOPBACK, served.port), timeout=5)
                held.append(sock)
                dns.query.send_tcp(sock, hello_query())
                assert_hello(dns.query.receive_tcp(sock)[0])
            # A ninth connection from the same address is closed without an answer.
            with socket.create_connection((LOOPBACK, served.port), timeout=5) as ninth:
                with contextlib.suppress(ConnectionError):
                    dns.query.send_tcp(ninth, hello_query())
                with pytest.raises((EOFError, ConnectionError)):
                    dns.query.receive_tcp(ninth)
            # Another client is answered, and so is each held connection.
            assert_hello(ask_tcp(served.port, source=ANOTHER_CLIENT))
            for sock in held:
                dns.query.send_tcp(sock, hello_query())
                assert_hello(dns.query.receive_tcp(sock)[0])
            assert served.server.tcp_connections == 8
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: served.server.tcp_connections == 0, what="the connections closed")
        assert served.server.tcp_clients == 0
        assert_hello(ask_tcp(served.port))  # the first client again, once it let go


LOOPS: dict[str, LoopFactory] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_reset_in_the_middle_of_pipelined_queries_logs_nothing(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reset comes with the rest of a query the server waits for: on uvloop, a write to
    that connection raised RuntimeError, logged as an unhandled exception."""
    caplog.set_level(logging.DEBUG)
    query = hello_query().to_wire(prepend_length=True)
    with ClusterSetDns(lambda: PLANE, loop_factory=LOOPS[loop]) as served:
        for _ in range(20):
            with socket.create_connection((LOOPBACK, served.port), timeout=5) as sock:
                sock.sendall(query[:5])
                time.sleep(0.05)  # the server reads the first bytes and waits for the rest
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.sendall(query[5:] + query * 5)
        wait_until(lambda: served.server.tcp_connections == 0, what="the connections closed")
        assert_hello(ask_tcp(served.port))
    assert erroneous(caplog.records) == []


# --- any input -------------------------------------------------------------------------------

LABELS = st.lists(
    st.text(alphabet="abcXYZ019-_*.\\ ", min_size=1, max_size=63), min_size=1, max_size=6
)
RDTYPES = st.one_of(
    st.sampled_from(["A", "AAAA", "SRV", "TXT", "ANY", "SOA", "NS", "AXFR", "IXFR", "OPT"]).map(
        dns.rdatatype.from_text
    ),
    st.integers(0, 65535).map(dns.rdatatype.RdataType.make),
)


@st.composite
def names(draw: st.DrawFn) -> dns.name.Name:
    labels = draw(LABELS)
    suffix = draw(st.sampled_from(["svc.clusterset.local.", "clusterset.local.", "example."]))
    try:
        return dns.name.Name([label.encode() for label in labels]).concatenate(
            dns.name.from_text(suffix)
        )
    except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
        return dns.name.from_text(suffix)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A dnspython-built message: random names, types, classes, opcodes, flags, section
    counts and EDNS; perhaps cut short."""
    query = dns.message.make_query(
        draw(names()), draw(RDTYPES), draw(st.sampled_from(["IN", "CH", "ANY", "NONE"]))
    )
    query.id = draw(st.integers(0, 65535))
    query.flags = draw(st.integers(0, 0xFFFF)) & ~0x7800 & ~0x000F  # opcode and rcode apart
    query.set_opcode(draw(st.sampled_from(list(dns.opcode.Opcode))))
    for _ in range(draw(st.integers(0, 3))):
        query.question.append(dns.rrset.RRset(draw(names()), dns.rdataclass.IN, draw(RDTYPES)))
    for section in (query.answer, query.authority, query.additional):
        for _ in range(draw(st.integers(0, 2))):
            text = draw(st.text(alphabet="ab 09;", max_size=40))
            section.append(dns.rrset.from_text(draw(names()), 5, "IN", "TXT", f'"{text}"'))
    if draw(st.booleans()):
        options: list[dns.edns.Option] = [
            dns.edns.GenericOption(
                dns.edns.OptionType.make(draw(st.integers(0, 65535))), draw(st.binary(max_size=40))
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
        query.use_edns(
            draw(st.integers(0, 3)), payload=draw(st.integers(0, 65535)), options=options
        )
    wire = query.to_wire()
    return wire[: draw(st.integers(0, len(wire)))] if draw(st.booleans()) else wire


def repeated() -> st.SearchStrategy[bytes]:
    """Big messages: a header and a pattern repeated up to 64 KB."""
    return st.builds(
        lambda header, pattern, count: (header + pattern * count)[:65_000],
        st.binary(min_size=12, max_size=12),
        st.binary(min_size=1, max_size=16),
        st.integers(0, 8_000),
    )


# What the fuzzed server's code may hold after 200 inputs of up to 64 KB, and what the
# test process may take at most while they are sent (the inputs alone add up to ~6 MB).
MEMORY_HELD = 256 * 1024
MEMORY_PEAK = 32 * 1024 * 1024
INPUTS = st.one_of(st.binary(max_size=1500), messages(), repeated())


def exchange_udp(sock: socket.socket, port: int, wire: bytes) -> None:
    """`wire`, then a valid query: every reply before its answer answers `wire`."""
    query = hello_query()
    sock.sendto(wire, (LOOPBACK, port))
    sock.sendto(query.to_wire(), (LOOPBACK, port))
    while True:
        reply = sock.recv(65535)
        if reply[:2] == query.id.to_bytes(2, "big"):
            with contextlib.suppress(dns.exception.DNSException):
                response = dns.message.from_wire(reply)
                if response.question == query.question:
                    assert_hello(response)
                    return
        assert len(reply) <= 1232
        assert reply[:2] == wire[:2], (reply, wire[:40])
        assert reply[2] & 0x80  # QR: a response, never an echo


def exchange_tcp(port: int, wire: bytes, framed: bool) -> None:
    """`wire` framed as a query (its length first) or as the raw stream, then a valid query
    on the same connection if it is still open, or on a new one."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        try:
            if framed:
                query = hello_query()
                length = min(len(wire), 65535).to_bytes(2, "big")
                sock.sendall(length + wire[:65535] + query.to_wire(prepend_length=True))
                while True:
                    response, _ = dns.query.receive_tcp(sock, expiration=time.time() + 5)
                    if response.id == query.id and response.question == query.question:
                        assert_hello(response)
                        return
            else:
                sock.sendall(wire)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65535):
                    pass
        except (EOFError, ConnectionError, dns.exception.DNSException):
            pass  # the server closed the connection (or answered garbage as such)
    assert_hello(ask_tcp(port))


def test_any_input_leaves_the_server_answering(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        ClusterSetDns(lambda: PLANE) as served,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.settimeout(5)

        @settings(max_examples=200, deadline=None, database=None)
        @given(INPUTS, st.sampled_from(["udp", "tcp", "stream"]))
        def check(wire: bytes, transport: str) -> None:
            if transport == "udp":
                exchange_udp(udp, served.port, wire)
            else:
                exchange_tcp(served.port, wire, framed=transport == "tcp")

        tracemalloc.start()
        try:
            _, before = tracemalloc.get_traced_memory()
            check()
            # Nothing is held for what was sent: every connection is gone, and with it
            # what the server read (the inputs add up to megabytes).
            wait_until(lambda: served.server.tcp_connections == 0, what="the connections closed")
            gc.collect()
            _, peak = tracemalloc.get_traced_memory()
            server_code = [tracemalloc.Filter(True, "*/kontinuum/dns/*")]
            held = tracemalloc.take_snapshot().filter_traces(server_code).statistics("filename")
        finally:
            tracemalloc.stop()
        assert served.server.tcp_clients == 0
        assert sum(stat.size for stat in held) < MEMORY_HELD, held
        assert peak - before < MEMORY_PEAK, (before, peak)
    assert erroneous(caplog.records) == []
