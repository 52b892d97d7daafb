"""``fit(dataset, model, ...) -> FitResult``: the library entry point. Input validation lives here.

Every option is checked before any computation, and every problem is reported as an
:class:`nlfit.errors.NlfitError` naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from nlfit.errors import ModelError, OptionError
from nlfit.io.dataset import Dataset
from nlfit.result import LARGE_DATA_POINTS, FitResult
from nlfit.solvers.catalog import resolve_globalization, resolve_method

DEFAULTS = {
    "method": "lm",
    "globalization": None,
    "jac": "auto",
    "ftol": 1e-15,
    "xtol": 1e-15,
    "gtol": 1e-15,
    "max_iter": 2000,
    "step": 1e-3,
    "momentum": 0.0,
    "batch_size": None,
    "seed": 0,
    "timeout": None,
    "absolute_sigma": False,
    "factorization": "auto",
    "loss": "linear",
    "f_scale": 1.0,
    "bounds": None,
    "fix": None,
    "conf_level": 0.95,
    "starts": "auto",
}

__all__ = ["fit", "FitResult", "validate", "resolve_p0", "box", "build_model"]

FACTORIZATIONS = ("auto", "svd", "qr", "gram")


def resolve_p0(model, dataset: Dataset, p0) -> np.ndarray:
    """The start: given by position, by name (the rest from the model's default), or the default.

    The default (a linearized fit for rational models) is computed only when it is needed.
    """
    names = list(model.param_names)

    def default():
        return model.default_p0(np.asarray(dataset.x), np.asarray(dataset.y))

    if p0 is None or (isinstance(p0, (Sequence, Mapping)) and len(p0) == 0):
        start = default()
        if start is None:
            raise ModelError(f"model '{model.spec}' needs a starting point: give --p0 with {len(names)} values ({', '.join(names)})")
        return np.asarray(start, dtype=np.float64)
    if isinstance(p0, Mapping):
        unknown = [k for k in p0 if k not in names]
        if unknown:
            raise ModelError(f"--p0 names unknown parameter(s) {', '.join(unknown)}; the parameters are {', '.join(names)}")
        missing = [k for k in names if k not in p0]
        start = np.zeros(len(names))
        if missing:
            fallback = default()
            if fallback is None:
                raise ModelError(f"--p0 must set every parameter of '{model.spec}'; missing: {', '.join(missing)}")
            start = np.array(fallback, dtype=np.float64)
        for k, v in p0.items():
            start[names.index(k)] = float(v)
        return _check_finite(start)
    values = np.asarray([float(v) for v in p0], dtype=np.float64)
    if values.size != len(names):
        raise ModelError(f"--p0 has {values.size} value(s) but model '{model.spec}' has {len(names)} parameters ({', '.join(names)})")
    return _check_finite(values)


def _check_finite(values: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise ModelError("--p0 values must be finite numbers")
    return values


def _positive(name: str, value, allow_zero: bool = False):
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise OptionError(f"--{name.replace('_', '-')} must be a {'non-negative' if allow_zero else 'positive'} number; got {value}")
    return value


def build_model(model_spec, dataset: Dataset):
    from nlfit.models.registry import build_model as _build

    if not isinstance(model_spec, str):
        return model_spec
    return _build(model_spec, np.asarray(dataset.x), y_name=dataset.y_name, x_names=dataset.x_names, order=dataset.extra.get("param_names"))


def validate(options: dict):
    """Options -> (opts with defaults, method, globalization, solver Settings); every bad
    value is an OptionError that names the flag. Shared by single and batched fits."""
    from nlfit.problem import LOSSES
    from nlfit.solvers.loop import Settings

    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise OptionError(f"unknown fit option(s): {', '.join(sorted(unknown))}")
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    method = resolve_method(opts["method"])
    globalization = resolve_globalization(opts["globalization"], method)
    for name in ("ftol", "xtol", "gtol"):
        _positive(name, opts[name], allow_zero=True)
    _positive("step", opts["step"])
    from nlfit.schema import check_option

    for name in ("max_iter", "seed"):  # the library's callers get the command line's ranges
        opts[name] = check_option(name, opts[name])
    if not (0.0 <= opts["momentum"] < 1.0):
        raise OptionError(f"--momentum must be in [0, 1); got {opts['momentum']}")
    if opts["momentum"] and not (method == "gd" and globalization == "none"):
        raise OptionError("--momentum applies to --method gd with --globalization none")
    if opts["batch_size"] is not None:
        if method != "gd" or globalization != "none":
            raise OptionError("--batch-size (stochastic gradient descent) applies to --method gd with --globalization none")
        if not (isinstance(opts["batch_size"], int) and opts["batch_size"] >= 1):
            raise OptionError(f"--batch-size must be a positive integer; got {opts['batch_size']}")
    if opts["timeout"] is not None:
        _positive("timeout", opts["timeout"])
    if not (isinstance(opts["conf_level"], (int, float)) and 0.0 < opts["conf_level"] < 1.0):
        raise OptionError(f"--conf-level must be between 0 and 1 (e.g. 0.95); got {opts['conf_level']}")
    if opts["factorization"] not in FACTORIZATIONS:
        raise OptionError(f"--factorization must be one of {', '.join(FACTORIZATIONS)}; got '{opts['factorization']}'")
    opts["starts"] = parse_starts(opts["starts"])
    if opts["loss"] not in LOSSES:
        raise OptionError(f"--loss must be one of {', '.join(LOSSES)}; got '{opts['loss']}'")
    _positive("f_scale", opts["f_scale"])
    settings = Settings(
        ftol=float(opts["ftol"]),
        xtol=float(opts["xtol"]),
        gtol=float(opts["gtol"]),
        max_iter=int(opts["max_iter"]),
        step=float(opts["step"]),
        momentum=float(opts["momentum"]),
    )
    return opts, method, globalization, settings


def parse_starts(value):
    """--starts: 'auto' or a positive integer."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or (isinstance(value, float) and value != count):
        raise OptionError(f"--starts must be 'auto' or a positive integer; got {value!r}")
    return count


def choose_factorization(option: str, rows: int, groups: int = 1) -> str:
    """auto: J and its SVD below LARGE_DATA_POINTS rows in all (groups x rows per group); from
    there the streaming QR for one fit, and J^T J for the steps of many small fits (grouped
    fits), whose statistics and final Gauss-Newton polish still use the SVD of each J."""
    if option != "auto":
        return option
    if rows * groups < LARGE_DATA_POINTS:
        return "svd"
    return "qr" if groups == 1 or rows >= LARGE_DATA_POINTS else "gram"


def start_count(option, model, free: np.ndarray, rows: int, groups: int, loss: str = "linear") -> int:
    from nlfit import multistart

    linear = np.array(model.linear_params, dtype=bool)
    return multistart.auto_count(linear, free, rows, groups, robust=loss != "linear") if option == "auto" else int(option)


def solver_parts(opts: dict, method: str, globalization: str, model, lower, upper, rows: int, groups: int, jac_mode: str, settings) -> dict:
    """What every solve of these options needs (``nlfit.fitting.solve_groups``)."""
    from nlfit.solvers.directions import make_direction
    from nlfit.solvers.globalization import make_globalization

    factorization = choose_factorization(opts["factorization"], rows, groups)
    free = np.asarray(lower) != np.asarray(upper)
    return {
        "direction": make_direction(method, opts["batch_size"], factorization),
        "globalization": make_globalization(globalization),
        "factorization": factorization,
        "jac_mode": jac_mode,
        "settings": settings,
        "seed": int(opts["seed"]),
        "count": start_count(opts["starts"], model, free, rows, groups, opts["loss"]),
        "linear": np.array(model.linear_params, dtype=bool),
        "free": free,
    }


def fit(dataset: Dataset, model, p0=None, on_iteration=None, **options) -> FitResult:
    """Fit ``model`` (a spec string or a Model) to ``dataset``. Options: see ``DEFAULTS``.

    A single fit is the one-group case of ``nlfit.fitting.solve_groups``; its starts are
    chosen by ``nlfit.multistart`` (``starts``: 'auto' or a count; 1 is the given start alone)."""
    opts, method, globalization, settings = validate(options)
    model = build_model(model, dataset)
    start = resolve_p0(model, dataset, p0)
    n_points = dataset.n_points

    from nlfit import derivatives
    from nlfit._jax import jax
    from nlfit.problem import make_problem

    jac_mode = derivatives.resolve_mode(opts["jac"], n_points, len(model.param_names))
    lower, upper, start = box(model, opts["bounds"], opts["fix"], start, given=p0 is not None)
    estimated = int(np.count_nonzero(lower != upper))
    if n_points < estimated:
        raise ModelError(f"model '{model.spec}' has {estimated} free parameters but the data have only {n_points} point(s)")
    problem = make_problem(model, dataset, opts["loss"], float(opts["f_scale"]), lower, upper)
    if not np.all(np.isfinite(np.asarray(problem.y))):
        raise ModelError(f"the response transform of '{model.spec}' gives non-finite values (e.g. log of a value <= 0)")
    solver = solver_parts(opts, method, globalization, model, lower, upper, n_points, 1, jac_mode, settings)
    problems = jax.tree.map(lambda leaf: np.asarray(leaf)[None], problem)
    model_start = None
    if p0 is not None:
        with np.errstate(all="ignore"):
            try:
                default = model.default_p0(np.asarray(dataset.x), np.asarray(problem.y))
            except (np.linalg.LinAlgError, ValueError):
                default = None
        model_start = None if default is None else np.asarray(default, dtype=np.float64)[None]
    return fit_problems(
        model,
        problems,
        start[None],
        np.array([n_points]),
        np.ones((1, n_points), dtype=bool),
        dataset,
        opts,
        method,
        globalization,
        solver,
        record=True,
        model_starts=model_start,
        on_iteration=on_iteration,
    )[0]


def fit_problems(model, problems, starts, counts, real, dataset, opts, method, globalization, solver, *, record, keys=None, model_starts=None,
                 on_iteration=None, on_progress=None) -> list[FitResult]:  # fmt: skip
    """Every fit: G problems (a single fit is G = 1) from their starts (G, n), ``counts`` real
    rows each (``real`` (G, L) marks them), through the one solve (``nlfit.fitting``) and the
    one post-processing (``nlfit.result``). A group with fewer rows than free parameters is
    ``too-few-points`` (reported at its start), one with non-finite data ``nonfinite``."""
    from nlfit.fitting import solve_groups
    from nlfit.result import finish
    from nlfit.solvers.status import Status

    solved = solve_groups(
        problems,
        starts,
        counts,
        solver["count"],
        solver["linear"],
        solver["free"],
        solver["direction"],
        solver["globalization"],
        solver["jac_mode"],
        solver["settings"],
        seed=solver["seed"],
        timeout=opts["timeout"],
        record=record,
        model_starts=model_starts,
        param_names=model.param_names,
        on_iteration=on_iteration,
        on_progress=on_progress,
    )
    too_few = np.asarray(counts) < int(np.count_nonzero(solver["free"]))
    x = np.asarray(problems.x).reshape(*np.shape(problems.y), -1)
    bad_data = ~np.all(np.where(real, np.isfinite(np.asarray(problems.y)) & np.all(np.isfinite(x), axis=2), True), axis=1)
    statuses = np.where(bad_data, int(Status.NONFINITE), solved.statuses)
    solved.statuses = np.where(too_few, int(Status.TOO_FEW_POINTS), statuses)
    solved.state = solved.state._replace(params=np.where(too_few[:, None], starts, solved.state.params))  # not fitted: the start
    return finish(
        model,
        problems,
        solved,
        counts,
        real,
        method=method,
        globalization=globalization,
        jac_mode=solver["jac_mode"],
        factorization=solver["factorization"],
        options=opts,
        data_columns={"x": list(dataset.x_names), "y": dataset.y_name, "files": list(dataset.files), "dropped": int(dataset.dropped)},
        sigma_given=dataset.sigma is not None,
        keys=keys,
        extended=dataset.extra.get("extended"),
        solver=solver,
    )


def box(model, bounds, fix, start, given: bool = True):
    """(lower, upper, start) from --bounds {name: (lo, hi)} and --fix {name: value}.

    A start the user gave must lie inside the bounds; a default start is moved into them."""
    names = list(model.param_names)
    lower, upper = np.full(len(names), -np.inf), np.full(len(names), np.inf)
    for option, table in (("--bounds", bounds or {}), ("--fix", fix or {})):
        unknown = [k for k in table if k not in names]
        if unknown:
            raise OptionError(f"{option} names unknown parameter(s) {', '.join(unknown)}; the parameters are {', '.join(names)}")
    for name, (lo, hi) in (bounds or {}).items():
        if not lo <= hi:
            raise OptionError(f"--bounds {name}: the lower bound {lo} is above the upper bound {hi}")
        lower[names.index(name)], upper[names.index(name)] = lo, hi
    start = np.array(start, dtype=np.float64)
    for name, value in (fix or {}).items():
        if not math.isfinite(value):
            raise OptionError(f"--fix {name}: the value must be a finite number")
        i = names.index(name)
        lower[i] = upper[i] = start[i] = value
    if names and np.all(lower == upper):
        raise OptionError("every parameter is fixed (--fix, or --bounds with equal ends): there is nothing to fit; 'nlfit predict' evaluates a model")
    if not given:
        start = np.clip(start, lower, upper)
    outside = [names[i] for i in range(len(names)) if not lower[i] <= start[i] <= upper[i]]
    if outside:
        i = names.index(outside[0])
        raise OptionError(f"the start {outside[0]}={start[i]:g} is outside its bounds [{lower[i]:g}, {upper[i]:g}]; give a --p0 inside")
    return lower, upper, start
