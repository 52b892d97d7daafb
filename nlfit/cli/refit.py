"""``nlfit refit RESULT.json``: re-run a saved fit from its provenance and say whether it agrees."""

from __future__ import annotations

from typing import Annotated

import typer

from nlfit.cli.common import check_outputs, emit, handle_errors
from nlfit.cli.saved import read_result
from nlfit.errors import InputError


@handle_errors
def refit(
    result: Annotated[str, typer.Argument(help="A fit result saved with 'nlfit fit ... --format json' ('-' for stdin).")],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the JSON report to this file (atomically).")] = None,
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="-q: no summary line on stderr.")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Re-run a saved fit from its provenance alone and compare the parameters.

    The data are read again from the paths the result records (for '-', stdin again) and
    must have the same sha256; the options are those recorded. The parameters must agree
    bitwise where nlfit, the versions, the platform, the machine and the device are the same,
    and to a relative 1e-10 elsewhere; the JSON report gives the tolerance and its reason.
    Exit 0 when they agree, 1 when they do not, 2 when the data changed or the result cannot
    be re-run.

    Examples:

      nlfit fit runge.csv -m rational -o fit.json

      nlfit refit fit.json
    """
    from nlfit.io.write import json_text

    check_outputs({"--output": output}, [result])
    payload = read_result(result, "refit")
    saved = payload if isinstance(payload, list) else [payload]
    label = result if result != "-" else "<stdin>"
    plans = [_saved_run(item, label) for item in saved]
    inputs = {name for plan in plans for name in plan["names"]}
    check_outputs({"--output": output}, [result, *sorted(inputs)])  # never over the data the result was fitted to
    if result == "-" and "-" in inputs:
        raise InputError("the fit read its data from stdin, which now carries the result: give the result as a file and pipe the data in")
    first = plans[0]
    if any(plan["records"] != first["records"] or plan["command"] != first["command"] for plan in plans[1:]):
        raise InputError(f"{label}: its fits were not made from the same data with the same data options (not one 'nlfit fit --method a,b')")
    dataset = _read(first)  # once for all the methods of a list (stdin can be read once)
    reports = [_refit_one(item, plan, dataset, label) for item, plan in zip(saved, plans, strict=True)]
    agree = all(report["agree"] for report in reports)
    if quiet < 1:
        from nlfit.report.console import plain_line

        for report in reports:
            verdict = "agrees" if report["agree"] else "DIFFERS"
            tol = "bitwise" if report["tolerance"] == 0 else f"to {report['tolerance']:g}"
            plain_line(f"nlfit: refit {verdict} with the saved fit ({report['method']}; {tol}: {report['reason']})")
    emit(json_text(reports if isinstance(payload, list) else reports[0]), output)
    raise typer.Exit(0 if agree else 1)


def _saved_run(item, label: str) -> dict:
    """What re-running ``item`` needs, checked: the input records and the paths to read, the
    command's data options and the fit's options (``FitOptions``), each bad value one
    InputError or OptionError (exit 2), as nlfit writes none of them."""
    from nlfit import provenance
    from nlfit.options import FitOptions
    from nlfit.schema import check_option

    if not isinstance(item, dict) or not isinstance(item.get("provenance"), dict) or not isinstance(item.get("params"), dict):
        raise InputError(f"{label} has no provenance to re-run it from (saved by 'nlfit fit ... -f json' from nlfit 0.1.0 on)")
    if "group" in item:
        raise InputError(f"{label} is a row of a grouped fit: refit re-runs single fits")
    saved = item["provenance"]
    records = saved.get("inputs")
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise InputError(f"{label}: its provenance lists no inputs to read again")
    for r in records:
        if not isinstance(r.get("path"), str) or not isinstance(r.get("sha256"), str) or not isinstance(r.get("absolute"), str | None):
            raise InputError(f"{label}: an input of its provenance has no path or sha256 (an --engine dask result, or an edited file)")
    for name, entry in item["params"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float | None) or isinstance(entry.get("value"), bool):
            raise InputError(f"{label}: params.{name} is not a saved parameter ({{'value': number}})")
    options = saved.get("options")
    if not isinstance(options, dict):
        raise InputError(f"{label}: its provenance has no options")
    options = dict(options)
    command = {key: check_option(key, options.pop(key, None)) for key in provenance.DATA_OPTIONS}
    if command.get("group_by"):
        raise InputError(f"{label} is a grouped fit: refit re-runs single fits")
    names = [r["path"] if r.get("absolute") is None else r["absolute"] for r in records]
    return {"records": records, "names": names, "command": command, "options": FitOptions.of(options), "saved": saved}


def _read(plan: dict):
    """The saved run's data, read again from the recorded paths (stdin for ``-``); a changed
    input is one line naming it and both hashes (exit 2), found before anything parses it."""
    from nlfit.io.read import read_dataset

    command = plan["command"]
    x = command.get("x")
    return read_dataset(
        plan["names"],
        x_columns=[c.strip() for c in str(x).split(",")] if x else None,
        y_column=command.get("y"),
        sigma_column=command.get("sigma"),
        formula=command.get("model"),
        sep=command.get("sep"),
        missing=command.get("missing") or "drop",
        expected=plan["records"],
    )


def _refit_one(item: dict, plan: dict, dataset, label: str) -> dict:
    from nlfit import provenance
    from nlfit.fitting import fit
    from nlfit.io.write import json_number
    from nlfit.options import parse_p0

    command, options, records = plan["command"], plan["options"], plan["records"]
    model = command.get("model") or dataset.formula  # a NIST file's own model when none was named
    if not model:
        raise InputError(f"{label}: its provenance names no model")
    again = fit(dataset, model, p0=parse_p0(command.get("p0")), options=options, file_start=command.get("start"))
    current = provenance.build(records, command, options)  # the inputs as saved: the same bytes, checked
    tolerance, reason = provenance.tolerance(plan["saved"], current)
    params, agree = {}, True
    for i, name in enumerate(again.param_names):
        before = (item["params"].get(name) or {}).get("value")
        after = json_number(again.params[i])
        if before is None or after is None:
            same = before is None and after is None
            difference = None
        else:
            difference = abs(after - before) / abs(before) if before else abs(after)
            same = after == before if tolerance == 0 else difference <= tolerance
        agree &= same
        params[name] = {"saved": before, "refit": after, "relative_difference": difference, "agrees": same}
    missing = set(item["params"]) - set(again.param_names)
    if missing:
        raise InputError(f"{label}: the re-run has no parameter(s) {', '.join(sorted(missing))}: the model changed")
    return {
        "agree": agree,
        "tolerance": tolerance,
        "reason": reason,
        "method": options.method,
        "status": {"saved": item.get("status"), "refit": again.status.label},
        "params": params,
        "provenance": current,
    }
