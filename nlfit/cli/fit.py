"""``nlfit fit DATA``: fit a model, report to stderr, write the result to stdout or --output."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import numpy as np
import typer

from nlfit.cli.common import check_outputs, emit, handle_errors, load_config, merge, stdout_is_terminal
from nlfit.errors import OptionError, printable
from nlfit.options import DEFAULTS, NAMES, FitOptions, help_text
from nlfit.report.formats import NAMES as FORMATS
from nlfit.schema import OPTIONS

# Options a config file may set: the fit's own (FitOptions) and the command's data, output
# and reporting choices (nlfit.schema.OPTIONS).
CONFIG_KEYS = set(NAMES) | set(OPTIONS)


@handle_errors
def fit(
    data: Annotated[
        list[str],
        typer.Argument(
            help="Data file(s): CSV/TSV/whitespace-separated text, '-' for stdin, or a NIST StRD .dat file. Several files are concatenated (same columns).",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="polynomial:D, chebyshev:D, rational, rational:P/Q, a named model (logistic, fol, 4pl, gaussian+linear...: see 'nlfit models') or a formula.",
        ),
    ] = None,
    x: Annotated[
        str | None,
        typer.Option("--x", help="Predictor column(s), comma-separated names or 1-based numbers. Default: 'x', else the first column."),
    ] = None,
    y: Annotated[str | None, typer.Option("--y", help="Response column (a name, or a 1-based number). Default: 'y', else the next column.")] = None,
    sigma: Annotated[str | None, typer.Option("--sigma", help="Column of per-point standard deviations (weights 1/sigma^2).")] = None,
    sep: Annotated[
        str | None,
        typer.Option("--sep", help="Delimiter: , ; tab space (runs of blanks) or one character. Default: detected."),
    ] = None,
    missing: Annotated[
        str | None,
        typer.Option("--missing", help="drop (default: rows with a missing value in a used column, with a warning) | error."),
    ] = None,
    use_glob: Annotated[bool, typer.Option("--glob", help="Each DATA is a glob pattern that nlfit expands (sorted), e.g. 'runs/*.csv' quoted.")] = False,
    p0: Annotated[str | None, typer.Option("--p0", help="Start: by position '1,0,10' or by name 'c0=1,c2=10'.")] = None,
    start: Annotated[int | None, typer.Option("--start", help="For a NIST .dat file: its start 1 or 2 (default 1).")] = None,
    method: Annotated[str | None, typer.Option("--method", help=help_text("method"))] = None,
    globalization: Annotated[
        str | None,
        typer.Option("--globalization", "-g", help=help_text("globalization")),
    ] = None,
    jac: Annotated[str | None, typer.Option("--jac", help=help_text("jac"))] = None,
    ftol: Annotated[float | None, typer.Option("--ftol", help=help_text("ftol"))] = None,
    xtol: Annotated[float | None, typer.Option("--xtol", help=help_text("xtol"))] = None,
    gtol: Annotated[float | None, typer.Option("--gtol", help=help_text("gtol"))] = None,
    max_iter: Annotated[int | None, typer.Option("--max-iter", help=help_text("max_iter"))] = None,
    step: Annotated[
        float | None,
        typer.Option("--step", help=help_text("step")),
    ] = None,
    momentum: Annotated[
        float | None,
        typer.Option("--momentum", help=help_text("momentum")),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help=help_text("batch_size")),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=help_text("seed"))] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help=help_text("timeout"))] = None,
    output_format: Annotated[str | None, typer.Option("--format", "-f", help=f"{' | '.join(FORMATS)}. Default: table on a terminal, else json.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the result to this file (atomically) instead of stdout.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="TOML file with any of these options; flags win.")] = None,
    conf_level: Annotated[float | None, typer.Option("--conf-level", help=help_text("conf_level"))] = None,
    absolute_sigma: Annotated[bool, typer.Option("--absolute-sigma", help=help_text("absolute_sigma"))] = False,
    factorization: Annotated[
        str | None,
        typer.Option(
            "--factorization",
            help=help_text("factorization"),
        ),
    ] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Fit the model once per value of this column (one vmapped solve); rows out.")] = None,
    share: Annotated[
        str | None,
        typer.Option(
            "--share",
            help="With --group-by: one global fit in which these parameters (comma-separated) are common to all groups and the others "
            "one per group, named NAME[GROUP]; '' shares none (separate curves as one fit).",
        ),
    ] = None,
    intervals: Annotated[
        str | None,
        typer.Option(
            "--intervals",
            help=(
                "wald (default: estimate ± t·stderr) | profile (likelihood-ratio, as R's confint) | bootstrap (percentile, --bootstrap N or 1000) "
                "| bca (bias-corrected and accelerated bootstrap)."
            ),
        ),
    ] = None,
    bootstrap: Annotated[
        int | None, typer.Option("--bootstrap", help="Refit N resamples (one batched solve): JSON 'bootstrap' with percentile intervals; --seed repeats them.")
    ] = None,
    residual_tests: Annotated[
        bool,
        typer.Option(
            "--residual-tests", help="Shapiro-Wilk, runs and lack-of-fit tests of the residuals (JSON residual_tests; a report line when one rejects at 5%)."
        ),
    ] = False,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help=(
                "Weights from the data columns, e.g. '1/y^2' (relative), '1/y' (Poisson): sigma = 1/sqrt(w); "
                "'fitted:1/y^2': y is the fitted curve, weights recomputed until they settle."
            ),
        ),
    ] = None,
    derive: Annotated[
        list[str] | None, typer.Option("--derive", help="NAME=EXPR of the parameters (repeatable), e.g. 't_half=log(2)/k': value and delta-method stderr.")
    ] = None,
    bootstrap_kind: Annotated[
        str | None, typer.Option("--bootstrap-kind", help="residual (default: centred residuals on the fitted curve) | cases (rows).")
    ] = None,
    loss: Annotated[str | None, typer.Option("--loss", help=help_text("loss"))] = None,
    f_scale: Annotated[float | None, typer.Option("--f-scale", help=help_text("f_scale"))] = None,
    bounds: Annotated[str | None, typer.Option("--bounds", help=help_text("bounds"))] = None,
    fix: Annotated[str | None, typer.Option("--fix", help=help_text("fix"))] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="With --group-by: local (default) or dask (needs nlfit[dask]).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="With --engine dask: scheduler address (default: a local cluster).")] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="Use at most N cores (default: every core). The local engine spreads grouped fits and multistarts over them; "
            "with --engine dask and no --scheduler: worker processes of the local cluster, one core each.",
        ),
    ] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Save a picture: FILE.png, .svg or .pdf (needs nlfit[plot]).")] = None,
    starts: Annotated[
        str | None,
        typer.Option("--starts", help=help_text("starts")),
    ] = None,
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="-q: no report on stderr, warnings only; -qq: nothing on stderr.")] = 0,
    progress: Annotated[
        bool, typer.Option("--progress", help="Progress lines on stderr ('nlfit: progress: ...') also when it is not a terminal (logs); not with -qq.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Fit a model to data.

    Examples:

      nlfit fit runge.csv --model rational --method lm

      nlfit fit runge.csv --model chebyshev:11 --format csv

      nlfit fit data/nist/Thurber.dat --model rational:3/3 --start 1

      nlfit fit run1.csv run2.csv -m "a*exp(-b*x)"      (two files, concatenated)

      nlfit fit --glob 'runs/*.dat' --x 1 --y 2 -m "a*exp(-b*x)"
    """
    given = {k: v for k, v in locals().items() if k in CONFIG_KEYS}
    given.update(format=output_format, quiet=quiet or None, absolute_sigma=absolute_sigma or None, progress=progress or None, glob=use_glob or None)
    given["residual_tests"] = residual_tests or None
    from nlfit.schema import check_option

    given["start"] = check_option("start", given["start"])
    given["threads"] = check_option("threads", given["threads"])  # the fit's own options are checked by FitOptions
    options = merge(given, load_config(config, CONFIG_KEYS))
    options["quiet"] = quiet_level(options.get("quiet"))
    plans = fit_options(options)  # every option checked before any data is read
    check_plan(options, plans)
    from nlfit.io.read import expand_sources

    inputs = expand_sources(data, bool(options.get("glob")))  # an output must not be any file read
    output = options.get("output")
    if dask_groups(options) and output_directory(output):
        from nlfit import dask_engine

        dask_engine.check_directory(output)  # -o DIR/: one part file per partition
        output = None
    check_outputs({"--output": output, "--plot": options.get("plot")}, [*inputs, config])
    from nlfit import cores

    with cores.limited(options.get("threads")):  # --threads N: at most N cores (nlfit.cores)
        run_fit(inputs, {**options, "glob": False}, plans)  # the patterns are expanded once, here


def check_plan(options: dict, plans: list[FitOptions]) -> None:
    """The checks of the command line that need no data, once for every executor."""
    grouped = bool(options.get("group_by"))
    engine = options.get("engine") or "local"
    if (options.get("engine") or options.get("scheduler")) and not grouped:
        raise OptionError("--engine and --scheduler apply to batched fits (--group-by)")
    if engine not in ("local", "dask"):
        raise OptionError(f"--engine must be local or dask; got '{engine}'")
    if options.get("scheduler") and engine != "dask":
        raise OptionError("--scheduler needs --engine dask")
    shared = options.get("share") is not None
    if shared and not grouped:
        raise OptionError("--share needs --group-by COL: the column whose groups share the parameters")
    if shared and engine == "dask":
        raise OptionError("--share fits one global problem: it runs with the local engine, not --engine dask")
    if (options.get("intervals") or "wald") not in ("wald", "profile", "bootstrap", "bca"):
        raise OptionError(f"--intervals must be wald, profile, bootstrap or bca; got '{printable(options.get('intervals'))}'")
    if (options.get("bootstrap_kind") or "residual") not in ("residual", "cases"):
        raise OptionError(f"--bootstrap-kind must be residual or cases; got '{printable(options.get('bootstrap_kind'))}'")
    if grouped and (options.get("intervals") in ("profile", "bootstrap", "bca") or options.get("bootstrap")) and not shared:
        raise OptionError("--intervals profile|bootstrap|bca and --bootstrap apply to single and global fits, not to --group-by rows")
    if grouped and options.get("plot") and not shared:
        raise OptionError("--plot is not available with --group-by (only with --share, a global fit)")
    if grouped and len(plans) > 1 and not shared:
        raise OptionError("--group-by takes one --method")
    if engine == "dask":
        require_model(options.get("model"))


def require_model(spec: str | None) -> str:
    if not spec:
        raise OptionError("--model is required for CSV data (see 'nlfit models')")
    return spec


def dask_groups(options: dict) -> bool:
    """--group-by with --engine dask: the files are read and fitted on the workers."""
    return bool(options.get("group_by")) and options.get("engine") == "dask"


def output_directory(path: str | None) -> bool:
    """Is ``--output`` a folder for part files (a path that ends in '/' or is a folder)?"""
    import os

    return bool(path) and (path.endswith(("/", os.sep)) or os.path.isdir(path))


def fit_options(options: dict) -> list[FitOptions]:
    """The FitOptions of each method of ``--method`` (a comma list compares methods)."""
    text = options.get("method")
    methods = [m.strip() for m in str(text).split(",") if m.strip()] if text is not None else [DEFAULTS.method]
    if not methods:
        raise OptionError(f"--method needs a method name (gd, newton, gn or lm); got {text!r}")
    values = {name: options.get(name) for name in NAMES}
    return [FitOptions.of(values, method=method) for method in methods]


def quiet_level(value) -> int:
    """0: the report and warnings on stderr; 1 (-q, quiet = true): warnings only; 2 (-qq): nothing."""
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    if isinstance(value, int) and 0 <= value <= 2:
        return value
    raise OptionError(f"quiet must be true, false, 0, 1 or 2; got {value!r}")


def print_warnings(payloads: list[dict], quiet: int) -> None:
    """Every warning once, one line each on stderr (even with -q; -qq silences them). For
    grouped fits each line names its group; after WARNING_LINES lines the rest are counted."""
    if quiet >= 2:
        return
    lines = []
    for payload in payloads:
        prefix = f"group {payload['group']}: " if "group" in payload else ""
        lines += [f"{prefix}{warning['message']}" for warning in payload.get("warnings", []) if warning["kind"] not in ALREADY_SAID]
    from nlfit.report.console import plain_line

    for line in lines[:WARNING_LINES]:
        plain_line(f"nlfit: warning: {line}")
    if len(lines) > WARNING_LINES:
        plain_line(f"nlfit: warning: ... and {len(lines) - WARNING_LINES} more (see the 'warnings' of each result)")


WARNING_LINES = 20
ALREADY_SAID = ("dropped-rows",)  # warning kinds said once for the whole input, before any result


def progress_reporter(options: dict, single: bool):
    """The progress display: plain lines with --progress (unless -qq), else rich's live line
    or bar on a terminal (unless -q), else none (and rich is not imported for it)."""
    if options.get("progress") and options["quiet"] < 2:
        from nlfit.report.console import PlainProgress

        return PlainProgress(single)
    if options["quiet"]:
        return None
    from nlfit.report.console import GroupProgress, ProgressLine, stderr_console

    return ProgressLine(stderr_console()) if single else GroupProgress(stderr_console())


def import_jax_beside(data: str | list[str], report: bool = False) -> None:
    """Import JAX in a thread while the data are read (``nlfit.startup``), after the
    reader's own imports (pyarrow); with ``report`` (a report on stderr will be printed),
    rich's console after it (0.06 s). Only for an input that pyarrow reads without the GIL
    for long enough to matter (a file of ``ARROW_BYTES`` or more; not stdin): a small file's
    pandas parse holds the GIL, and it would only pay the extra imports."""
    import os

    from nlfit.io.read import ARROW_BYTES

    try:
        if not any(name != "-" and os.path.getsize(name) >= ARROW_BYTES for name in ([data] if isinstance(data, str) else data)):
            return
    except OSError:
        return  # the reader says what is wrong with the name
    try:
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        pass
    from nlfit.startup import import_beside

    import_beside(["jax.numpy", *(["rich.console"] if report else [])], "nlfit-import-jax")


def run_fit(data: str | list[str], options: dict, plans: list[FitOptions]) -> None:
    from nlfit.io.read import missing_warning, read_dataset
    from nlfit.report.formats import choose

    output_format = choose(options.get("format") or ("table" if stdout_is_terminal() and not options.get("output") else "json"))
    if options.get("plot"):
        from nlfit.report.plot import require_matplotlib

        require_matplotlib(options["plot"])
    x_columns = [c.strip() for c in str(options["x"]).split(",")] if options.get("x") else None
    if dask_groups(options):
        return run_groups_dask(data, x_columns, plans, output_format, options)
    import_jax_beside(data, report=options["quiet"] == 0)
    dataset = read_dataset(
        data,
        x_columns=x_columns,
        y_column=options.get("y"),
        sigma_column=options.get("sigma"),
        group_column=options.get("group_by"),
        formula=options.get("model"),
        sep=options.get("sep"),
        missing=options.get("missing") or "drop",
        glob=bool(options.get("glob")),
    )
    if missing_warning(dataset) and options["quiet"] < 2:
        from nlfit.report.console import plain_line

        plain_line(f"nlfit: warning: {missing_warning(dataset)}")
    model_spec = require_model(options.get("model") or dataset.formula)
    _say_default_columns(dataset, model_spec, options)
    fitted_weights = None
    if options.get("weights"):
        from nlfit import weights

        if not weights.is_fitted(str(options["weights"])):
            dataset = weights.apply(dataset, str(options["weights"]))
        elif options.get("group_by") or options.get("share") is not None or len(plans) > 1:
            raise OptionError("--weights fitted:... fits one curve with one method: not with --group-by, --share or several --method")
        else:
            fitted_weights = str(options["weights"])
    from nlfit.options import parse_p0

    p0 = parse_p0(options.get("p0"))
    derived = None
    if options.get("share") is not None:  # a global fit: one problem over all groups
        from nlfit.globalfit import global_problem
        from nlfit.models.registry import model_for

        grouped, (dataset, model_spec) = dataset, global_problem(dataset, model_for(model_spec, dataset), str(options["share"]), options["group_by"])
        from nlfit.prepare import group_rows

        rows = group_rows(grouped)
        empty = [key for key, count in zip(rows.keys, rows.counts, strict=True) if count == 0]
        if empty and options["quiet"] < 2:
            from nlfit.report.console import plain_line

            shown = ", ".join(printable(key) for key in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            column = printable(options["group_by"])
            what = f"groups {shown} of {column} have" if len(empty) > 1 else f"group {shown} of {column} has"
            plain_line(f"nlfit: warning: --share: {what} no usable row: left out of the global fit")
        given = p0
        p0 = model_spec.expand(p0, "--p0") if isinstance(p0, dict) else p0
        plans = [dataclasses.replace(plan, bounds=model_spec.expand(plan.bounds, "--bounds"), fix=model_spec.expand(plan.fix, "--fix")) for plan in plans]
        if p0 is None or (isinstance(given, dict) and set(given) <= set(model_spec.base.param_names)):
            p0 = _global_start(grouped, model_spec, plans[0], given, p0)
            if p0 is not None:  # each group's start came from its own multistart: one joint start (unless --starts says)
                plans = [plan if plan.starts != "auto" else dataclasses.replace(plan, starts=1) for plan in plans]
    elif options.get("group_by"):
        return run_groups(dataset, model_spec, p0, plans[0], output_format, options)
    from nlfit.fitting import fit as run
    from nlfit.models.registry import model_for

    if options.get("derive"):
        from nlfit.derive import parse as parse_derived

        derived = parse_derived(options["derive"], model_for(model_spec, dataset).param_names)  # checked before the fit
    count = options.get("bootstrap") or (BOOTSTRAP_DEFAULT if options.get("intervals") in ("bootstrap", "bca") else None)
    if count and count * dataset.n_points > BOOTSTRAP_ROWS:  # before the fit, not after it
        raise OptionError(f"--bootstrap {count} resamples x {dataset.n_points} rows is more than {BOOTSTRAP_ROWS:,} values held at once: ask for fewer")
    results = []
    for plan in plans:
        progress = progress_reporter(options, single=True)
        try:
            if fitted_weights is None:
                results.append(run(dataset, model_spec, p0=p0, on_iteration=progress, options=plan, file_start=options.get("start")))
            else:
                from nlfit.weights import fit_with_fitted_weights

                def fit_once(data, start, first, plan=plan, progress=progress):
                    if first:
                        return run(data, model_spec, p0=p0, on_iteration=progress, options=plan, file_start=options.get("start"))
                    return run(data, model_spec, p0=start, on_iteration=progress, options=plan.replace(starts=1))

                result, dataset, weights_summary = fit_with_fitted_weights(dataset, fitted_weights, fit_once)
                results.append(result)
        finally:
            if progress is not None:
                progress.close()
        if results[-1].status.label == "interrupted":
            break  # Ctrl-C stops the comparison: the methods done so far are reported
    from nlfit import provenance

    command = provenance.command_options(options)
    payloads = [{**r.to_json(), "provenance": provenance.build(dataset.inputs, command, plan)} for r, plan in zip(results, plans, strict=False)]
    if fitted_weights is not None and payloads:
        payloads[0]["weights"] = weights_summary
    if (options.get("intervals") or "wald") == "profile":
        for result, payload, plan in zip(results, payloads, plans, strict=False):
            _profile(dataset, result, payload, plan)
    for result, payload, plan in zip(results, payloads, plans, strict=False):
        boot = _bootstrap(dataset, result, payload, plan, count, options.get("bootstrap_kind") or "residual", options.get("intervals")) if count else None
        if derived:
            _derive(derived, result, payload, boot)
        if options.get("residual_tests"):
            _residual_tests(dataset, result, payload)

    if not options.get("quiet"):
        from nlfit.report.console import comparison_table, print_report, stderr_console

        console = stderr_console()
        for payload in payloads:
            print_report(payload, console, show_params=output_format.name != "table" or bool(options.get("output")))
            for line in residual_lines(payload):
                console.print(line, markup=False, highlight=False)
        if len(payloads) > 1:
            console.print(comparison_table(payloads))
    print_warnings(payloads, options["quiet"])
    color = stdout_is_terminal() and not options.get("output")
    emit(output_format.fit(payloads if len(payloads) > 1 else payloads[0], color), options.get("output"))
    if options.get("plot"):
        from nlfit.report.plot import render as draw

        draw(payloads, dataset, options["plot"])
    if any(r.status.label == "interrupted" for r in results):
        stop_interrupted(options["quiet"])
    raise typer.Exit(0 if all(r.success for r in results) else 1)


def _profile(dataset, result, payload: dict, plan: FitOptions) -> None:
    """--intervals profile: each parameter's interval from its likelihood profile
    (``nlfit.profile``) in place of the Wald one; an open side is null, with a warning."""
    from nlfit.profile import intervals

    payload["ci_method"] = "profile"
    if not result.success or result.stderr is None:
        payload["ci_method"] = "wald"
        payload["warnings"].append({"kind": "profile", "message": "no profile intervals: the fit did not converge or has no standard errors", "fatal": False})
        return
    stats = payload["stats"]
    found = intervals(dataset, result.model, result.params, result.stderr, stats["rss"], stats["dof"], plan, stats["conf_level"], bool(plan.absolute_sigma))
    for name, entry in found.items():
        payload["params"][name]["ci"] = entry["ci"]
        for side in entry["open"]:
            level = f"{100 * stats['conf_level']:g}%"
            message = f"the profile of {name} does not reach the {level} level on its {side} side: that side of its interval is open (null)"
            payload["warnings"].append({"kind": "profile", "message": message, "fatal": False, "params": [name]})


BOOTSTRAP_DEFAULT = 1000  # resamples of --intervals bootstrap without --bootstrap N
BOOTSTRAP_ROWS = 50_000_000  # resamples x rows at most (the resampled data are held at once)
BOOTSTRAP_SAMPLE_VALUES = 200_000  # parameter values of the refits saved in the result (bootstrap.sample), at most


def _bootstrap(dataset, result, payload: dict, plan: FitOptions, count: int, kind: str, chosen: str | None) -> None:
    """--bootstrap N: the JSON's ``bootstrap`` (``nlfit.bootstrap``), with each parameter's
    BCa interval where the jackknife is cheap; with --intervals bootstrap (bca) its
    percentile (BCa) intervals replace the Wald ones."""
    from nlfit import bootstrap

    if not result.success:
        payload["warnings"].append({"kind": "bootstrap", "message": "no bootstrap: the fit did not converge", "fatal": False})
        return
    draws, converged = bootstrap.samples(dataset, result.model, result.params, plan, count, kind, plan.seed)
    boot = (draws, converged)
    found = bootstrap.summary(list(result.model.param_names), draws, converged, payload["stats"]["conf_level"], kind, plan.seed)
    payload["bootstrap"] = found
    kept = draws[converged]
    if kept.size <= BOOTSTRAP_SAMPLE_VALUES:  # for predict's bootstrap band
        found["sample"] = kept.tolist()
    else:
        message = f"the bootstrap's {kept.shape[0]} refits are not saved ({kept.size:,} values > {BOOTSTRAP_SAMPLE_VALUES:,}): predict gives no bootstrap band"
        payload["warnings"].append({"kind": "bootstrap", "message": message, "fatal": False})
    if found["failed"]:
        message = f"{found['failed']} of {count} bootstrap resamples did not converge and are left out of its intervals"
        payload["warnings"].append({"kind": "bootstrap", "message": message, "fatal": False})
    jack = bootstrap.jackknife(dataset, result.model, result.params, plan)
    for i, (name, entry) in enumerate(found["params"].items()):
        fixed = bool(payload["params"][name].get("fixed"))
        usable = jack is not None and not fixed and jack[1].all()
        entry["bca"] = bootstrap.bca(kept[:, i], float(result.params[i]), jack[0][:, i], payload["stats"]["conf_level"]) if usable else None
    if jack is None or not jack[1].all():
        why = "the jackknife (one fit per left-out row) is too large" if jack is None else f"{int((~jack[1]).sum())} jackknife fits did not converge"
        payload["warnings"].append({"kind": "bootstrap", "message": f"no BCa intervals: {why}", "fatal": False})
    if chosen in ("bootstrap", "bca"):
        payload["ci_method"] = chosen
        for name, entry in found["params"].items():
            if not payload["params"][name].get("fixed"):
                payload["params"][name]["ci"] = entry["ci"] if chosen == "bootstrap" or entry["bca"] is None else entry["bca"]
                if chosen == "bca" and entry["bca"] is None and jack is not None and jack[1].all():
                    message = f"no BCa interval for {name} (every refit on one side of the estimate): its percentile interval is given"
                    payload["warnings"].append({"kind": "bootstrap", "message": message, "fatal": False, "params": [name]})
    return boot


def _derive(derived, result, payload: dict, boot) -> None:
    """--derive: the JSON's ``derived`` (``nlfit.derive``)."""
    from nlfit.derive import derive

    stats = payload["stats"]
    quantile = stats.get("t_quantile") or 0.0
    draws, converged = boot if boot is not None else (None, None)
    payload["derived"] = derive(derived, result.params, result.covariance, quantile, draws, converged, stats["conf_level"])


def _residual_tests(dataset, result, payload: dict) -> None:
    """The JSON's ``residual_tests`` (``nlfit.stats.residual_tests``) of a converged fit, on
    the residuals in units of sigma (with --sigma) on the fitted scale; a warning line for
    each test that rejects at 5 %."""
    if not result.success or dataset.n_points > RESIDUAL_TEST_ROWS:
        return
    from nlfit._jax import jnp
    from nlfit.stats import residual_tests

    x = np.asarray(dataset.x, dtype=np.float64)
    observed = np.asarray(result.model.transform_response(np.asarray(dataset.y, dtype=np.float64), x), dtype=np.float64)
    fitted = np.asarray(result.model.predict(jnp.asarray(result.params), jnp.asarray(x)), dtype=np.float64)
    residuals = (observed - fitted) / (1.0 if dataset.sigma is None else np.asarray(dataset.sigma, dtype=np.float64))
    found = residual_tests(
        residuals, x if x.ndim == 1 else None, int(np.count_nonzero(~np.asarray(result.fixed, dtype=bool))) if result.fixed is not None else len(result.params)
    )
    payload["residual_tests"] = found


def residual_lines(payload: dict) -> list[str]:
    """The human report's lines for the residual tests that reject at 5 %."""
    words = {"shapiro": "the residuals are not normal (Shapiro-Wilk", "runs": "the residuals' signs run in long stretches along x (runs test",
             "replicates": "the model misses the means of the replicates (lack-of-fit F test"}  # fmt: skip
    return [f"residual test: {words[test]}, p = {entry['p']:.3g})" for test, entry in (payload.get("residual_tests") or {}).items() if entry["reject"]]


RESIDUAL_TEST_ROWS = 100_000  # residual tests for fits up to this many rows


def _say_default_columns(dataset, model_spec, options) -> None:
    """One line on stderr when a built-in or named model's columns were chosen by default
    (the columns named x and y, else the first and the next): a named model's variable is
    rarely the file's first column."""
    from nlfit.models.registry import is_formula

    if options.get("x") and options.get("y") or dataset.nist is not None or is_formula(model_spec) or options["quiet"] >= 2:
        return
    columns = (("--x", ",".join(printable(c) for c in dataset.x_names), options.get("x")), ("--y", printable(dataset.y_name), options.get("y")))
    chosen = [f"{flag} {value}" for flag, value, given in columns if not given]
    if chosen and not (dataset.x_names == ("x",) and dataset.y_name == "y"):
        from nlfit.report.console import plain_line

        plain_line(f"nlfit: note: columns chosen by default: {', '.join(chosen)} (give --x and --y to choose others)")


def _global_start(grouped, model, plan: FitOptions, given, expanded):
    """The start of a global fit from separate fits (``nlfit.globalfit.separate_start``),
    the parameters the user named in --p0 at their values; ``expanded`` (the --p0 by full
    names, or None) where no group could be fitted alone."""
    from nlfit.globalfit import separate_start

    start = separate_start(grouped, model, plan, given)
    if start is None:
        return expanded
    named = dict(zip(model.param_names, start, strict=True))
    named.update(expanded or {})
    return named


def run_groups(dataset, model_spec, p0, plan: FitOptions, output_format, options) -> None:
    """--group-by: one row per group, NDJSON (json) or CSV; exit 0 only if every group converged.

    The rows are written as their blocks are solved (``nlfit.batch.GroupFits``), in group
    order: a row waits only for the groups before it (in another size bucket), as text, and
    no result is kept, so memory does not grow with the number of groups. --output gets
    them through its temporary file, renamed at the end. The summary and the warnings (the
    first WARNING_LINES, the rest counted) follow the rows."""
    import functools
    import time

    from nlfit.batch import GroupFits, Tally

    progress = progress_reporter(options, single=False)
    tally = Tally(keep=WARNING_LINES)
    try:
        fits = GroupFits(dataset, model_spec, p0=p0, on_progress=progress, options=plan)
        from nlfit import provenance

        extra = {"provenance": provenance.compact(provenance.build(dataset.inputs, provenance.command_options(options), plan))}

        def pieces():
            waiting, following = {}, 0
            for block, (results, lines) in fits.blocks(functools.partial(block_rows, output_format, extra)):
                tally.add_fits(results)
                waiting.update(zip(block.tolist(), lines, strict=True))
                text = []
                while following in waiting:
                    text.append(waiting.pop(following))
                    following += 1
                if text:
                    if following == len(text):  # the first rows
                        text.insert(0, output_format.header(fits.param_names))
                        if progress is not None and not options.get("output") and stdout_is_terminal():
                            progress.close()  # the rows on the terminal show the progress from here
                            fits.on_progress = None
                    yield "".join(text)

        write_result(pieces(), options.get("output"))
        tally.interrupted |= fits.signalled  # a signal while helper processes ran: its exit code, after the rows
    finally:
        if progress is not None:
            progress.close()
    if not options.get("quiet"):
        from nlfit.report.console import batch_summary, stderr_console

        seconds = time.perf_counter() - fits.began
        stderr_console().print(batch_summary(tally.rows, tally.failed, plan.method, plan.globalization, seconds), markup=False)
    print_tally(tally, options["quiet"])
    raise typer.Exit(0 if tally.failed == 0 else 1)


def block_rows(output_format, extra: dict, results) -> tuple:
    """A block's Fits and its rows as text (picklable: a helper process formats its own
    blocks' rows, ``nlfit.procs``)."""
    return results, list(output_format.group_lines(results, extra))


def print_tally(tally, quiet: int) -> None:
    """After a grouped fit's rows: its warning lines (unless -qq), the rest counted; then,
    if a group was interrupted, the signal's line and exit code."""
    if quiet < 2:
        for line in tally.warnings:
            plain_line(f"nlfit: warning: {line}")
        if tally.more_warnings:
            plain_line(f"nlfit: warning: ... and {tally.more_warnings} more (see the 'warnings' of each result)")
    if tally.interrupted:
        stop_interrupted(quiet)


def run_groups_dask(data: list[str], x_columns, plans: list[FitOptions], output_format, options) -> None:
    """--group-by --engine dask (``nlfit.dask_engine``): the client reads only the headers,
    the workers read and fit; the rows arrive in group order, as the local engine writes
    them, to stdout, --output FILE or --output DIR/ (part files). Exit codes as run_groups."""
    import time
    from types import SimpleNamespace

    from nlfit import dask_engine
    from nlfit.io.read import missing_warning
    from nlfit.options import parse_p0

    began = time.perf_counter()
    model_spec = options["model"]
    p0 = parse_p0(options.get("p0"))
    plan = dask_engine.plan(
        list(data),
        options["group_by"],
        x_columns,
        options.get("y"),
        options.get("sigma"),
        formula=model_spec,
        sep=options.get("sep"),
        missing=options.get("missing") or "drop",
    )
    output = options.get("output")
    from nlfit.batch import Tally

    tally = Tally(keep=WARNING_LINES)
    progress = progress_reporter(options, single=False)
    try:
        with dask_engine.connect(options.get("scheduler"), options.get("threads")) as client:
            from nlfit import provenance

            full = provenance.build(provenance.file_records(plan.files), provenance.command_options(options), plans[0], with_device=False)
            job = dask_engine.Job(client, plan, model_spec, p0, plans[0], stamp=provenance.compact(full))
            survey = job.survey()
            if survey.dropped and options["quiet"] < 2:
                plain_line(f"nlfit: warning: {missing_warning(SimpleNamespace(dropped=survey.dropped))}")

            def counted():
                for part in job.parts(output_format.name):
                    dask_engine.tally(tally, part)
                    if progress is not None:
                        progress(tally.rows, survey.groups)
                    yield part

            if output_directory(output):
                dask_engine.write_parts(output, counted(), output_format, job.param_names)
            else:
                pieces = (dask_engine.part_text(part, output_format, job.param_names, header=i == 0) for i, part in enumerate(counted()))
                write_result(pieces, output)
    finally:
        if progress is not None:
            progress.close()
    if not options.get("quiet"):
        from nlfit.report.console import batch_summary, stderr_console

        stderr_console().print(batch_summary(tally.rows, tally.failed, plans[0].method, plans[0].globalization, time.perf_counter() - began), markup=False)
    print_tally(tally, options["quiet"])
    raise typer.Exit(0 if tally.failed == 0 else 1)


def write_result(pieces, output: str | None) -> None:
    """Text made piece by piece as it arrives: to stdout, or to --output through a temporary
    file renamed at the end (a signal meanwhile removes it: the old file stays whole)."""
    from nlfit.cli.common import emit_chunks
    from nlfit.io.write import descriptor_of, write_atomic

    if not output or descriptor_of(output) is not None:
        emit_chunks(pieces, output)
        return
    try:
        write_atomic(output, pieces)
    except OSError as exc:
        raise OptionError(f"cannot write --output {printable(output)}: {exc.strerror or exc}") from None


def plain_line(text: str) -> None:
    from nlfit.report.console import plain_line as line

    line(text)


def stop_interrupted(quiet: int) -> None:
    """After the best result of an interrupted fit is written: the one line every signal
    ends with (unless -qq), and its exit code (130 SIGINT, 143 SIGTERM)."""
    from nlfit import signals

    if quiet < 2:
        from nlfit.report.console import plain_line

        plain_line(f"nlfit: {signals.MESSAGES.get(signals.received(), 'interrupted')}")
    raise typer.Exit(signals.exit_code())
