"""``nlfit predict RESULT.json``: model values with confidence and prediction bands, as CSV."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from nlfit.cli.common import check_outputs, csv_text, emit, handle_errors
from nlfit.cli.saved import parse_result as parse_result  # the old name, read by the tests
from nlfit.cli.saved import read_result
from nlfit.errors import OptionError
from nlfit.options import parse_number_list

MAX_POINTS = 10_000_000  # --range evaluates the model and its Jacobian at this many points at most


@handle_errors
def predict(
    result: Annotated[str, typer.Argument(help="A fit result saved with 'nlfit fit ... --format json' ('-' for stdin).")],
    data: Annotated[str | None, typer.Option("--data", help="CSV with the predictor column(s) of the fit.")] = None,
    sep: Annotated[str | None, typer.Option("--sep", help="Delimiter of --data: , ; tab space (runs of blanks) or one character. Default: detected.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Comma-separated x values, e.g. 0,0.5,1.")] = None,
    x_range: Annotated[str | None, typer.Option("--range", help="START:STOP:N, N evenly spaced x values.")] = None,
    y_values: Annotated[
        str | None,
        typer.Option("--y", help="Comma-separated y values: the x where the fitted curve equals each (one predictor; in the fitted x range or --range)."),
    ] = None,
    conf_level: Annotated[float | None, typer.Option("--conf-level", help="Band level (default: the fit's).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the CSV to this file (atomically).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Evaluate a fitted model at new x, with confidence and prediction bands (CSV on stdout).

    Examples:

      nlfit fit runge.csv -m rational -f json -o fit.json

      nlfit predict fit.json --range=-1:1:5

      nlfit predict fit.json --at 0,0.5 --conf-level 0.99
    """
    check_outputs({"--output": output}, [result, data or ""])
    import numpy as np

    from nlfit.predict import predict_saved as compute
    from nlfit.schema import check_fit_result

    payload = read_result(result)
    if conf_level is not None and not 0 < conf_level < 1:
        raise OptionError(f"--conf-level must be between 0 and 1; got {conf_level}")
    saved = check_fit_result(payload, f"fit result {'<stdin>' if result == '-' else result}")
    x_names = saved.x_names
    if y_values is not None:
        return _inverse(saved, y_values, x_range, data, at, conf_level, output)
    chosen = [o for o in (data, at, x_range) if o is not None]
    if len(chosen) != 1:
        raise OptionError("give exactly one of --data FILE, --at LIST or --range START:STOP:N")
    if data is not None:
        from nlfit.io.read import read_dataset

        # Only the predictor columns are needed; the response column is not.
        # A missing x is an error (each output row answers an input row).
        frame_x = read_dataset(data, x_columns=x_names, y_column=x_names[0], sep=sep, missing="error").x
    elif at is not None:
        frame_x = np.array(parse_number_list(at, "--at"))
        if frame_x.size == 0:
            raise OptionError("--at needs at least one value")
    else:
        parts = x_range.split(":")
        if len(parts) != 3:
            raise OptionError(f"--range must be START:STOP:N, e.g. -1:1:11; got '{x_range}'")
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            raise OptionError(f"--range must be START:STOP:N, e.g. -1:1:11; got '{x_range}'") from None
        if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(stop - start)):
            raise OptionError(f"--range needs finite START and STOP whose difference is finite; got '{x_range}'")
        if not 1 <= count <= MAX_POINTS:
            raise OptionError(f"--range needs 1 <= N <= {MAX_POINTS:,}; got {count:,}")
        frame_x = np.linspace(start, stop, count)
    if len(x_names) > 1 and frame_x.ndim == 1:
        raise OptionError(f"this model has {len(x_names)} predictors ({', '.join(x_names)}): use --data FILE")
    columns = compute(saved, frame_x, conf_level)
    table = {name: (frame_x if frame_x.ndim == 1 else frame_x[:, i]) for i, name in enumerate(x_names)}
    table.update(columns)
    emit(csv_text(table), output)


def _inverse(saved, y_values: str, x_range: str | None, data, at, conf_level, output) -> None:
    """predict --y: the x where the curve equals each value (``nlfit.predict.inverse``)."""
    from nlfit.predict import inverse

    if data is not None or at is not None:
        raise OptionError("--y finds x for given y values: it takes no --data or --at (--range START:STOP:N sets where to look)")
    if len(saved.x_names) != 1 or getattr(saved.model, "groups", None) is not None:
        raise OptionError("--y needs a fit of one predictor (not several, nor a global fit)")
    values = parse_number_list(y_values, "--y")
    if not values or not all(math.isfinite(v) for v in values):
        raise OptionError("--y needs finite numbers, e.g. --y 0.5,1.2")
    if x_range is not None:
        parts = x_range.split(":")
        try:
            low, high = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise OptionError(f"--range must be START:STOP[:N]; got '{x_range}'") from None
    elif saved.x_range is not None:
        low, high = saved.x_range
    else:
        raise OptionError("the fit result does not record its x range (data.x_range): give --range START:STOP to say where to look")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise OptionError(f"--y looks between {low:g} and {high:g}: give START < STOP, both finite")
    columns, missing = inverse(saved, values, low, high, conf_level)
    if missing:
        from nlfit.report.console import plain_line

        shown, which = ", ".join(f"{v:g}" for v in missing), "it" if len(missing) == 1 else "them"
        plain_line(f"nlfit: warning: the fitted curve does not reach y = {shown} for x in [{low:g}, {high:g}]: no row for {which}")
    name = saved.x_names[0]
    table = {saved.y_name: columns["given"], name: columns["x"], "stderr": columns["stderr"], f"{name}_lo": columns["lo"], f"{name}_hi": columns["hi"]}
    emit(csv_text(table), output)
    if not len(columns["x"]):
        raise typer.Exit(1)
