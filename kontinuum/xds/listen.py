"""Listening addresses: one that something already listens on is refused, on one line.

gRPC servers set SO_REUSEPORT by default, so a second server on a busy port starts and the
kernel shares the connections between the two: two control planes would each serve part
of the fleet. `XdsServer` turns that off; `check_free` says what is wrong before gRPC
tries (gRPC itself only says that it failed, and logs more on its own).
"""

from __future__ import annotations

import errno
import socket

_REASONS = {
    errno.EADDRINUSE: "the address is in use (another kontinuum?): stop what listens there, "
    "or choose another address",
    errno.EACCES: "permission denied (a port below 1024 needs privileges): choose another port",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
}
_NOT_TCP = ("unix:", "unix-abstract:", "vsock:")


class ListenError(OSError):
    """An address a server cannot listen on, and why: one line for the operator."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


def listen_error(address: str, error: OSError) -> ListenError:
    """The `ListenError` of an OSError binding `address` raised."""
    reason = _REASONS.get(error.errno or 0) or error.strerror or str(error)
    return ListenError(address, reason)


def check_free(address: str) -> None:
    """Raise `ListenError` when `address` (`host:port`, `[v6]:port`) cannot be listened on,
    e.g. because something listens there already. Port 0 and addresses of other forms
    (`unix:`) are left to the server."""
    host, port = _host_port(address)
    if not port:
        return
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ListenError(address, f"cannot resolve {host!r}: {error.strerror}") from None
    failures: list[OSError] = []
    for family, kind, protocol, _, where in found:
        with socket.socket(family, kind, protocol) as probe:
            # As gRPC and asyncio bind: a port left in TIME_WAIT is free, a listened one not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise listen_error(address, error) from None
                failures.append(error)  # e.g. no IPv6 here: the other addresses may do
    if failures and len(failures) == len(found):
        raise listen_error(address, failures[0])


def _host_port(address: str) -> tuple[str, int]:
    """The host and port of a TCP address; port 0 for anything else."""
    host, colon, port = address.rpartition(":")
    if address.startswith(_NOT_TCP) or not (colon and port.isascii() and port.isdigit()):
        return "", 0
    return host.strip("[]"), int(port)
