"""How the `kontinuum` command speaks to a terminal: an expected error as one line on
stderr, counts in words, and tables that fit the terminal without cutting a name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from kontinuum.errors import OperatorError


def run(command: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run `command` and return its exit code. An expected error (a refused option, an
    `OperatorError`) is printed as one line on stderr; bugs keep their traceback."""
    try:
        code = command(args=args, standalone_mode=False)
    except OperatorError as failed:
        _error(str(failed))
        return 1
    except Exception as failed:
        # Typer raises click's exceptions, or those of its own copy of click: by name.
        kinds = {kind.__name__ for kind in type(failed).__mro__}
        if "NoArgsIsHelpError" in kinds:  # `kontinuum` alone: its help, on stdout as before
            typer.echo(failed.format_message())  # type: ignore[attr-defined]
            return int(failed.exit_code)  # type: ignore[attr-defined]
        if "UsageError" in kinds:
            context = failed.ctx  # type: ignore[attr-defined]
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            _error(failed.format_message().rstrip(".") + hint)  # type: ignore[attr-defined]
            return int(failed.exit_code)  # type: ignore[attr-defined]
        if "ClickException" in kinds:
            _error(failed.format_message())  # type: ignore[attr-defined]
            return int(failed.exit_code)  # type: ignore[attr-defined]
        if "Abort" in kinds:
            _error("aborted")
            return 1
        raise
    return code if isinstance(code, int) else 0


def _error(message: str) -> None:
    typer.echo("error: " + " ".join(message.split()), err=True)


def fitting(console: Console, wide: Table, *narrower: Table) -> Table:
    """`wide` if every cell fits on one line of the console, else the first of `narrower`
    whose words all fit whole (cells wrap between words), else the last of them, folding
    what is too long (give their columns overflow="fold": never an ellipsis)."""
    natural = Measurement.get(console, console.options.update_width(1_000_000), wide)
    if natural.maximum <= console.width or not narrower:
        return wide
    return next((t for t in narrower if _words_whole(console, t)), narrower[-1])


def longest_word(cells: Iterable[str]) -> int:
    """The width of the longest word of `cells`."""
    return max((len(word) for cell in cells for word in cell.split()), default=0)


def _words_whole(console: Console, table: Table, last_at_least: int = 12) -> bool:
    """Fix every column of `table` but the last at the width of its longest word, if that
    leaves the last column (free text) `last_at_least`; whether it did."""
    named = table.columns[:-1]
    widths = [longest_word([str(c.header), *(str(cell) for cell in c.cells)]) for c in named]
    borders_and_padding = len(table.columns) + 1 + 2 * len(table.columns)
    if sum(widths) + borders_and_padding + last_at_least > console.width:
        return False
    for column, width in zip(named, widths, strict=True):
        column.width = width
    return True
