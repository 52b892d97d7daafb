"""``nlfit compare A.json B.json [C.json ...]``: models fitted to the same data, side by side
(``nlfit.compare``): information criteria and Akaike weights for any models, the extra-sum-
of-squares F test for nested ones. A table on a terminal, JSON for pipes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nlfit.cli.common import check_outputs, emit, handle_errors, stdout_is_terminal
from nlfit.errors import OptionError


@handle_errors
def compare(
    results: Annotated[
        list[str], typer.Argument(help="Fit results (nlfit fit -f json), or the NDJSON rows of a grouped fit: two or more.", show_default=False)
    ],
    output_format: Annotated[str | None, typer.Option("--format", "-f", help="table | json. Default: table on a terminal, else json.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the comparison to this file (atomically).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Compare models fitted to the same data: AIC, AICc, BIC, Akaike weights, and for nested
    models (fewer parameters first) the F test of each against the one before, as R's anova().

    Examples:

      nlfit fit lob.csv -m asymp --x age --y height --group-by Seed --share lrc -f json -o shared.json

      nlfit fit lob.csv -m asymp --x age --y height --group-by Seed --share '' -f json -o separate.json

      nlfit compare shared.json separate.json
    """
    chosen = output_format or ("table" if stdout_is_terminal() and not output else "json")
    if chosen not in ("table", "json"):
        raise OptionError(f"--format must be table or json; got '{chosen}'")
    check_outputs({"--output": output}, list(results))
    from nlfit.cli.saved import read_text
    from nlfit.compare import compare as run
    from nlfit.compare import parse

    found = run([parse(read_text(path), path) for path in results])
    if chosen == "json":
        emit(json.dumps(found, indent=2) + "\n", output)
        return
    emit(_table(found), output)


def _table(found: dict) -> str:
    from io import StringIO

    from rich.console import Console

    from nlfit.report.console import plain_table

    table = plain_table()
    for column in ("file", "model", "n", "params", "RSS", "df", "AIC", "AICc", "BIC", "ΔAICc", "weight"):
        table.add_column(column, justify="left" if column in ("file", "model") else "right")
    for row in found["models"]:
        delta = "" if row["delta_aicc"] is None else f"{row['delta_aicc']:.3f}"
        table.add_row(row["file"], row["model"], str(row["n"]), str(row["params"]), f"{row['rss']:.6g}", str(row["dof"]),
                      f"{row['aic']:.3f}", f"{row['aicc']:.3f}", f"{row['bic']:.3f}", delta, f"{row['akaike_weight']:.4f}")  # fmt: skip
    buffer = StringIO()
    Console(file=buffer, no_color=True, width=160).print(table)
    lines = [buffer.getvalue().rstrip("\n")]
    for test in found["f_tests"]:
        a, b = test["models"]
        if test["F"] is None:
            lines.append(f"{a} vs {b}: {test['note']}")
        else:
            lines.append(f"{a} vs {b} (nested): F = {test['F']:.6g} on {test['df'][0]} and {test['df'][1]} df, p = {test['p']:.4g}")
    if found["preferred_by_aicc"]:
        lines.append(f"lowest AICc: {found['preferred_by_aicc']}")
    return "\n".join(lines) + "\n"
