"""Predictions from a saved fit with confidence and prediction bands (delta method).

For new points x the model value is f(x, p). With G = df/dp (from JAX, forward mode) and
the fit's covariance C:

    confidence band   f +- q * sqrt(diag(G C G^T))           (uncertainty of the curve)
    prediction band   f +- q * sqrt(diag(G C G^T) + s^2)     (a new observation)

q is the Student t quantile with the fit's degrees of freedom (the normal quantile when the
fit used --absolute-sigma), s^2 = rss / dof the residual variance (1 with absolute sigma,
that is, a new point of unit standard deviation). A fit saved with ``--bootstrap`` also
carries its refits' parameters (``bootstrap.sample``): the bootstrap band ``boot_lo``,
``boot_hi`` is then, at each x, the percentile interval of the curves of that sample. For a transformed-response formula such
as ``log(y) = ...`` the values and bands are on the transformed scale.
"""

from __future__ import annotations

import numpy as np

from nlfit import quantiles
from nlfit.schema import SavedFit, check_fit_result


def load_result(payload, source: str = "fit result"):
    """(model, params, covariance or None, stats) from a ``nlfit fit --format json`` result,
    checked by ``nlfit.schema.check_fit_result`` (an InputError naming the key otherwise)."""
    saved = check_fit_result(payload, source)
    return saved.model, saved.params, saved.covariance, saved.stats


def predict(payload, x: np.ndarray, conf_level: float | None = None, source: str = "fit result") -> dict:
    """Columns: y, each component of a sum of named models (``components``), conf_lo,
    conf_hi, pred_lo, pred_hi (bands empty when the fit has no covariance), and boot_lo,
    boot_hi for a fit saved with its bootstrap sample."""
    return predict_saved(check_fit_result(payload, source), x, conf_level)


def predict_saved(saved: SavedFit, x: np.ndarray, conf_level: float | None = None) -> dict:
    """``predict`` for a result already checked by ``check_fit_result``. For a global fit
    (``--share``), every group's curve: the columns of each suffixed ``[GROUP]``."""
    groups = getattr(saved.model, "groups", None)
    x = np.asarray(x, dtype=np.float64)
    if groups is None or (x.ndim == 2 and x.shape[1] == len(saved.model.x_names) + 1):  # rows that carry their group's code
        return _predict(saved, x, conf_level)
    out = {}
    for code, label in enumerate(groups):
        coded = np.column_stack([x.reshape(len(x), -1), np.full(len(x), float(code))])
        out.update({f"{key}[{label}]": values for key, values in _predict(saved, coded, conf_level).items()})
    return out


def _predict(saved: SavedFit, x: np.ndarray, conf_level: float | None) -> dict:
    from nlfit._jax import jax, jnp

    model, params, covariance, stats = saved.model, saved.params, saved.covariance, saved.stats
    x_array = jnp.asarray(x, dtype=jnp.float64)
    values = np.asarray(model.predict(jnp.asarray(params), x_array))
    out = {"y": values, **components(model, params, x)}
    level = (stats["conf_level"] or 0.95) if conf_level is None else conf_level
    boot = {}
    if saved.bootstrap is not None:  # after the delta-method bands
        curves = np.asarray(jax.vmap(lambda p: model.predict(p, x_array))(jnp.asarray(saved.bootstrap)))
        boot["boot_lo"], boot["boot_hi"] = np.quantile(curves, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    if covariance is None:
        return {**out, **boot}
    gradient = np.asarray(jax.jacfwd(lambda p: model.predict(p, x_array))(jnp.asarray(params)))
    variance = np.einsum("ij,jk,ik->i", gradient, covariance, gradient)
    dof = stats["dof"] or 0
    if saved.absolute_sigma:
        quantile, noise = quantiles.normal(0.5 + level / 2), 1.0
    else:
        quantile = float(quantiles.student_t(dof, 0.5 + level / 2))
        noise = _square(stats["sigma"] or 0.0)
    half_conf = quantile * np.sqrt(variance)
    half_pred = quantile * np.sqrt(variance + noise)
    out.update(conf_lo=values - half_conf, conf_hi=values + half_conf, pred_lo=values - half_pred, pred_hi=values + half_pred)
    return {**out, **boot}


def components(model, params, x) -> dict:
    """For a sum of named models ('gaussian+gaussian+linear'): each component's curve at x,
    under its prefix (columns ``g1``, ``g2``, ``lin1``); nothing for any other model."""
    parts = getattr(model, "component_models", None)
    if parts is None or len(model.components) < 2:
        return {}
    from nlfit.models.expression import evaluate_numpy

    params = np.asarray(params, dtype=np.float64)
    return {label: evaluate_numpy(component, params[part], np.asarray(x, dtype=np.float64)) for label, component, part in parts()}


def _square(value: float) -> float:
    """value² without an OverflowError (a residual scale of 1e308 gives infinite bands)."""
    with np.errstate(over="ignore"):
        return float(np.square(np.float64(value)))


INVERSE_GRID = 4097  # points of the curve searched for each crossing of a value


def inverse(saved: SavedFit, values, low: float, high: float, conf_level: float | None = None) -> tuple[dict, list[float]]:
    """``predict --y``: every x in [low, high] where the fitted curve equals each value (one
    predictor): the crossings of f(x) - v between the points of an even grid, refined by
    Brent's method, and an exact touch at a grid point. The delta-method standard error of
    x is sqrt(g^T C g) / |df/dx| (g = df/dparams at x), the interval x ± q·stderr with the
    fit's quantile. Returns (columns, the values with no x)."""
    from scipy.optimize import brentq

    from nlfit._jax import jax, jnp

    model, params = saved.model, jnp.asarray(saved.params)

    def curve(x):
        return np.asarray(model.predict(params, jnp.asarray(np.atleast_1d(np.asarray(x, dtype=np.float64)))), dtype=np.float64)

    grid = np.linspace(low, high, INVERSE_GRID)
    on_grid = curve(grid)
    level = (saved.stats["conf_level"] or 0.95) if conf_level is None else conf_level
    quantile = quantiles.normal(0.5 + level / 2) if saved.absolute_sigma else float(quantiles.student_t(saved.stats["dof"] or 0, 0.5 + level / 2))
    rows: dict = {"given": [], "x": [], "stderr": [], "lo": [], "hi": []}
    missing = []
    for value in values:
        gap = on_grid - value
        roots = [float(grid[i]) for i in np.flatnonzero(gap == 0.0)]
        for i in np.flatnonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0):
            roots.append(
                float(
                    brentq(lambda x, v=value: float(curve(x)[0]) - v, grid[i], grid[i + 1], xtol=1e-14 * max(1.0, abs(grid[i])), rtol=4 * np.finfo(float).eps)
                )
            )
        if not roots:
            missing.append(float(value))
        for root in sorted(set(roots)):
            stderr = None
            if saved.covariance is not None:
                point = jnp.asarray([root])
                g = np.asarray(jax.jacfwd(lambda p, point=point: model.predict(p, point)[0])(params))
                slope = float(jax.grad(lambda x: model.predict(params, jnp.reshape(x, (1,)))[0])(jnp.asarray(root)))
                variance = float(g @ saved.covariance @ g)
                stderr = float(np.sqrt(variance)) / abs(slope) if slope != 0 and np.isfinite(variance) and variance >= 0 else None
            rows["given"].append(float(value))
            rows["x"].append(root)
            rows["stderr"].append(np.nan if stderr is None else stderr)
            rows["lo"].append(np.nan if stderr is None else root - quantile * stderr)
            rows["hi"].append(np.nan if stderr is None else root + quantile * stderr)
    return {key: np.asarray(column, dtype=np.float64) for key, column in rows.items()}, missing
