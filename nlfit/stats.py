"""Statistics at the solution: covariance, standard errors, intervals, goodness of fit.

Covariance (Bates & Watts 1988, ch. 2; scipy's curve_fit):

    C = s^2 (J^T J)^-1,  s^2 = RSS / dof      (default: sigma are relative weights)
    C = (J^T J)^-1                            (--absolute-sigma: sigma are true std. devs.)

where J is the Jacobian of the weighted residuals (f - y) / sigma at the solution and RSS
their sum of squares (chi^2 when sigma is given). C is computed from the thin SVD
J = U S V^T as V diag(1/S^2) V^T, never by inverting J^T J, so its accuracy follows
cond(J) and not cond(J)^2. Singular values below eps * max(m, n) * S_max mark directions of
parameter space that the data do not determine: the parameters along each such direction
are reported as not identifiable, and no covariance is given (rather than huge numbers).

Intervals: value +- t_{dof}((1 + level)/2) * stderr (Student t; with --absolute-sigma the
normal quantile, since the variance is known). t-value = value / stderr.

Goodness of fit: rss, sigma = sqrt(rss / dof) (the residual standard deviation), r2 and
adjusted r2 against the weighted mean of the fitted response, chi2 and reduced chi2 (when
sigma is given), and the Gaussian log-likelihood with AIC and BIC. The variance counts as
a parameter when it is estimated (R's convention for nls): k = n_params + 1, else n_params.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CORRELATION_WARNING = 0.99


@dataclass
class Statistics:
    covariance: np.ndarray | None
    stderr: np.ndarray | None
    correlation: np.ndarray | None
    tvalues: np.ndarray | None
    intervals: np.ndarray | None  # shape (n, 2)
    rank: int
    unidentifiable: list[list[str]]
    values: dict
    warnings: list[str] = field(default_factory=list)


def factor_from_gram(gram: np.ndarray) -> np.ndarray:
    """R = diag(sqrt(e)) Q^T from G = Q diag(e) Q^T: R^T R = G, so R has J's singular values
    and right singular vectors, and can stand in for J (large m, where J is not kept)."""
    eigvals, basis = np.linalg.eigh(0.5 * (gram + gram.T))
    return (np.sqrt(np.maximum(eigvals, 0.0))[:, None] * basis.T)[::-1]


def _null_space(jac: np.ndarray, keep: np.ndarray, vt: np.ndarray) -> np.ndarray:
    n = jac.shape[1]
    if vt.shape[0] == n:
        return vt[~keep]
    _, _, full_vt = np.linalg.svd(jac, full_matrices=True)
    return full_vt[int(np.count_nonzero(keep)) :]


def compute(
    jac: np.ndarray,
    residuals: np.ndarray,
    params: np.ndarray,
    param_names,
    y: np.ndarray,
    sigma: np.ndarray | None,
    absolute_sigma: bool = False,
    conf_level: float = 0.95,
    sandwich_middle: np.ndarray | None = None,
) -> Statistics:
    """Statistics of a fit. ``jac`` is the Jacobian (or a square factor of J^T J) of the
    parameters that were estimated. With ``sandwich_middle`` = B (robust losses) the
    covariance is the sandwich n/dof A^-1 B A^-1 with A = J~^T J~ (Huber 1967; White 1980)."""
    with np.errstate(all="ignore"):  # overflow in extreme data shows as None/inf, not as warnings
        return _compute(jac, residuals, params, param_names, y, sigma, absolute_sigma, conf_level, sandwich_middle)


def _compute(jac, residuals, params, param_names, y, sigma, absolute_sigma, conf_level, sandwich_middle) -> Statistics:
    # scipy.special, not scipy.stats: the same quantiles for a third of the import time.
    from scipy.special import ndtri, stdtrit

    n_points, n_params = residuals.shape[0], jac.shape[1]  # jac may be a square factor R with R^T R = J^T J
    dof = n_points - n_params
    rss = float(residuals @ residuals)
    weights = np.ones_like(y) if sigma is None else 1.0 / np.asarray(sigma) ** 2
    values: dict = {"rss": rss, "n": int(n_points), "dof": int(dof)}
    values["sigma"] = math.sqrt(rss / dof) if dof > 0 else None
    mean = float(np.sum(weights * y) / np.sum(weights))
    tss = float(np.sum(weights * (y - mean) ** 2))
    values["r2"] = 1.0 - rss / tss if tss > 0 else None
    values["r2_adj"] = 1.0 - (rss / dof) / (tss / (n_points - 1)) if tss > 0 and dof > 0 and n_points > 1 else None
    values["chi2"] = rss if sigma is not None else None
    values["reduced_chi2"] = rss / dof if sigma is not None and dof > 0 else None
    log_sigma = float(np.sum(np.log(sigma))) if sigma is not None else 0.0
    if absolute_sigma and sigma is not None:
        loglik = -0.5 * rss - log_sigma - 0.5 * n_points * math.log(2 * math.pi)
        k = n_params
    else:
        variance = rss / n_points
        loglik = -0.5 * n_points * (math.log(2 * math.pi * variance) + 1.0) - log_sigma if variance > 0 else math.inf
        k = n_params + 1
    values["loglik"] = loglik
    values["aic"] = 2 * k - 2 * loglik
    values["bic"] = k * math.log(n_points) - 2 * loglik

    result = Statistics(None, None, None, None, None, 0, [], values)
    if not np.all(np.isfinite(jac)):
        result.warnings.append("the Jacobian at the solution is not finite: no standard errors")
        return result
    _, singular, vt = np.linalg.svd(jac, full_matrices=False)
    cutoff = np.finfo(float).eps * max(n_points, n_params) * (singular[0] if singular.size else 0.0)
    keep = singular > cutoff
    result.rank = int(np.count_nonzero(keep))
    for vector in _null_space(jac, keep, vt):
        involved = [param_names[j] for j in np.flatnonzero(np.abs(vector) > 1e-3 * np.max(np.abs(vector)))]
        result.unidentifiable.append(involved)
        result.warnings.append(
            f"rank-deficient Jacobian: {', '.join(involved)} are not identifiable from the data (only a combination of them is); no standard errors"
        )
    if result.rank < n_params:
        return result
    if dof <= 0 and not absolute_sigma:
        result.warnings.append(f"{n_points} points for {n_params} parameters: no degrees of freedom, no standard errors")
        return result
    scaled = vt.T / singular
    covariance = scaled @ scaled.T
    if sandwich_middle is not None:
        covariance = covariance @ sandwich_middle @ covariance * (n_points / dof)
    elif not (absolute_sigma and sigma is not None):
        covariance = covariance * (rss / dof)
    stderr = np.sqrt(np.diag(covariance))
    correlation = covariance / np.outer(stderr, stderr)
    np.fill_diagonal(correlation, 1.0)
    if absolute_sigma and sigma is not None:
        quantile = float(ndtri(0.5 + conf_level / 2))
    else:
        quantile = float(stdtrit(dof, 0.5 + conf_level / 2))
    result.covariance = covariance
    result.stderr = stderr
    result.correlation = correlation
    result.tvalues = np.where(stderr > 0, params / np.where(stderr > 0, stderr, 1.0), np.inf)
    result.intervals = np.column_stack([params - quantile * stderr, params + quantile * stderr])
    values["conf_level"] = conf_level
    values["t_quantile"] = quantile
    for i in range(n_params):
        for j in range(i + 1, n_params):
            if abs(correlation[i, j]) > CORRELATION_WARNING:
                result.warnings.append(f"{param_names[i]} and {param_names[j]} are strongly correlated (rho = {correlation[i, j]:+.4f})")
    return result
