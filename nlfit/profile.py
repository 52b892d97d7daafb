"""Profile-likelihood confidence intervals (``nlfit fit --intervals profile``).

For each parameter θ_j the profile holds θ_j at a value v and refits the others:
S_j(v) = min over the others of the residual sum of squares. With the fit's minimum S0, its
residual degrees of freedom df and s² = S0 / df, the profile statistic

    τ_j(v) = sign(v - θ̂_j) sqrt((S_j(v) - S0) / s²)

is compared with the two-sided Student t quantile t(df, (1 + level) / 2) (with --absolute-sigma:
τ = sign · sqrt(S_j(v) - S0) against the normal quantile): the interval is where |τ| stays
below it. This is the likelihood-ratio interval of R's ``confint(nls)`` (MASS's profile
method, Bates & Watts 1988, ch. 6), without its spline: the crossing is bracketed on a grid
and then found by secant steps on τ itself.

All grid points of all parameters are one batched solve (``nlfit.batch.solve_only``): the
data repeated once per point, each copy with its own held parameter and value in two extra
predictor columns (``Held``), every refit started from the fit itself. A side on which the
profile does not reach the threshold within 10 quantiles x the standard error of the estimate
(R's profiler stops there too; the model typically degenerates along it) is open: null, with
a warning, as R reports NA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from nlfit.models.base import Model

GRID = 8  # profile points on each side of the estimate
REACH = 4.0  # the grid spans REACH x the quantile x the standard error on each side, and then, where it has not crossed,
WIDEST = 10.0  # WIDEST x the quantile x the standard error, R's limit (profile.nls stops there): beyond, the side is open
SECANT_STEPS = 4


@dataclass(frozen=True)
class Held(Model):
    """``base`` with parameter ``x[:, -2]`` (its index) held at ``x[:, -1]`` in every row."""

    base: Model

    @property
    def spec(self) -> str:
        return self.base.spec

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.base.param_names

    @property
    def linear_params(self) -> tuple[bool, ...]:
        return tuple(False for _ in self.base.param_names)  # the held one must not be solved for at a start

    def _inner(self, x):
        return x[..., 0] if x.shape[-1] == 3 else x[..., :-2]

    def predict(self, params, x):
        from nlfit._jax import jax, jnp

        index, value = x[..., -2].astype(jnp.int32), x[..., -1]
        rows = jnp.where(jnp.arange(params.shape[0])[None, :] == index[:, None], value[:, None], params[None, :])
        return jax.vmap(lambda p, xi: self.base.predict(p, xi[None])[0])(rows, self._inner(x))

    def default_p0(self, x, y):
        return None

    @property
    def fits_response_as_given(self) -> bool:
        return self.base.fits_response_as_given

    def transform_response(self, y, x):
        return self.base.transform_response(y, self._inner(np.asarray(x)))


def _profile_rss(dataset, model, params, options, points: list[tuple[int, float]]) -> np.ndarray:
    """S_j(v) for each (j, v) in ``points``, in one batched solve (NaN where a refit failed)."""
    from nlfit.batch import solve_only
    from nlfit.io.dataset import Dataset
    from nlfit.solvers.status import Status

    x = np.asarray(dataset.x, dtype=np.float64).reshape(dataset.n_points, -1)
    count = len(points)
    index = np.repeat([float(j) for j, _ in points], dataset.n_points)
    value = np.repeat([v for _, v in points], dataset.n_points)
    data = Dataset(
        x=np.column_stack([np.tile(x, (count, 1)), index, value]),
        y=np.tile(np.asarray(dataset.y, dtype=np.float64), count),
        x_names=(*dataset.x_names, "_held", "_value"),
        y_name=dataset.y_name,
        sigma=None if dataset.sigma is None else np.tile(np.asarray(dataset.sigma, dtype=np.float64), count),
        groups=np.repeat(np.arange(count).astype(str), dataset.n_points),
    )
    starts = np.tile(np.asarray(params, dtype=np.float64), (count, 1))  # the held parameter's own entry is not used
    plan = dataclasses.replace(options, starts=1, factorization="svd", timeout=None)
    _, statuses, rss = solve_only(data, Held(model), starts, plan)
    ok = np.array([Status(int(code)).success for code in statuses])
    return np.where(ok & np.isfinite(rss), rss, np.nan)


def intervals(dataset, model, params, stderr, rss: float, dof: int, options, level: float, absolute: bool = False) -> dict:
    """{name: {"ci": [low or None, high or None], "open": [...sides]}} for every estimated
    parameter (module docstring); fixed ones and those without a standard error are left out."""
    from scipy import stats as distributions

    params, stderr = np.asarray(params, dtype=np.float64), np.asarray(stderr, dtype=np.float64)
    names = list(model.param_names)
    fixed = set((options.fix or {}).keys())
    chosen = [j for j, name in enumerate(names) if name not in fixed and np.isfinite(stderr[j]) and stderr[j] > 0]
    if not chosen or dof <= 0 or not rss > 0:
        return {}
    quantile = float(distributions.norm.ppf(0.5 + level / 2)) if absolute else float(distributions.t.ppf(0.5 + level / 2, dof))
    scale = 1.0 if absolute else rss / dof

    def tau(j, v, s):
        with np.errstate(invalid="ignore"):
            return np.sign(v - params[j]) * np.sqrt(np.maximum(s - rss, 0.0) / scale)

    found: dict = {}
    sides = [(j, side) for j in chosen for side in (-1.0, 1.0)]
    brackets: dict = {}
    reach = {key: REACH * quantile for key in sides}
    pending = list(sides)
    for _ in range(2):  # the grid, and a wider one where a side has not crossed
        if not pending:
            break
        points = [(j, params[j] + side * stderr[j] * reach[(j, side)] * k / GRID) for j, side in pending for k in range(1, GRID + 1)]
        values = _profile_rss(dataset, model, params, options, points)
        still = []
        for n, (j, side) in enumerate(pending):
            mine = slice(n * GRID, (n + 1) * GRID)
            grid = [(0.0, params[j])] + [(float(tau(j, v, s)), v) for (_, v), s in zip(points[mine], values[mine], strict=True)]
            crossing = next((k for k in range(1, len(grid)) if np.isfinite(grid[k][0]) and abs(grid[k][0]) >= quantile), None)
            if crossing is None:
                if reach[(j, side)] < WIDEST * quantile:
                    reach[(j, side)] = WIDEST * quantile
                    still.append((j, side))
            else:  # between the last point inside with a finite statistic (a failed refit is skipped) and the first outside
                inside = next(k for k in range(crossing - 1, -1, -1) if np.isfinite(grid[k][0]))
                brackets[(j, side)] = (grid[inside], grid[crossing])
        pending = still
    # secant steps on tau between the last point inside and the first outside
    for _ in range(SECANT_STEPS):
        keys = list(brackets)
        if not keys:
            break
        trial = []
        for key in keys:
            (t0, v0), (t1, v1) = brackets[key]
            a, b = abs(t0), abs(t1)
            trial.append((key[0], v0 + (v1 - v0) * (quantile - a) / (b - a) if b != a else 0.5 * (v0 + v1)))
        values = _profile_rss(dataset, model, params, options, trial)
        for key, (j, v), s in zip(keys, trial, values, strict=True):
            t = float(tau(j, v, s))
            (t0, v0), (t1, v1) = brackets[key]
            if not np.isfinite(t):
                continue
            brackets[key] = ((t, v), (t1, v1)) if abs(t) < quantile else ((t0, v0), (t, v))
    bounds = options.bounds or {}
    for j in chosen:
        limits, open_sides = [], []
        for side in (-1.0, 1.0):
            bound = bounds.get(names[j], (-np.inf, np.inf))[0 if side < 0 else 1]
            if (j, side) in brackets:
                (t0, v0), (t1, v1) = brackets[(j, side)]
                a, b = abs(t0), abs(t1)
                limit = float(v0 + (v1 - v0) * (quantile - a) / (b - a)) if b != a else float(v1)
                limits.append(float(min(limit, bound) if side > 0 else max(limit, bound)))  # a --bounds end closes the interval there
            elif np.isfinite(bound):
                limits.append(float(bound))
            else:
                limits.append(None)
                open_sides.append("lower" if side < 0 else "upper")
        found[names[j]] = {"ci": limits, "open": open_sides}
    return found
