"""The `kontinuum` command's options and the run of a serving verb: addresses and ports
checked before a command runs, logging, the state directory's default."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from kontinuum.errors import cannot_listen


def _address(value: str | None) -> str | None:
    """A HOST:PORT option's value, its port between 1 and 65535 (None: not given)."""
    from kontinuum.bootstrap import split_address

    if value is None:
        return value
    try:
        _, port = split_address(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if port == 0:
        raise typer.BadParameter(f"the port of {value!r} is not between 1 and 65535")
    return value


def _address_or_none(value: str | None) -> str | None:
    """As `_address`, or `none`."""
    return value if value is not None and value.lower() == "none" else _address(value)


def address_option(name: str, help: str, *, none: bool = False) -> Any:
    """An option naming a HOST:PORT (or, with `none`, the word none), checked before the
    command runs."""
    if none:
        return typer.Option(name, help=help, metavar="HOST:PORT|none", callback=_address_or_none)
    return typer.Option(name, help=help, metavar="HOST:PORT", callback=_address)


def port_option(name: str, help: str, *, zero: bool = False) -> Any:
    """An option naming a port: 1 to 65535 (0 too, where it means any free port)."""
    return typer.Option(name, help=help, metavar="PORT", min=0 if zero else 1, max=65535)


XdsAddress = Annotated[str, address_option("--xds-address", "The xDS (gRPC) server.")]
AdminAddress = Annotated[
    str, address_option("--admin-address", "Where to serve /healthz, /readyz and /metrics.")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def default_state_dir() -> Path:
    """Where XDG puts state that outlives a process; in a container, mount a volume there."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "kontinuum"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def serve_until_stopped(main: Coroutine[Any, Any, None], addresses: dict[str, str | None]) -> None:
    """Run a serving command until Ctrl-C or SIGTERM. An address it cannot listen on
    (`addresses`: option -> address), such as one another `kontinuum serve` holds, ends it
    with one line naming the address and exit code 1: before anything starts when that is
    already so."""
    from kontinuum.app import run_event_loop
    from kontinuum.xds import ListenError
    from kontinuum.xds.listen import check_free

    options = {address: option for option, address in addresses.items() if address}
    try:
        for address in options:
            check_free(address)
        with contextlib.suppress(KeyboardInterrupt):
            run_event_loop(main)
    except ListenError as error:
        main.close()  # not started, if the check refused
        raise cannot_listen(error.address, options.get(error.address), error.reason) from None
