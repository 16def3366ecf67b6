"""Failures an operator causes and can fix, as opposed to bugs."""

from __future__ import annotations

import errno


class OperatorError(Exception):
    """An expected failure: its message says what went wrong and what to do about it, in
    one sentence. The `kontinuum` command prints it as one line and exits 1, never with a
    traceback."""


def listen_error(error: OSError, address: str, option: str) -> OperatorError:
    """What a failure to listen on `address` (given as `option`) means to an operator."""
    if error.errno is None and isinstance(error.__cause__, OSError):
        error = error.__cause__  # uvloop's "could not bind", caused by the bind's own error
    if error.errno == errno.EADDRINUSE:
        return OperatorError(
            f"address {address} is in use: another process listens there; stop it or "
            f"choose another {option}"
        )
    if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return OperatorError(
            f"cannot listen on {address}: no interface of this host has that address; "
            f"choose another {option}"
        )
    if error.errno == errno.EACCES:
        return OperatorError(
            f"cannot listen on {address}: permission denied (ports below 1024 need "
            f"privileges); choose another {option}"
        )
    reason = error.strerror or str(error)
    return OperatorError(f"cannot listen on {address}: {reason}; check {option}")


def write_error(error: OSError, path: object, option: str) -> OperatorError:
    """What a failure to write `path` (given as `option`) means to an operator."""
    reason = error.strerror or str(error)
    return OperatorError(f"cannot write {error.filename or path}: {reason}; check {option}")
