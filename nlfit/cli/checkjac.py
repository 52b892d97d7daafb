"""``nlfit check-jac DATA --model ...``: the Jacobian by AD and by finite differences, compared."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from nlfit.cli.common import emit, handle_errors, stdout_is_terminal
from nlfit.errors import OptionError
from nlfit.report.formats import NAMES as FORMATS


@handle_errors
def check_jac(
    data: Annotated[str, typer.Argument(help="CSV file, '-' for stdin, or a NIST .dat file.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model specification or formula.")] = None,
    p0: Annotated[str | None, typer.Option("--p0", help="Where to compare: '1,0,10' or 'b=1.9' (default: the model's start).")] = None,
    x: Annotated[str | None, typer.Option("--x", help="Predictor column(s).")] = None,
    y: Annotated[str | None, typer.Option("--y", help="Response column.")] = None,
    sep: Annotated[str | None, typer.Option("--sep", help="Delimiter: , ; tab space (runs of blanks) or one character. Default: detected.")] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help=f"{' | '.join(FORMATS)} (default table).")] = "table",
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
    from nlfit.options import parse_p0
    from nlfit.report.formats import choose
    from nlfit.start import choose_start

    chosen = choose(output_format)
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

    padded, problem, rows, columns = _problem(built, dataset, params)
    report = derivatives.compare(jnp.asarray(padded), problem, rows, columns)
    names = list(built.param_names)
    from nlfit.io.write import json_number as number

    payload = {
        "params": dict(zip(names, params.tolist(), strict=True)),
        "residuals": int(len(dataset.y)),
        "cond": number(report["cond"]),
        "nonfinite": {
            mode: {"count": len(found), "entries": [{"row": int(r) + 1, "param": names[c]} for r, c in found[:NONFINITE_SHOWN]]}
            for mode, found in report["nonfinite"].items()
        },
        "differences": {
            mode: {name: {"abs": number(d["abs"][i]), "rel": number(d["rel"][i])} for i, name in enumerate(names)} for mode, d in report["differences"].items()
        },
        "note": "fd: forward differences, step 1e-8(1+|p|) (Walker & Pernice); central: step 6e-6(1+|p|); rev/fwd: AD",
    }
    emit(chosen.jacobian(payload, color=stdout_is_terminal()), None)
    if any(len(found) for found in report["nonfinite"].values()):
        raise typer.Exit(1)  # the check ran and found an inf or NaN entry


NONFINITE_SHOWN = 10  # non-finite entries listed by position; the rest are counted


def _problem(model, dataset, params):
    """(padded params, problem, real rows, the model's columns): a formula small enough for its
    tape (``nlfit.models.tape.runner_for``) as its padded tape problem, so a new formula
    compiles nothing (the rows padded as a fit pads them, with sigma = inf); any other model
    as it is."""
    import dataclasses

    import numpy as np

    from nlfit.models import tape
    from nlfit.numerics import padded_size
    from nlfit.problem import make_problem

    problem = make_problem(model, dataset)
    rows = len(problem.y)
    width = padded_size(rows)
    taped = tape.runner_for(model, width)
    if taped is None:
        return params, problem, None, None
    static, program = taped
    extra = width - rows

    def pad(values, fill=None):
        values = np.asarray(values)
        more = np.repeat(values[:1], extra, axis=0) if fill is None else np.full((extra, *values.shape[1:]), fill)
        return np.concatenate([values, more]) if rows else values

    infinite = np.full(len(params), np.inf)
    problem = dataclasses.replace(
        problem, x=pad(problem.x), y=pad(problem.y), sigma=pad(problem.sigma, np.inf), model=static, tape=program.arrays(),
        lower=static.pad(-infinite), upper=static.pad(infinite),
    )  # fmt: skip
    return static.pad(params), problem, rows, static.shown
