"""Statistics at the solution: covariance, standard errors, intervals, goodness of fit.

Covariance (Bates & Watts 1988, ch. 2; scipy's curve_fit):

    C = s^2 (J^T J)^-1,  s^2 = RSS / dof      (default: sigma are relative weights)
    C = (J^T J)^-1                            (--absolute-sigma: sigma are true std. devs.)

where J is the Jacobian of the weighted residuals (f - y) / sigma at the solution and RSS
their sum of squares (chi^2 when sigma is given). C is computed from the thin SVD of J (or
of its R factor, from a streaming QR for large data: ``nlfit.derivatives.qr_factor``),
C = V diag(1/S^2) V^T, never by inverting J^T J, so its accuracy follows cond(J) and not
cond(J)^2. Singular values below eps * max(m, n) * S_max mark directions of parameter space
that the data do not determine: the parameters along each such direction are reported as
not identifiable, and no covariance is given (rather than huge numbers).

Robust losses: the sandwich n/dof A^-1 B A^-1 with A = J~^T J~ (the rescaled Jacobian of
the robust cost) and B = J^T diag((rho' r)^2) J (Huber 1967; White 1980).

Intervals: value +- t_{dof}((1 + level)/2) * stderr (Student t; with --absolute-sigma the
normal quantile, since the variance is known). t-value = value / stderr.

Goodness of fit: rss, sigma = sqrt(rss / dof) (the residual standard deviation), r2 and
adjusted r2 against the weighted mean of the fitted response, chi2 and reduced chi2 (when
sigma is given), and the Gaussian log-likelihood with AIC and BIC. The variance counts as
a parameter when it is estimated (R's convention for nls): k = n_params + 1, else n_params.

Everything is computed for G fits at once (a single fit is G = 1), from residuals and
Jacobians divided by each fit's residual scale (``nlfit.problem``): the sums of squares are
formed in those units and converted back, so data of any magnitude neither underflows nor
overflows here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nlfit import quantiles
from nlfit.numerics import centred_squares, on_real, sum_squares
from nlfit.warning import FitWarning

CORRELATION_WARNING = 0.99


@dataclass
class Statistics:
    """G fits' statistics over their p estimated parameters (arrays with a leading G axis;
    NaN where a value is not available)."""

    covariance: np.ndarray  # (G, p, p)
    stderr: np.ndarray  # (G, p)
    correlation: np.ndarray  # (G, p, p)
    tvalues: np.ndarray  # (G, p)
    intervals: np.ndarray  # (G, p, 2)
    has_covariance: np.ndarray  # (G,) bool
    rank: np.ndarray  # (G,)
    values: dict  # one column (G,) per statistic: rss, sigma, r2, ... (NaN where not defined)
    warnings: dict = field(default_factory=dict)  # {g: [FitWarning, ...]} for the fits that have any
    svd: tuple | None = None  # (singular (G, p), V^T (G, p, p)) of the factor with its columns scaled to unit norm (zero where not finite)


def compute(
    jac: np.ndarray,
    residuals: np.ndarray,
    params: np.ndarray,
    param_names,
    y: np.ndarray,
    sigma: np.ndarray | None,
    counts: np.ndarray,
    scale: np.ndarray,
    real: np.ndarray | None = None,
    absolute_sigma: bool = False,
    conf_level: float = 0.95,
    sandwich_middle: np.ndarray | None = None,
    rss_scaled: np.ndarray | None = None,
) -> Statistics:
    """Statistics of G fits.

    ``jac`` (G, M, p): the scaled Jacobian of the estimated parameters, or a square factor R
    with R^T R = J^T J (M = p). ``residuals`` (G, L) scaled; ``y`` (G, L) the fitted response
    (unscaled); ``sigma`` (G, L) or None; ``counts`` (G,) the real points; ``scale`` (G,) the
    residual scales; ``real`` (G, L) marks real points (padding of grouped fits is not);
    ``sandwich_middle`` (G, p, p): B for a robust loss (scaled units); ``rss_scaled`` (G,):
    the residuals' sum of squares over the real rows, where the caller has it (a pass fewer).
    """
    with np.errstate(all="ignore"):  # overflow in extreme data shows as None/inf, not as warnings
        return _compute(jac, residuals, params, list(param_names), y, sigma, counts, scale, real, absolute_sigma, conf_level, sandwich_middle, rss_scaled)


def _compute(jac, residuals, params, names, y, sigma, counts, scale, real, absolute_sigma, conf_level, middle, rss_scaled=None) -> Statistics:
    groups, n_params = params.shape
    counts = np.asarray(counts, dtype=np.int64)
    scale = np.asarray(scale, dtype=np.float64)
    real = np.ones(residuals.shape, dtype=bool) if real is None else np.asarray(real, dtype=bool)
    absolute = bool(absolute_sigma) and sigma is not None
    rss_scaled = sum_squares(on_real(residuals, real)) if rss_scaled is None else np.asarray(rss_scaled, dtype=np.float64)
    values = _fit_quality(rss_scaled, y, sigma, counts, scale, real, n_params, absolute)
    nan = np.full((groups, n_params), np.nan)
    result = Statistics(
        covariance=np.full((groups, n_params, n_params), np.nan),
        stderr=nan.copy(),
        correlation=np.full((groups, n_params, n_params), np.nan),
        tvalues=nan.copy(),
        intervals=np.full((groups, n_params, 2), np.nan),
        has_covariance=np.zeros(groups, dtype=bool),
        rank=np.zeros(groups, dtype=np.int64),
        values=values,
        warnings={},
    )
    if n_params == 0:
        return result
    dof = counts - n_params
    finite, column, keep, singular, vt = _rank(jac, counts, names, result)
    result.svd = (singular, vt)
    usable = finite & (result.rank == n_params) & (np.full(groups, absolute) | (dof > 0))
    for g in np.flatnonzero(finite & (result.rank == n_params) & ~usable):
        _warn(result.warnings, g, FitWarning("no-dof", f"{counts[g]} points for {n_params} parameters: no degrees of freedom, no standard errors"))
    if not np.any(usable):
        return result
    scaled = np.swapaxes(vt, 1, 2) / np.where(keep, singular, np.inf)[:, None, :] / column[:, :, None]
    factor = 1.0 / scale if absolute else np.sqrt(rss_scaled / np.where(dof > 0, dof, 1))
    covariance, stderr, correlation = _covariance(scaled, factor, middle, counts, dof)
    _inference(result, params, covariance, stderr, correlation, usable, dof, absolute, conf_level)
    upper = np.triu(np.abs(np.nan_to_num(result.correlation)) > CORRELATION_WARNING, k=1)
    for g, i, j in zip(*np.nonzero(upper), strict=True):
        message = f"{names[i]} and {names[j]} are strongly correlated (rho = {correlation[g, i, j]:+.4f})"
        _warn(result.warnings, g, FitWarning("correlated", message, params=(names[i], names[j])))
    return result


def _fit_quality(rss_scaled, y, sigma, counts, scale, real, n_params: int, absolute: bool) -> dict:
    """The columns rss, n, dof, sigma, r2, r2_adj, chi2, reduced_chi2, loglik, aic, bic (and
    conf_level, t_quantile as NaN until the covariance sets them)."""
    groups = len(counts)
    dof = counts - n_params
    rss = rss_scaled * scale**2
    sigma_values = None if sigma is None else np.asarray(sigma, dtype=np.float64)
    # The weighted mean with weights 1/sigma^2 normalized by the largest sigma (no overflow for
    # sigma near 1e-300), and the total sum of squares in the units of the scaled residuals.
    plain = sigma_values is None and np.all(real)  # the same sums without the masks and weights of 1 (one pass fewer each)
    tss_scaled = centred_squares(y, scale)[1] if plain else None
    if plain and tss_scaled is None:  # sums that would over- or underflow: each value scaled first
        centred = y - np.sum(y, axis=1, keepdims=True) / y.shape[1]
        centred /= scale[:, None]
        tss_scaled = np.sum(np.square(centred, out=centred), axis=1)
    elif not plain:
        sigma_values = np.ones_like(y) if sigma_values is None else sigma_values
        reference = np.max(np.where(real, sigma_values, 0.0), axis=1, keepdims=True)
        weights = np.where(real, (reference / sigma_values) ** 2, 0.0)
        mean = np.sum(weights * np.where(real, y, 0.0), axis=1) / np.sum(weights, axis=1)
        tss_scaled = np.sum(np.where(real, (y - mean[:, None]) / (sigma_values * scale[:, None]), 0.0) ** 2, axis=1)
    log_sigma = np.sum(np.where(real, np.log(sigma_values), 0.0), axis=1) if sigma is not None else np.zeros(groups)
    if absolute:
        loglik = -0.5 * rss - log_sigma - 0.5 * counts * math.log(2 * math.pi)
        k = n_params
    else:
        log_variance = 2.0 * np.log(scale) + np.log(rss_scaled / counts)
        loglik = np.where(rss_scaled > 0, -0.5 * counts * (math.log(2 * math.pi) + log_variance + 1.0) - log_sigma, np.inf)
        k = n_params + 1
    good = dof > 0
    safe_dof = np.where(good, dof, 1)
    safe_tss = np.where(tss_scaled > 0, tss_scaled, 1.0)
    nan = np.full(groups, np.nan)
    return {
        "rss": rss,
        "n": counts,
        "dof": dof,
        "sigma": np.where(good, scale * np.sqrt(rss_scaled / safe_dof), np.nan),
        "r2": np.where(tss_scaled > 0, 1.0 - rss_scaled / safe_tss, np.nan),
        "r2_adj": np.where((tss_scaled > 0) & good & (counts > 1), 1.0 - (rss_scaled / safe_dof) / (safe_tss / np.maximum(counts - 1, 1)), np.nan),
        "chi2": rss if sigma is not None else nan,
        "reduced_chi2": np.where(good, rss / safe_dof, np.nan) if sigma is not None else nan,
        "loglik": loglik,
        "aic": 2 * k - 2 * loglik,
        "bic": k * np.log(np.maximum(counts, 1)) - 2 * loglik,
        "conf_level": nan.copy(),
        "t_quantile": nan.copy(),
    }


def _rank(jac, counts, names, result: Statistics):
    """The numerical rank of each Jacobian (into ``result.rank``, with a warning for each
    non-finite or rank-deficient one) from the SVD of its columns scaled to unit norm: the
    rank test and the covariance then do not depend on the parameters' units (a parameter of
    size 1e32 next to one of size 0.06 is no rank deficiency). Returns (finite, column norms,
    kept singular values, singular values, V^T)."""
    n_params = jac.shape[2]
    finite = np.all(np.isfinite(jac), axis=(1, 2))
    for g in np.flatnonzero(~finite):
        _warn(result.warnings, g, FitWarning("jacobian-nonfinite", "the Jacobian at the solution is not finite: no standard errors"))
    usable = np.where(finite[:, None, None], jac, 0.0)
    largest = np.max(np.abs(usable), axis=1, keepdims=True)
    largest = np.where(largest > 0, largest, 1.0)
    column = largest[:, 0, :] * np.sqrt(np.sum((usable / largest) ** 2, axis=1))
    column = np.where(column > 0, column, 1.0)
    safe = usable / column[:, None, :]
    _, singular, vt = np.linalg.svd(safe, full_matrices=False)
    cutoff = np.finfo(float).eps * np.maximum(counts, n_params) * singular[:, 0]
    keep = singular > cutoff[:, None]
    rank = np.count_nonzero(keep, axis=1)
    result.rank = np.where(finite, rank, 0)
    for g in np.flatnonzero(finite & (rank < n_params)):
        for vector in _null_space(safe[g], keep[g], vt[g]):  # in equilibrated units: comparable entries
            involved = [names[j] for j in np.flatnonzero(np.abs(vector) > 1e-3 * np.max(np.abs(vector)))]
            message = f"rank-deficient Jacobian: {', '.join(involved)} are not identifiable from the data (only a combination of them is); no standard errors"
            _warn(result.warnings, g, FitWarning("not-identifiable", message, params=tuple(involved)))
    return finite, column, keep, singular, vt


def _covariance(scaled, factor, middle, counts, dof):
    """(covariance, stderr, correlation) from ``scaled`` = D^-1 V S^-1 (so (J^T J)^-1 =
    scaled scaled^T): the sandwich with ``middle`` for a robust loss, else factor^2 (J^T J)^-1."""
    if middle is not None:
        inverse = scaled @ np.swapaxes(scaled, 1, 2)
        covariance = inverse @ middle @ inverse * (counts / np.where(dof > 0, dof, 1))[:, None, None]
        stderr = np.sqrt(np.einsum("gii->gi", covariance))
        correlation = covariance / (stderr[:, :, None] * stderr[:, None, :])
    else:
        # C = R R^T with R = scaled times the residual scale: the standard errors are the norms
        # of R's rows and the correlations their cosines, so both stay right for parameters of
        # size 1e-300, whose variances (1e-600) are below the float range.
        root = scaled * factor[:, None, None]
        largest = np.max(np.abs(root), axis=2, keepdims=True)
        safe = np.where(largest > 0, largest, 1.0)
        stderr = largest[:, :, 0] * np.sqrt(np.sum((root / safe) ** 2, axis=2))
        unit = root / np.where(stderr > 0, stderr, 1.0)[:, :, None]
        correlation = unit @ np.swapaxes(unit, 1, 2)
        covariance = root @ np.swapaxes(root, 1, 2)
    index = np.arange(scaled.shape[1])
    correlation[:, index, index] = 1.0
    return covariance, stderr, correlation


def _inference(result: Statistics, params, covariance, stderr, correlation, usable, dof, absolute: bool, conf_level: float) -> None:
    """t values and intervals at ``conf_level`` (normal quantiles with known sigma, Student's
    t otherwise) into ``result``, for the ``usable`` fits only."""
    if absolute:
        quantile = np.full(len(dof), quantiles.normal(0.5 + conf_level / 2))
    else:
        quantile = quantiles.student_t(np.where(dof > 0, dof, 1), 0.5 + conf_level / 2)
    tvalues = np.where(stderr > 0, params / np.where(stderr > 0, stderr, 1.0), np.inf)
    intervals = np.stack([params - quantile[:, None] * stderr, params + quantile[:, None] * stderr], axis=2)
    mask = usable[:, None]
    result.covariance = np.where(mask[:, :, None], covariance, np.nan)
    result.stderr = np.where(mask, stderr, np.nan)
    result.correlation = np.where(mask[:, :, None], correlation, np.nan)
    result.tvalues = np.where(mask, tvalues, np.nan)
    result.intervals = np.where(mask[:, :, None], intervals, np.nan)
    result.has_covariance = usable
    result.values["conf_level"] = np.where(usable, conf_level, np.nan)
    result.values["t_quantile"] = np.where(usable, quantile, np.nan)


def _warn(warnings: dict, g, warning: FitWarning) -> None:
    warnings.setdefault(int(g), []).append(warning)


def _null_space(jac: np.ndarray, keep: np.ndarray, vt: np.ndarray) -> np.ndarray:
    n = jac.shape[1]
    if vt.shape[0] == n:
        return vt[~keep]
    _, _, full_vt = np.linalg.svd(jac, full_matrices=True)
    return full_vt[int(np.count_nonzero(keep)) :]


def residual_tests(residuals, x=None, n_params: int = 0) -> dict:
    """Tests of the residuals of one fit (nlstools' ``nlsResiduals``, Prism's diagnostics):

    - ``shapiro``: Shapiro-Wilk W and p (``scipy.stats.shapiro``; 3 to 5000 residuals);
    - ``runs``: the Wald-Wolfowitz runs test on the residuals' signs in the order of x (one
      predictor; zeros left out): the number of runs, its expectation 2 n+ n- / n + 1, and the
      two-sided normal p (too few runs: systematic misfit);
    - ``replicates``: where x values repeat, the lack-of-fit F test of the residual sum of
      squares against the pure error within the replicates, F on (distinct x - parameters,
      n - distinct x) degrees of freedom.

    Each present test has ``reject`` (p < 0.05)."""
    from scipy import stats as distributions

    residuals = np.asarray(residuals, dtype=np.float64)
    finite = np.isfinite(residuals)
    residuals = residuals[finite]
    out: dict = {}
    if 3 <= residuals.size <= 5000 and np.ptp(residuals) > 0:
        w, p = distributions.shapiro(residuals)
        out["shapiro"] = {"W": float(w), "p": float(p), "reject": bool(p < 0.05)}
    if x is None or np.ndim(x) != 1:
        return out
    x = np.asarray(x, dtype=np.float64)[finite]
    signs = np.sign(residuals[np.argsort(x, kind="stable")])
    signs = signs[signs != 0]
    above, below = int(np.sum(signs > 0)), int(np.sum(signs < 0))
    if above and below:
        total = above + below
        runs = 1 + int(np.count_nonzero(signs[1:] != signs[:-1]))
        expected = 2.0 * above * below / total + 1.0
        variance = 2.0 * above * below * (2.0 * above * below - total) / (total**2 * (total - 1.0)) if total > 1 else 0.0
        p = float(2.0 * distributions.norm.sf(abs(runs - expected) / math.sqrt(variance))) if variance > 0 else 1.0
        out["runs"] = {"runs": runs, "expected": expected, "p": p, "reject": bool(p < 0.05)}
    distinct, where = np.unique(x, return_inverse=True)
    if distinct.size < x.size:
        means = np.bincount(where, weights=residuals) / np.bincount(where)
        pure = float(np.sum((residuals - means[where]) ** 2))
        df_pure, df_misfit = x.size - distinct.size, distinct.size - n_params
        if df_misfit > 0 and df_pure > 0 and pure > 0:
            misfit = float(np.sum(residuals**2)) - pure
            f_value = (misfit / df_misfit) / (pure / df_pure)
            p = float(distributions.f.sf(f_value, df_misfit, df_pure))
            out["replicates"] = {"F": f_value, "df": [df_misfit, df_pure], "p": p, "reject": bool(p < 0.05)}
    return out
