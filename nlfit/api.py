"""``fit(dataset, model, ...) -> FitResult``: the library entry point. Input validation lives here.

Every option is checked before any computation, and every problem is reported as an
:class:`nlfit.errors.NlfitError` naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from nlfit.errors import ModelError, OptionError
from nlfit.io.dataset import Dataset
from nlfit.solvers.catalog import resolve_globalization, resolve_method
from nlfit.solvers.status import Status

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
}


# From this many points on, the solvers keep J^T J instead of J (see Direction.factorization).
GRAM_MIN_POINTS = 100_000


@dataclass
class FitResult:
    """Everything a fit produced; ``to_json()`` gives the documented JSON contract."""

    model: object
    method: str
    globalization: str
    jac_mode: str
    param_names: tuple[str, ...]
    params: np.ndarray
    stderr: np.ndarray | None
    covariance: np.ndarray | None
    status: Status
    stats: dict
    counts: dict
    history: list[dict]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    correlation: np.ndarray | None = None
    intervals: np.ndarray | None = None
    tvalues: np.ndarray | None = None
    data_columns: dict = field(default_factory=dict)
    absolute_sigma: bool = False
    fixed: np.ndarray | None = None
    at_bound: list | None = None
    loss_name: str = "linear"
    f_scale: float = 1.0

    @property
    def success(self) -> bool:
        return self.status.success

    @property
    def message(self) -> str:
        return self.status.message

    @property
    def loss(self) -> float:
        """The minimized objective: 1/2 ||r||^2, or the robust cost 1/2 C^2 sum rho((r/C)^2)."""
        return self.stats["loss"]

    def to_json(self) -> dict:
        def number(value):
            return None if value is None or not math.isfinite(value) else float(value)

        params = {}
        for i, name in enumerate(self.param_names):
            params[name] = {
                "value": number(self.params[i]),
                "stderr": None if self.stderr is None else number(self.stderr[i]),
                "ci": None if self.intervals is None or not np.all(np.isfinite(self.intervals[i])) else [float(v) for v in self.intervals[i]],
                "tvalue": None if self.tvalues is None else number(self.tvalues[i]),
                "fixed": bool(self.fixed[i]) if self.fixed is not None else False,
                "at_bound": None if self.at_bound is None else self.at_bound[i],
            }

        def matrix(values):
            return None if values is None else [[number(v) for v in row] for row in values]

        return {
            "success": self.success,
            "status": self.status.label,
            "message": self.message,
            "model": self.model.spec,
            "model_info": self.model.to_json(),
            "method": self.method,
            "globalization": self.globalization,
            "jac": self.jac_mode,
            "loss": self.loss_name,
            "f_scale": self.f_scale,
            "params": params,
            "data": self.data_columns,
            "absolute_sigma": self.absolute_sigma,
            "covariance": matrix(self.covariance),
            "correlation": matrix(self.correlation),
            "stats": {k: (number(v) if isinstance(v, float) else v) for k, v in self.stats.items()},
            "counts": self.counts,
            "seconds": self.seconds,
            "warnings": self.warnings,
            "history": [{k: (number(v) if isinstance(v, float) else v) for k, v in row.items()} for row in self.history],
        }


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
    if not (isinstance(opts["max_iter"], int) and opts["max_iter"] >= 1):
        raise OptionError(f"--max-iter must be a positive integer; got {opts['max_iter']}")
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
    if opts["factorization"] not in ("auto", "svd", "gram"):
        raise OptionError(f"--factorization must be auto, svd or gram; got '{opts['factorization']}'")
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


def fit(dataset: Dataset, model, p0=None, on_iteration=None, **options) -> FitResult:
    """Fit ``model`` (a spec string or a Model) to ``dataset``. Options: see ``DEFAULTS``."""
    opts, method, globalization, settings = validate(options)
    model = build_model(model, dataset)
    start = resolve_p0(model, dataset, p0)
    n_params, n_points = len(model.param_names), dataset.n_points

    from nlfit import derivatives
    from nlfit.problem import make_problem
    from nlfit.solvers.directions import make_direction
    from nlfit.solvers.globalization import make_globalization
    from nlfit.solvers.loop import solve

    jac_mode = derivatives.resolve_mode(opts["jac"], n_points, n_params)
    lower, upper, start = box(model, opts["bounds"], opts["fix"], start, given=p0 is not None)
    estimated = int(np.count_nonzero(lower != upper))
    if n_points < estimated:
        raise ModelError(f"model '{model.spec}' has {estimated} free parameters but the data have only {n_points} point(s)")
    problem = make_problem(model, dataset, opts["loss"], float(opts["f_scale"]), lower, upper)
    if not np.all(np.isfinite(np.asarray(problem.y))):
        raise ModelError(f"the response transform of '{model.spec}' gives non-finite values (e.g. log of a value <= 0)")
    factorization = opts["factorization"]
    if factorization == "auto":
        factorization = "gram" if n_points >= GRAM_MIN_POINTS else "svd"
    direction = make_direction(method, opts["batch_size"], factorization)
    output = solve(
        problem,
        start,
        direction,
        make_globalization(globalization),
        jac_mode,
        settings,
        seed=int(opts["seed"]),
        timeout=opts["timeout"],
        on_iteration=on_iteration,
    )
    return _result(model, dataset, problem, output, method, globalization, jac_mode, opts, factorization)


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
    if not given:
        start = np.clip(start, lower, upper)
    outside = [names[i] for i in range(len(names)) if not lower[i] <= start[i] <= upper[i]]
    if outside:
        i = names.index(outside[0])
        raise OptionError(f"the start {outside[0]}={start[i]:g} is outside its bounds [{lower[i]:g}, {upper[i]:g}]; give a --p0 inside")
    return lower, upper, start


EXTENDED_MAX_POINTS = 100_000


def refine_extended(model, dataset, problem, params, jac, residuals):
    """Gauss-Newton refinement with residuals in extended precision (x87 long double).

    Near an exact fit (NIST's Lanczos1 ends at RSS 1e-25 on values near 2.5) float64
    residuals are rounding noise, so the RSS, sigma and the standard errors that scale with it
    lose digits. For formula models the residuals can be evaluated in long double (64-bit
    mantissa): up to three steps -J^+ r with r in long double and J from AD, each kept only if
    the long-double RSS falls. It applies only where it matters, when the residuals are within
    a factor 1e6 of the float64 rounding of the data (|r| < 1e6 eps max|y|), and returns
    (params, residuals), or None (not a formula, robust loss, large data, no long double, or
    residuals well above rounding level).
    """
    from nlfit.models.expression import FormulaModel, evaluate_numpy

    if (
        not isinstance(model, FormulaModel)
        or problem.loss != "linear"
        or dataset.n_points > EXTENDED_MAX_POINTS
        or np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps
        or not np.all(np.isfinite(jac))
    ):
        return None
    extended = dataset.extra.get("extended") or {}  # a NIST file's data parsed in long double
    x = np.asarray(extended.get("x", dataset.x), dtype=np.longdouble)
    y = extended.get("y")
    if y is None or model.lhs is not None or len(y) != dataset.n_points:
        x = np.asarray(dataset.x, dtype=np.longdouble)
        y = np.asarray(model.transform_response(dataset.y, dataset.x), dtype=np.longdouble)
    sigma = np.ones_like(y) if dataset.sigma is None else np.asarray(dataset.sigma, dtype=np.longdouble)

    def residuals_at(p):
        return (evaluate_numpy(model, p, x, dtype=np.longdouble) - y) / sigma

    rounding = np.finfo(np.float64).eps * float(np.max(np.abs(np.asarray(dataset.y, dtype=np.float64))))
    unweighted = np.asarray(residuals) * np.asarray(problem.sigma)  # f - y
    with np.errstate(over="ignore", invalid="ignore"):
        typical = np.sqrt(np.mean(unweighted**2))
    if not typical < 1e6 * rounding:
        return None
    point = np.asarray(params, dtype=np.longdouble)
    r = residuals_at(point)
    rss = np.dot(r, r)
    for _ in range(3):
        delta, *_ = np.linalg.lstsq(jac, -np.asarray(r, dtype=np.float64), rcond=None)
        trial = point + np.asarray(delta, dtype=np.longdouble)
        r_trial = residuals_at(trial)
        rss_trial = np.dot(r_trial, r_trial)
        if not (np.isfinite(rss_trial) and rss_trial < rss):
            break
        point, r, rss = trial, r_trial, rss_trial
    return np.asarray(point, dtype=np.float64), np.asarray(r, dtype=np.float64)


def _result(model, dataset, problem, output, method, globalization, jac_mode, options, factorization) -> FitResult:
    from nlfit import derivatives, stats
    from nlfit.problem import rho

    state = output.state
    params = np.asarray(state.params)
    lower, upper = np.asarray(problem.lower), np.asarray(problem.upper)
    fixed = lower == upper
    at_bound = np.where(fixed, None, np.where(params <= lower, "lower", np.where(params >= upper, "upper", None)))
    estimated = np.flatnonzero(~fixed & (at_bound == None))  # noqa: E711 (elementwise)
    names = [model.param_names[i] for i in estimated]
    # The Jacobian at the solution for the statistics, by AD (not counted in njev). The solver's
    # last linearization is at these parameters: reuse it unless it was by finite differences,
    # had no Jacobian (gd), or the loss is robust (the sandwich needs the unscaled J). For large
    # m only J^T J is kept; a square factor with the same singular values stands in for J.
    local = state.local
    residuals = np.asarray(local.residuals)
    middle = None
    robust = problem.loss != "linear"
    if estimated.size == len(model.param_names) and factorization == "svd" and local.jac is not None and jac_mode != "fd":
        refined = refine_extended(model, dataset, problem, params, np.asarray(local.jac), residuals)
        if refined is not None:
            params, residuals = refined
    if factorization == "gram" and not robust:
        gram = local.gram if (jac_mode != "fd" and local.gram is not None) else derivatives.gram_jit(state.params, problem, "fwd")[1]
        factor = stats.factor_from_gram(np.asarray(gram)[np.ix_(estimated, estimated)])
    else:
        reuse = jac_mode != "fd" and local.jac is not None and not robust
        jac = np.asarray(local.jac if reuse else derivatives.jacobian_jit(state.params, problem, "rev" if jac_mode == "rev" else "fwd")[1])
        factor = jac[:, estimated]
        if robust:
            z = (residuals / float(problem.f_scale)) ** 2
            first, second = (np.asarray(v) for v in rho(z, problem.loss)[1:])
            factor = factor * np.sqrt(np.maximum(first + 2 * second * z, np.finfo(float).eps))[:, None]
            influence = jac[:, estimated] * (first * residuals)[:, None]
            middle = influence.T @ influence
    statistics = stats.compute(
        factor,
        residuals,
        params[estimated],
        names,
        np.asarray(problem.y),
        None if dataset.sigma is None else np.asarray(dataset.sigma),
        absolute_sigma=bool(options["absolute_sigma"]),
        conf_level=float(options["conf_level"]),
        sandwich_middle=middle,
    )
    n_params = len(model.param_names)

    def spread(values, shape):
        if values is None:
            return None
        out = np.full(shape, np.nan)
        if len(shape) == 1:
            out[estimated] = values
        elif shape[1] == 2:
            out[estimated] = values
        else:
            out[np.ix_(estimated, estimated)] = values
        return out

    covariance = spread(statistics.covariance, (n_params, n_params))
    if covariance is not None:
        covariance = np.where(np.isnan(covariance), 0.0, covariance)  # held parameters do not vary
    warnings = list(statistics.warnings)
    for i, side in enumerate(at_bound):
        if side is not None:
            warnings.append(f"{model.param_names[i]} ended at its {side} bound ({params[i]:g}): its standard error is not meaningful")
    values = dict(statistics.values)
    values["loss"] = float(local.loss)
    return FitResult(
        model=model,
        method=method,
        globalization=globalization,
        jac_mode=jac_mode,
        param_names=tuple(model.param_names),
        params=params,
        stderr=spread(statistics.stderr, (n_params,)),
        covariance=covariance,
        correlation=spread(statistics.correlation, (n_params, n_params)),
        intervals=spread(statistics.intervals, (n_params, 2)),
        tvalues=spread(statistics.tvalues, (n_params,)),
        status=output.status,
        stats=values,
        counts={"iterations": int(state.iteration), "nfev": int(state.nfev), "njev": int(state.njev)},
        history=output.history,
        seconds=output.seconds,
        warnings=warnings,
        data_columns={"x": list(dataset.x_names), "y": dataset.y_name},
        absolute_sigma=bool(options["absolute_sigma"]) and dataset.sigma is not None,
        fixed=fixed,
        at_bound=list(at_bound),
        loss_name=problem.loss,
        f_scale=float(problem.f_scale),
    )
