"""``nlfit refit RESULT.json``: re-run a saved fit from its provenance and say whether it agrees."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nlfit.cli.common import check_outputs, emit, handle_errors
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
    check_outputs({"--output": output}, [result])
    from nlfit.cli.predict import read_result

    payload = read_result(result)
    saved = payload if isinstance(payload, list) else [payload]
    for item in saved:
        if not isinstance(item, dict) or not isinstance(item.get("provenance"), dict) or not isinstance(item.get("params"), dict):
            raise InputError(f"{result} has no provenance to re-run it from (saved by 'nlfit fit ... -f json' from nlfit 0.1.0 on)")
        if "group" in item:
            raise InputError(f"{result} is a row of a grouped fit: refit re-runs single fits")
    reports = [_refit_one(item, result if result != "-" else "<stdin>") for item in saved]
    agree = all(report["agree"] for report in reports)
    if quiet < 1:
        from nlfit.report.console import plain_line

        for report in reports:
            verdict = "agrees" if report["agree"] else "DIFFERS"
            tol = "bitwise" if report["tolerance"] == 0 else f"to {report['tolerance']:g}"
            plain_line(f"nlfit: refit {verdict} with the saved fit ({report['method']}; {tol}: {report['reason']})")
    emit(json.dumps(reports if isinstance(payload, list) else reports[0], indent=2, allow_nan=False) + "\n", output)
    raise typer.Exit(0 if agree else 1)


def _refit_one(item: dict, label: str) -> dict:
    from nlfit import provenance
    from nlfit.fitting import fit
    from nlfit.io.read import read_dataset
    from nlfit.io.write import json_number
    from nlfit.options import FitOptions, parse_p0

    saved = item["provenance"]
    records = saved.get("inputs") or []
    if not records or not all(isinstance(r, dict) and r.get("sha256") for r in records):
        raise InputError(f"{label}: its provenance lists no input with a sha256 to read again")
    names = [r["path"] if r.get("absolute") is None else r["absolute"] for r in records]
    options = dict(saved.get("options") or {})
    command = {key: options.pop(key, None) for key in provenance.DATA_OPTIONS}
    x = command.get("x")
    dataset = read_dataset(
        names,
        x_columns=[c.strip() for c in str(x).split(",")] if x else None,
        y_column=command.get("y"),
        sigma_column=command.get("sigma"),
        formula=command.get("model"),
        sep=command.get("sep"),
        missing=command.get("missing") or "drop",
    )
    for record, now in zip(records, dataset.inputs, strict=True):
        if record["sha256"] != now["sha256"]:
            sizes = f"{now['size']} bytes, were {record.get('size')}"
            raise InputError(f"{record['path']} changed since the fit: sha256 {record['sha256']} when fitted, {now['sha256']} now ({sizes})")
    plan = FitOptions.of(options)
    again = fit(dataset, command["model"], p0=parse_p0(command.get("p0")), options=plan, file_start=command.get("start"))
    current = provenance.build(dataset.inputs, command, plan)
    tolerance, reason = provenance.tolerance(saved, current)
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
        "method": plan.method,
        "status": {"saved": item.get("status"), "refit": again.status.label},
        "params": params,
        "provenance": current,
    }
