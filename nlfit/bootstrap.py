"""Bootstrap of a fit (``nlfit fit --bootstrap N``), its N refits as one batched solve.

Resampling (the draws: ``numpy.random.default_rng(seed).integers(0, m, size=(N, m))``, so a
script can repeat them exactly):

- ``residual`` (default, as R's ``nlstools::nlsBoot``): y* = f(x, θ̂) + e*, e* drawn with
  replacement from the centred residuals (with --sigma, from the centred standardized
  residuals, each multiplied back by its own row's sigma);
- ``cases``: rows (x, y, sigma) drawn with replacement.

Every resample is a group of one batched solve (``nlfit.batch.solve_only``: no post-processing), each refit
started from θ̂ with one start. Resamples whose refit did not converge are counted and left
out. The interval of each parameter is the percentile interval of the converged refits at
the fit's confidence level; the standard deviation of the refits is the bootstrap standard
error.

BCa (Efron's bias-corrected and accelerated interval, where cheap): the bias correction
z0 = Φ⁻¹(share of refits below the estimate), the acceleration a from the jackknife (the m
fits leaving out one row each, one more batched solve: a = Σd³ / (6 (Σd²)^1.5), d the
jackknife mean minus each leave-one-out estimate), and the percentile interval taken at
Φ(z0 + (z0 + z)/(1 − a (z0 + z))) for z the normal quantiles of the two tails. "Cheap": the
jackknife's m (m − 1) rows at most ``JACKKNIFE_VALUES``; beyond, no BCa (a warning says so).
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("residual", "cases")
JACKKNIFE_VALUES = 10_000_000  # rows of the jackknife's m refits (m (m - 1)) at most: BCa only where that is cheap


def resample_rows(rows: int, count: int, seed: int) -> np.ndarray:
    """(count, rows) row indices drawn with replacement: the draws of every kind."""
    return np.random.default_rng(seed).integers(0, rows, size=(count, rows))


def samples(dataset, model, params, options, count: int, kind: str = "residual", seed: int = 0):
    """(refitted parameters (count, n), converged (count,)) of ``count`` resamples."""
    from nlfit._jax import jnp
    from nlfit.batch import solve_only
    from nlfit.io.dataset import Dataset
    from nlfit.solvers.status import Status

    x = np.asarray(dataset.x, dtype=np.float64)
    y = np.asarray(model.transform_response(np.asarray(dataset.y, dtype=np.float64), x), dtype=np.float64)
    sigma = None if dataset.sigma is None else np.asarray(dataset.sigma, dtype=np.float64)
    picks = resample_rows(len(y), count, seed)
    if kind == "cases":
        xs, ys = x[picks].reshape(-1, *x.shape[1:]), y[picks].reshape(-1)
        sigmas = None if sigma is None else sigma[picks].reshape(-1)
    else:
        fitted = np.asarray(model.predict(jnp.asarray(params, dtype=jnp.float64), jnp.asarray(x)), dtype=np.float64)
        unit = np.ones_like(y) if sigma is None else sigma
        standardized = (y - fitted) / unit
        centred = standardized - np.mean(standardized)
        xs = np.tile(x.reshape(len(y), -1), (count, 1)).reshape(-1, *x.shape[1:])
        ys = (fitted[None, :] + unit[None, :] * centred[picks]).reshape(-1)
        sigmas = None if sigma is None else np.tile(sigma, count)
    data = Dataset(x=xs, y=ys, x_names=dataset.x_names, y_name=dataset.y_name, sigma=sigmas, groups=np.repeat(np.arange(count).astype(str), len(y)))
    plan = dataclasses.replace(options, starts=1, timeout=None)
    refits, statuses, _ = solve_only(data, _as_given(model), np.tile(np.asarray(params, dtype=np.float64), (count, 1)), plan)
    converged = np.array([Status(int(code)).success for code in statuses]) & np.all(np.isfinite(refits), axis=1)
    return refits, converged


def jackknife(dataset, model, params, options):
    """(leave-one-out estimates (m, n), converged (m,)): the fit without each row in turn, as
    one batched solve from ``params``; None when m (m - 1) exceeds JACKKNIFE_VALUES."""
    from nlfit.batch import solve_only
    from nlfit.io.dataset import Dataset
    from nlfit.solvers.status import Status

    x = np.asarray(dataset.x, dtype=np.float64)
    y = np.asarray(model.transform_response(np.asarray(dataset.y, dtype=np.float64), x), dtype=np.float64)
    m = len(y)
    if m < 3 or m * (m - 1) > JACKKNIFE_VALUES:
        return None
    base = np.arange(m - 1)
    rows = base[None, :] + (base[None, :] >= np.arange(m)[:, None])  # row i: every row but i
    sigma = None if dataset.sigma is None else np.asarray(dataset.sigma, dtype=np.float64)[rows].reshape(-1)
    data = Dataset(x=x[rows].reshape(-1, *x.shape[1:]), y=y[rows].reshape(-1), x_names=dataset.x_names, y_name=dataset.y_name, sigma=sigma,
                   groups=np.repeat(np.arange(m).astype(str), m - 1))  # fmt: skip
    plan = dataclasses.replace(options, starts=1, timeout=None)
    estimates, statuses, _ = solve_only(data, _as_given(model), np.tile(np.asarray(params, dtype=np.float64), (m, 1)), plan)
    converged = np.array([Status(int(code)).success for code in statuses]) & np.all(np.isfinite(estimates), axis=1)
    return estimates, converged


def bca(kept: np.ndarray, estimate: float, jack: np.ndarray, level: float) -> list | None:
    """The BCa interval [low, high] of one parameter from its converged refits ``kept``, its
    estimate and its leave-one-out estimates ``jack``; None where it is not defined (every
    refit on one side of the estimate, or a jackknife without spread)."""
    from math import erf, sqrt

    from nlfit import quantiles

    below = float(np.mean(kept < estimate))
    d = np.mean(jack) - jack
    spread = float(np.sum(d**2))
    if not 0.0 < below < 1.0 or len(kept) < 2 or spread <= 0.0:
        return None
    z0 = quantiles.normal(below)
    a = float(np.sum(d**3)) / (6.0 * spread**1.5)
    ends = []
    for tail in (0.5 - level / 2, 0.5 + level / 2):
        z = z0 + quantiles.normal(tail)
        if a * z >= 1.0:
            return None
        ends.append(float(np.quantile(kept, 0.5 * (1.0 + erf((z0 + z / (1.0 - a * z)) / sqrt(2.0))))))
    return ends


def _as_given(model):
    """The model fitting the response as it is: the resampled y are already on the fitted
    scale (a formula's 'log(y) = ...' side applied once, above)."""
    if model.fits_response_as_given:
        return model
    if hasattr(model, "base"):  # a global fit (nlfit.models.shared.GlobalModel) of a transformed formula
        return dataclasses.replace(model, base=_as_given(model.base))
    return dataclasses.replace(model, lhs=None)


def summary(names, draws: np.ndarray, converged: np.ndarray, level: float, kind: str, seed: int) -> dict:
    """The JSON's ``bootstrap``: counts, and per parameter the percentile interval, the
    median and the standard deviation of the converged refits."""
    kept = draws[converged]
    low, high = 0.5 - level / 2, 0.5 + level / 2
    out = {"n": int(len(draws)), "kind": kind, "seed": int(seed), "converged": int(converged.sum()), "failed": int((~converged).sum()), "params": {}}
    for i, name in enumerate(names):
        if len(kept) < 2:
            out["params"][name] = {"ci": [None, None], "median": None, "stderr": None}
            continue
        column = kept[:, i]
        out["params"][name] = {"ci": [float(np.quantile(column, low)), float(np.quantile(column, high))], "median": float(np.median(column)),
                               "stderr": float(np.std(column, ddof=1))}  # fmt: skip
    return out
