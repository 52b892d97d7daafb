"""``nlfit models`` and ``nlfit methods``: what can be fitted and how (no JAX import). rich
is imported by the commands, not here: every command imports this module to register them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlfit.cli.common import handle_errors

if TYPE_CHECKING:
    from rich.console import Console


def _console() -> Console:
    from nlfit.cli.common import stdout_console

    return stdout_console()


@handle_errors
def models() -> None:
    """List the built-in models and the formula syntax."""
    from nlfit.models.registry import BUILTIN_MODELS
    from nlfit.report.console import plain_table

    table = plain_table()
    for column in ("model", "parameters", "description"):
        table.add_column(column)
    for info in BUILTIN_MODELS.values():
        table.add_row(info.syntax, info.parameters, info.description)
    console = _console()
    console.print(table)
    from nlfit.models.named import listing

    named = plain_table()
    for column in ("named model", "formula", "parameters", "start rule [source]"):
        named.add_column(column, overflow="fold")  # a long formula wraps, never cut to "..."
    for row in listing():
        named.add_row(*row)
    console.print("\nNamed models (R's, Prism's and lmfit's names; each computes its own start; add them: -m 'gaussian+gaussian+linear'):")
    console.print(named)


@handle_errors
def methods() -> None:
    """The method x globalization matrix, one line per cell (* marks the default)."""
    from nlfit.solvers.catalog import (
        CELL_DESCRIPTIONS,
        DEFAULT_GLOBALIZATION,
        GLOBALIZATIONS,
        METHOD_DESCRIPTIONS,
        METHODS,
    )

    console = _console()
    for method in METHODS:
        console.print(f"[bold]{method}[/bold]: {METHOD_DESCRIPTIONS[method]}")
        for globalization in GLOBALIZATIONS:
            mark = "*" if DEFAULT_GLOBALIZATION[method] == globalization else " "
            console.print(f"  {mark} {globalization:<13} {CELL_DESCRIPTIONS[(method, globalization)]}")
