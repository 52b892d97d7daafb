"""``nlfit check-jac DATA --model ...``: the Jacobian by AD and by finite differences, compared."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from nlfit.cli.common import emit, handle_errors
from nlfit.errors import OptionError


@handle_errors
def check_jac(
    data: Annotated[str, typer.Argument(help="CSV file, '-' for stdin, or a NIST .dat file.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model specification or formula.")] = None,
    p0: Annotated[str | None, typer.Option("--p0", help="Where to compare: '1,0,10' or 'b=1.9' (default: the model's start).")] = None,
    x: Annotated[str | None, typer.Option("--x", help="Predictor column(s).")] = None,
    y: Annotated[str | None, typer.Option("--y", help="Response column.")] = None,
    sep: Annotated[str | None, typer.Option("--sep", help="Delimiter: , ; tab space (runs of blanks) or one character. Default: detected.")] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help="table | json.")] = "table",
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Compare the Jacobian at p0 by forward mode, reverse mode, forward differences
    (Walker-Pernice step 1e-8(1+|p|)) and central differences.

    For each parameter: the largest absolute difference from forward mode, and relative to
    the column's largest entry; and the condition number of J.

    Example (a nested function, y = cos(y^pi) log(y) applied twice, at 1.9):

      nlfit check-jac point.csv -m "cos((cos(b^pi)*log(b))^pi)*log(cos(b^pi)*log(b)) + 0*x" --p0 b=1.9
    """
    from nlfit.io.read import missing_warning, read_dataset
    from nlfit.models.registry import model_for
    from nlfit.start import choose_start, parse_p0

    if output_format not in ("table", "json"):
        raise OptionError(f"--format must be table or json; got '{output_format}'")
    x_columns = [c.strip() for c in x.split(",")] if x else None
    dataset = read_dataset(data, x_columns=x_columns, y_column=y, formula=model, sep=sep)
    if missing_warning(dataset):
        sys.stderr.write(f"nlfit: warning: {missing_warning(dataset)}\n")
    spec = model or dataset.formula
    if not spec:
        raise OptionError("--model is required for CSV data")
    built = model_for(spec, dataset)
    params, _ = choose_start(built, dataset, parse_p0(p0))

    from nlfit import derivatives
    from nlfit._jax import jnp
    from nlfit.problem import make_problem

    report = derivatives.compare(jnp.asarray(params), make_problem(built, dataset))
    names = list(built.param_names)
    if output_format == "json":
        from nlfit.io.write import json_number as number

        payload = {
            "params": dict(zip(names, params.tolist(), strict=True)),
            "cond": number(report["cond"]),
            "nonfinite": {
                mode: {"count": len(found), "entries": [{"row": int(r) + 1, "param": names[c]} for r, c in found[:NONFINITE_SHOWN]]}
                for mode, found in report["nonfinite"].items()
            },
            "differences": {
                mode: {name: {"abs": number(d["abs"][i]), "rel": number(d["rel"][i])} for i, name in enumerate(names)}
                for mode, d in report["differences"].items()
            },
        }
        emit(json.dumps(payload, indent=2) + "\n", None)
        _exit_if_nonfinite(report)
        return
    from rich.table import Table

    table = Table(title=f"Jacobian check at p0 ({len(dataset.y)} residuals)", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("parameter")
    table.add_column("p0", justify="right")
    for mode in ("rev", "fd", "central"):
        table.add_column(f"{mode} − fwd abs", justify="right")
        table.add_column(f"{mode} − fwd rel", justify="right")
    for i, name in enumerate(names):
        cells = [name, f"{params[i]:.6g}"]
        for mode in ("rev", "fd", "central"):
            d = report["differences"][mode]
            cells += [f"{d['abs'][i]:.2e}", f"{d['rel'][i]:.2e}"]
        table.add_row(*cells)
    from nlfit.cli.common import stdout_console

    console = stdout_console(width=160)
    console.print(table)
    finite = report["cond"] == report["cond"]  # NaN when J has non-finite entries
    console.print(f"condition number of J: {report['cond']:.3e}" if finite else "condition number of J: undefined (non-finite entries)")
    for mode, found in report["nonfinite"].items():
        if len(found):
            where = ", ".join(f"row {int(r) + 1} {names[c]}" for r, c in found[:NONFINITE_SHOWN])
            more = f" and {len(found) - NONFINITE_SHOWN} more" if len(found) > NONFINITE_SHOWN else ""
            console.print(f"non-finite entries by {mode}: {len(found)} ({where}{more})")
    console.print("fd: forward differences, step 1e-8(1+|p|) (Walker & Pernice); central: step 6e-6(1+|p|); rev/fwd: AD")
    _exit_if_nonfinite(report)


NONFINITE_SHOWN = 10  # non-finite entries listed by position; the rest are counted


def _exit_if_nonfinite(report) -> None:
    """Exit 1 when any mode gave an inf or NaN entry: the check ran and found a problem."""
    if any(len(found) for found in report["nonfinite"].values()):
        raise typer.Exit(1)
