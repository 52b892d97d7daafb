"""Predictions from a saved fit with confidence and prediction bands (delta method).

For new points x the model value is f(x, p). With G = df/dp (from JAX, forward mode) and
the fit's covariance C:

    confidence band   f +- q * sqrt(diag(G C G^T))           (uncertainty of the curve)
    prediction band   f +- q * sqrt(diag(G C G^T) + s^2)     (a new observation)

q is the Student t quantile with the fit's degrees of freedom (the normal quantile when the
fit used --absolute-sigma), s^2 = rss / dof the residual variance (1 with absolute sigma,
that is, a new point of unit standard deviation). For a transformed-response formula such
as ``log(y) = ...`` the values and bands are on the transformed scale.
"""

from __future__ import annotations

import numpy as np

from nlfit.errors import InputError


def load_result(payload: dict):
    """Model, parameters, covariance and stats from a ``nlfit fit --format json`` result."""
    from nlfit.models.registry import model_from_json

    if isinstance(payload, list):
        raise InputError("the fit result is a method comparison (a list); save a single fit for predict")
    try:
        info = dict(payload["model_info"])
        info.setdefault("x", payload.get("data", {}).get("x"))
        info.setdefault("y", payload.get("data", {}).get("y"))
        params = np.array([entry["value"] for entry in payload["params"].values()], dtype=float)
        stats = payload["stats"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"not an nlfit fit result (missing {exc})") from None
    covariance = payload.get("covariance")
    model = model_from_json(info)
    return model, params, (None if covariance is None else np.array(covariance, dtype=float)), stats


def predict(payload: dict, x: np.ndarray, conf_level: float | None = None) -> dict:
    """Columns: y, conf_lo, conf_hi, pred_lo, pred_hi (bands empty when the fit has no covariance)."""
    from scipy.special import ndtri, stdtrit

    from nlfit._jax import jax, jnp

    model, params, covariance, stats = load_result(payload)
    x_array = jnp.asarray(x, dtype=jnp.float64)
    values = np.asarray(model.predict(jnp.asarray(params), x_array))
    out = {"y": values}
    if covariance is None:
        return out
    gradient = np.asarray(jax.jacfwd(lambda p: model.predict(p, x_array))(jnp.asarray(params)))
    variance = np.einsum("ij,jk,ik->i", gradient, covariance, gradient)
    level = stats.get("conf_level", 0.95) if conf_level is None else conf_level
    absolute = bool(payload.get("absolute_sigma"))
    dof = stats.get("dof") or 0
    if absolute:
        quantile, noise = float(ndtri(0.5 + level / 2)), 1.0
    else:
        quantile, noise = float(stdtrit(dof, 0.5 + level / 2)), (stats.get("sigma") or 0.0) ** 2
    half_conf = quantile * np.sqrt(variance)
    half_pred = quantile * np.sqrt(variance + noise)
    out.update(conf_lo=values - half_conf, conf_hi=values + half_conf, pred_lo=values - half_pred, pred_hi=values + half_pred)
    return out
