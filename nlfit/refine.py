"""Gauss-Newton refinement with residuals in extended precision (x87 long double).

Near an exact fit (NIST's Lanczos1 ends at RSS 1e-25 on values near 2.5) float64 residuals
are rounding noise, so the RSS, sigma and the standard errors that scale with it lose
digits. A model that can compute its values in long double (64-bit mantissa) says so through
``Model.long_double_values`` (formula models do); its fit is then refined by up to three steps -J^+ r with r in long double and J from AD, each kept only if the
long-double RSS falls. It applies only where it matters, when the residuals are within a
factor 1e6 of the float64 rounding of the data (|r| < 1e6 eps max|y|).
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 100_000


def applies(model, loss: str, n_points: int) -> bool:
    """Whether a fit can be refined: a model with long-double values, the plain loss, small data,
    and a long double wider than float64 (not on every platform)."""
    wider = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
    return model.long_double_values() is not None and loss == "linear" and n_points <= MAX_POINTS and wider


def candidates(residuals, sigma, y, real) -> np.ndarray:
    """(G,) the fits whose residuals (user units, (G, L)) are within a factor 1e6 of the float64
    rounding of their data: the only ones ``refine`` can improve."""
    unweighted = np.where(real, residuals * (1.0 if sigma is None else np.where(real, sigma, 1.0)), 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        typical = np.sqrt(np.sum(unweighted**2, axis=1) / np.maximum(np.count_nonzero(real, axis=1), 1))
    rounding = np.finfo(np.float64).eps * np.max(np.abs(np.where(real, y, 0.0)), axis=1)
    return typical < 1e6 * rounding


def refine(model, x, y, sigma, params, jac, residuals, extended: tuple | None = None):
    """(params, residuals) after the refinement, or None where it does not apply.

    ``x``, ``y`` (the fitted response), ``sigma`` (or None): one fit's real points; ``jac`` and
    ``residuals``: the weighted Jacobian and residuals (f - y) / sigma in the user's units;
    ``extended``: the data parsed in long double, (x, y) (a NIST file's), or None."""
    evaluate = model.long_double_values()
    if evaluate is None or not np.all(np.isfinite(jac)):
        return None
    long_x, long_y = extended if extended is not None else (x, None)
    long_x = np.asarray(long_x, dtype=np.longdouble)
    if long_y is None or not model.fits_response_as_given or len(long_y) != len(y):
        long_x = np.asarray(x, dtype=np.longdouble)
        long_y = np.asarray(y, dtype=np.longdouble)
    weights = np.ones(len(y), dtype=np.longdouble) if sigma is None else np.asarray(sigma, dtype=np.longdouble)

    def residuals_at(p):
        return (evaluate(p, long_x) - long_y) / weights

    rounding = np.finfo(np.float64).eps * float(np.max(np.abs(np.asarray(y, dtype=np.float64))))
    unweighted = np.asarray(residuals) * (1.0 if sigma is None else np.asarray(sigma))  # f - y
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
