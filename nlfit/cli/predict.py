"""``nlfit predict RESULT.json``: model values with confidence and prediction bands, as CSV."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated

import typer

from nlfit.cli.common import check_outputs, emit, handle_errors
from nlfit.errors import InputError, OptionError
from nlfit.options import parse_number_list

MAX_POINTS = 10_000_000  # --range evaluates the model and its Jacobian at this many points at most


@handle_errors
def predict(
    result: Annotated[str, typer.Argument(help="A fit result saved with 'nlfit fit ... --format json' ('-' for stdin).")],
    data: Annotated[str | None, typer.Option("--data", help="CSV with the predictor column(s) of the fit.")] = None,
    sep: Annotated[str | None, typer.Option("--sep", help="Delimiter of --data: , ; tab space (runs of blanks) or one character. Default: detected.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Comma-separated x values, e.g. 0,0.5,1.")] = None,
    x_range: Annotated[str | None, typer.Option("--range", help="START:STOP:N, N evenly spaced x values.")] = None,
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

    from nlfit.cli.generate import csv_text
    from nlfit.predict import predict_saved as compute
    from nlfit.schema import check_fit_result

    payload = read_result(result)
    if conf_level is not None and not 0 < conf_level < 1:
        raise OptionError(f"--conf-level must be between 0 and 1; got {conf_level}")
    saved = check_fit_result(payload, f"fit result {'<stdin>' if result == '-' else result}")
    x_names = saved.x_names
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


def read_result(result: str, command: str = "predict"):
    """The saved fit result at path ``result`` ('-': stdin), parsed (``parse_result``) for
    ``command`` (named in the message about grouped rows)."""
    try:
        if result == "-" and sys.stdin is None:
            raise InputError("cannot read the fit result from stdin: it is closed")
        if result == "-":
            text = sys.stdin.read()
        else:
            with open(result, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise InputError(f"cannot read fit result {result}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{result} is not a text (UTF-8) file") from None
    return parse_result(text, result, command)


def parse_result(text: str, result: str, command: str = "predict"):
    """The JSON of a fit result. The NDJSON of ``--group-by`` (one fit per line) is one fit
    per group: a single line is read as that fit, several are an error that says what to do.
    A number JSON does not have (NaN, Infinity, or one beyond the range of a double) is an
    error naming its key: nlfit writes null for those, so the file was edited or written
    elsewhere, and no saved number is used that is not finite."""
    try:
        payload = json.loads(text)
    except RecursionError:
        raise InputError(f"{result} is not a fit result (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            lines = [line for line in text.splitlines() if line.strip()]
            try:
                rows = [json.loads(line) for line in lines]
            except (ValueError, RecursionError):
                rows = []
            if len(rows) > 1 and all(isinstance(row, dict) for row in rows):
                if command == "refit":
                    raise InputError(f"{result} holds {len(rows)} rows of a grouped fit (the NDJSON of --group-by): refit re-runs single fits") from None
                raise InputError(
                    f"{result} holds {len(rows)} fit results, one per line (the NDJSON of --group-by); "
                    f"{command} takes one: save the line of one group to its own file, e.g. head -n 1 {result} > one.json"
                ) from None
        raise InputError(f"{result} is not JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{result} is not a fit result ({exc})") from None
    found = _nonfinite(payload, "")
    if found is not None:
        where, value = found
        what = "NaN" if math.isnan(value) else f"{'-' if value < 0 else ''}Infinity (or a number beyond the range of a double)"
        raise InputError(f"{result}: '{where}' is {what}; a saved result holds finite numbers or null")
    return payload


def _nonfinite(value, where: str):
    """(key path, value) of the first float in ``value`` that is not finite, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "(the whole file)", value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _nonfinite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None
