"""Failures an operator causes and can fix, as opposed to bugs."""

from __future__ import annotations


class OperatorError(Exception):
    """An expected failure: its message says what went wrong and what to do about it, in
    one sentence. The `kontinuum` command prints it as one line and exits 1, never with a
    traceback."""


def operator_listen_error(error: OSError, address: str, option: str) -> OperatorError:
    """What a failure to listen on `address` (given as `option`) means to an operator."""
    # Imported here: the `kontinuum` command loads gRPC only for the verbs that use it.
    from kontinuum.xds.listen import ListenError
    from kontinuum.xds.listen import listen_error as reason_of

    if isinstance(error, ListenError):  # already said what is wrong
        return cannot_listen(address, option, error.reason)
    if error.errno is None and isinstance(error.__cause__, OSError):
        error = error.__cause__  # uvloop's "could not bind", caused by the bind's own error
    return cannot_listen(address, option, reason_of(address, error).reason)


def cannot_listen(address: str, option: str | None, reason: str) -> OperatorError:
    where = f"{address} ({option})" if option else address
    return OperatorError(f"cannot listen on {where}: {reason}")


def write_error(error: OSError, path: object, option: str) -> OperatorError:
    """What a failure to write `path` (given as `option`) means to an operator."""
    reason = error.strerror or str(error)
    return OperatorError(f"cannot write {error.filename or path}: {reason}; check {option}")
