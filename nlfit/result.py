"""From solved members to results: one post-processing path for every kind of fit.

``finish`` turns the winners of G problems (``nlfit.fitting.Solved``) into G
:class:`FitResult` objects: the statistics of all of them at once (``nlfit.stats``), the
checks that say when a result may be wrong (``nlfit.diagnostics``), and the JSON contract
(``FitResult.to_json``). A single fit is G = 1; a grouped fit's rows are the same JSON
without the history, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nlfit.io.write import json_number
from nlfit.solvers.status import Status

LARGE_DATA_POINTS = 100_000  # rows per group from which statistics use the R factor of a streaming QR


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
    termination: Status | None = None  # what stopped the solver, when ``status`` is SUSPECT
    starts: dict | None = None  # the multistart summary (None for one start)
    findings: list = field(default_factory=list)  # nlfit.diagnostics.Finding
    group: str | None = None
    options: dict | None = None  # every fit option in force, defaults included (FitOptions.to_json)

    @property
    def success(self) -> bool:
        return self.status.success

    @property
    def message(self) -> str:
        if self.status == Status.SUSPECT:
            fatal = [f.message for f in self.findings if f.fatal]
            reason = f" ({self.termination.label})" if self.termination is not None else ""
            return f"{self.status.message}{reason}: {fatal[0] if fatal else ''}".rstrip(": ")
        return self.status.message

    @property
    def loss(self) -> float:
        """The minimized objective: 1/2 ||r||^2, or the robust cost 1/2 C^2 sum rho((r/C)^2)."""
        return self.stats["loss"]

    def to_json(self, history: bool = True, options: bool = True, model_info: dict | None = None) -> dict:
        """The JSON contract; ``history`` and the ``options`` echo are left out of a grouped
        fit's rows (``BatchResult.rows``), which are one line each; ``model_info``: the
        model's description when the caller already has it (the rows of a grouped fit share it)."""
        n = len(self.param_names)
        values, stderr, tvalues = (_numbers(v, n) for v in (self.params, self.stderr, self.tvalues))
        intervals = None if self.intervals is None else np.asarray(self.intervals, dtype=np.float64)
        finite_intervals = None if intervals is None else np.all(np.isfinite(intervals), axis=1)
        fixed = [False] * n if self.fixed is None else np.asarray(self.fixed, dtype=bool).tolist()
        params = {}
        for i, name in enumerate(self.param_names):
            params[name] = {
                "value": values[i],
                "stderr": stderr[i],
                "ci": intervals[i].tolist() if intervals is not None and finite_intervals[i] else None,
                "tvalue": tvalues[i],
                "fixed": fixed[i],
                "at_bound": None if self.at_bound is None else self.at_bound[i],
            }

        def matrix(values):
            return None if values is None else _numbers(values, None)

        out = {} if self.group is None else {"group": self.group}
        out.update(
            {
                "success": self.success,
                "status": self.status.label,
                "message": self.message,
                "termination": (self.termination or self.status).label,
                "model": self.model.spec,
                "model_info": self.model.to_json() if model_info is None else model_info,
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
                "stats": {k: (json_number(v) if isinstance(v, float) else v) for k, v in self.stats.items()},
                "counts": self.counts,
                "starts": self.starts,
                "seconds": self.seconds,
                "warnings": self.warnings,
            }
        )
        if options and self.options is not None:
            out["options"] = self.options
        if history:
            out["history"] = [{k: (json_number(v) if isinstance(v, float) else v) for k, v in row.items()} for row in self.history]
        return out


def statistics_inputs(problems, state, statuses, jac_mode: str, factorization: str, loss: str, small: bool):
    """(factor (G, M, n), residuals (G, L), middle (G, n, n) or None, gradient (G, n)) at the
    reported points, in scaled units: the Jacobian itself (``small``: fewer rows per group
    than LARGE_DATA_POINTS) or its R factor from a streaming QR (more) for the covariance, the
    residuals, the sandwich's middle for a robust loss, and the gradient of the loss (with a
    robust loss, of J~ and r~). The solver's last linearization is reused where it is at the
    reported point and of the right kind."""
    from nlfit import derivatives
    from nlfit.problem import rho

    params = state.params
    stale = bool(np.any(np.isin(statuses, (Status.INTERRUPTED, Status.TIMEOUT, Status.TOO_FEW_POINTS))))
    robust = loss != "linear"
    mode = "rev" if jac_mode == "rev" else "fwd"
    if small:
        if jac_mode != "fd" and not robust and not stale and state.local.jac is not None:
            jac, residuals = np.asarray(state.local.jac), np.asarray(state.local.residuals)
        else:
            residuals, jac = (np.asarray(v) for v in derivatives.jacobian_batch(params, problems, mode))
        if not robust:
            return jac, residuals, None, np.einsum("gmn,gm->gn", jac, residuals)
        z = (residuals / np.asarray(problems.f_scale)[:, None]) ** 2
        first, second = (np.asarray(v) for v in rho(z, loss, np)[1:])
        influence = jac * (first * residuals)[:, :, None]
        weight = np.sqrt(np.maximum(first + 2 * second * z, np.finfo(float).eps))
        return jac * weight[:, :, None], residuals, np.einsum("gmi,gmj->gij", influence, influence), np.einsum("gmn,gm->gn", jac, first * residuals)
    if factorization == "qr" and jac_mode != "fd" and not stale and state.local.r_factor is not None:
        residuals, factor, grad = np.asarray(state.local.residuals), np.asarray(state.local.r_factor), np.asarray(state.local.grad)
    else:
        residuals, factor, _, grad = (np.asarray(v) for v in derivatives.qr_linearize_batch(params, problems, "fwd"))
    middle = np.asarray(derivatives.influence_gram_batch(params, problems)) if robust else None
    return factor, residuals, middle, grad


POLISH_STEPS = 3


def polish(problems, params, residuals, jac, statuses, jac_mode: str):
    """Up to POLISH_STEPS Gauss-Newton steps from each converged fit, each kept only where it
    lowers the sum of squares or, where the sum is flat to rounding, the gradient measure.
    The solvers stop when the loss no longer falls by a relative ftol, which leaves the
    parameters accurate to about sqrt(ftol); at a minimum the Gauss-Newton step removes that
    remainder, so the answer no longer depends on how the iterations happened to approach it
    (for example on the rounding of rescaled data). Parameters held at a bound or fixed do
    not move. One compiled call for all groups. Returns (params, residuals, jac)."""
    from nlfit._jax import compiled

    converged = np.isin(statuses, (Status.GTOL, Status.FTOL, Status.XTOL))
    if not np.any(converged):
        return params, residuals, jac
    mode = "rev" if jac_mode == "rev" else "fwd"
    out = compiled(_polish_groups, ("mode",), int(np.prod(np.shape(residuals))))(params, residuals, jac, converged, problems, mode=mode)
    return tuple(np.asarray(v) for v in out)


def _polish_groups(params, residuals, jac, converged, problems, *, mode):
    from nlfit import derivatives
    from nlfit._jax import jax, jnp
    from nlfit.solvers.directions import column_norms

    eps = jnp.finfo(jnp.float64).eps

    def cosine(columns, r):
        norms = column_norms(columns)
        size = column_norms(r[:, None])[0]
        unit = columns / jnp.where(norms > 0, norms, 1.0)[None, :]
        return jnp.max(jnp.abs(unit.T @ (r / jnp.where(size > 0, size, 1.0))))

    def one(p, r, j, ok, problem):
        def body(_, carry):
            p, r, j, done = carry
            free = ((p > problem.lower) & (p < problem.upper)).astype(j.dtype)
            columns = j * free[None, :]
            norms = column_norms(columns)
            norms = jnp.where(norms > 0, norms, 1.0)
            step = -jnp.linalg.lstsq(columns / norms[None, :], r)[0] / norms
            trial = jnp.clip(p + step, problem.lower, problem.upper)
            r_new, j_new = derivatives.jacobian(trial, problem, mode)
            decrease = jnp.sum((r - r_new) * (r + r_new))  # elementwise: keeps the digits a difference of sums loses
            level = 16 * eps * jnp.sum(r * r)
            flatter = cosine(j_new * free[None, :], r_new) < cosine(columns, r)
            good = ~done & jnp.isfinite(decrease) & jnp.all(jnp.isfinite(j_new)) & ((decrease > 0) | ((decrease >= -level) & flatter))
            keep = lambda new, old: jnp.where(good, new, old)  # noqa: E731
            return keep(trial, p), keep(r_new, r), keep(j_new, j), done | ~good

        usable = ok & jnp.all(jnp.isfinite(j)) & jnp.all(jnp.isfinite(r))
        p, r, j, _ = jax.lax.fori_loop(0, POLISH_STEPS, body, (p, r, j, ~usable))
        return p, r, j

    return jax.vmap(one)(params, residuals, jac, converged, problems)


def _numbers(values, n):
    """``values`` (any shape) as nested lists of JSON numbers (None for NaN and infinities,
    ``io.write.json_number``'s rule); all None when ``values`` is None and ``n`` is given."""
    if values is None:
        return None if n is None else [None] * n
    array = np.asarray(values, dtype=np.float64)
    if np.all(np.isfinite(array)):
        return array.tolist()
    return _nones(array.tolist())


def _nones(values):
    return [_nones(v) for v in values] if isinstance(values, list) else json_number(values)


def _cost(residuals: np.ndarray, loss: str, f_scale: np.ndarray) -> np.ndarray:
    """Each fit's loss in scaled units (1/2 sum r^2, or the robust cost)."""
    from nlfit.problem import rho

    if loss == "linear":
        return 0.5 * np.sum(residuals**2, axis=1)
    scale = f_scale[:, None]
    return 0.5 * f_scale**2 * np.sum(rho((residuals / scale) ** 2, loss, np)[0], axis=1)


def finish(model, problems, solved, counts, real, *, options, jac_mode, factorization, data_columns, sigma_given: bool, keys=None, extended=None,
           solver=None) -> list[FitResult]:  # fmt: skip
    """G results from the winners in ``solved`` (see the module docstring).

    ``problems``: the G problems (leading axis); ``counts`` (G,) real points; ``real`` (G, L)
    marks them; ``options``: the ``FitOptions``; ``keys``: group names (grouped fits);
    ``extended``: a NIST file's data in long double, (x, y) (single fits); ``solver``: how to run the
    auxiliary fits of the checks (``nlfit.diagnostics``)."""
    from nlfit import diagnostics, refine, stats

    state = solved.state
    statuses = np.asarray(solved.statuses)
    names = list(model.param_names)
    groups, n_params = np.asarray(state.params).shape
    scale = np.asarray(problems.scale, dtype=np.float64)
    f_scale = np.asarray(problems.f_scale, dtype=np.float64)
    lower, upper = np.asarray(problems.lower), np.asarray(problems.upper)
    y = np.asarray(problems.y)
    sigma_user = np.asarray(problems.sigma)
    loss_name = problems.loss
    small = int(np.shape(problems.y)[1]) < LARGE_DATA_POINTS
    factor, residuals, middle, grad = statistics_inputs(problems, state, statuses, jac_mode, factorization, loss_name, small)
    params = np.array(state.params)
    residuals = np.array(residuals)
    counts = np.asarray(counts)
    real = np.asarray(real, dtype=bool)

    if small and loss_name == "linear":
        params, residuals, factor = polish(problems, params, residuals, factor, statuses, jac_mode)
        params, residuals = np.array(params), np.array(residuals)
        grad = np.einsum("gmn,gm->gn", factor, residuals)

    # Near an exact fit, polish in extended precision (formula models, small data).
    if small and refine.applies(model, loss_name, int(counts.max())):
        candidates = refine.candidates(residuals * scale[:, None], sigma_user if sigma_given else None, y, real)
        for g in np.flatnonzero(candidates):
            if np.any(lower[g] == upper[g]) or statuses[g] in (Status.NONFINITE, Status.TOO_FEW_POINTS):
                continue
            rows = real[g]
            x_g = np.asarray(problems.x[g])[rows]
            sigma_g = sigma_user[g][rows] if sigma_given else None
            polished = refine.refine(model, x_g, y[g][rows], sigma_g, params[g], factor[g][rows] * scale[g], residuals[g][rows] * scale[g], extended)
            if polished is not None:
                params[g] = polished[0]
                residuals[g][rows] = polished[1] / scale[g]

    fixed = lower == upper
    held = fixed | (params <= lower) | (params >= upper)
    values = [dict() for _ in range(groups)]
    warnings: list[list[str]] = [[] for _ in range(groups)]
    stderr = np.full((groups, n_params), np.nan)
    covariance = np.full((groups, n_params, n_params), np.nan)
    correlation = np.full((groups, n_params, n_params), np.nan)
    tvalues = np.full((groups, n_params), np.nan)
    intervals = np.full((groups, n_params, 2), np.nan)
    has_covariance = np.zeros(groups, dtype=bool)
    for pattern in np.unique(held, axis=0):
        members = np.flatnonzero(np.all(held == pattern, axis=1))
        estimated = np.flatnonzero(~pattern)
        sub = stats.compute(
            factor[members][:, :, estimated],
            residuals[members],
            params[members][:, estimated],
            [names[i] for i in estimated],
            y[members],
            sigma_user[members] if sigma_given else None,
            counts[members],
            scale[members],
            real[members],
            absolute_sigma=options.absolute_sigma,
            conf_level=options.conf_level,
            sandwich_middle=None if middle is None else middle[members][:, estimated][:, :, estimated],
        )
        grid = np.ix_(members, estimated, estimated)
        stderr[np.ix_(members, estimated)] = sub.stderr
        tvalues[np.ix_(members, estimated)] = sub.tvalues
        intervals[np.ix_(members, estimated)] = sub.intervals
        covariance[grid] = sub.covariance
        correlation[grid] = sub.correlation
        has_covariance[members] = sub.has_covariance
        for position, g in enumerate(members):
            values[g] = sub.values[position]
            warnings[g] = sub.warnings[position]
    with np.errstate(over="ignore", invalid="ignore"):  # a loss beyond the float range is reported as such (inf or NaN)
        losses = _cost(np.where(real, residuals, 0.0), loss_name, f_scale) * scale**2
    with np.errstate(over="ignore", invalid="ignore"):
        scaled_losses = _cost(np.where(real, residuals, 0.0), loss_name, f_scale)
    findings, summaries = diagnostics.check(
        model, problems, params, np.asarray(solved.starts), residuals, factor, grad, scaled_losses, statuses, counts, real, values, held, solved, solver
    )
    results = []
    iterations, nfev, njev = (np.asarray(value) for value in (state.iteration, state.nfev, state.njev))
    options_json = options.to_json()
    sides = np.where(fixed, None, np.where(params <= lower, "lower", np.where(params >= upper, "upper", None)))
    bounded = np.any(sides != None, axis=1)  # noqa: E711 (elementwise)
    covariance_kept = np.where(np.isnan(covariance), 0.0, covariance)  # held parameters do not vary
    sides_lists, losses_list, status_list = sides.tolist(), losses.tolist(), [Status(s) for s in statuses.tolist()]
    for g in range(groups):
        values[g]["loss"] = losses_list[g]
        at_bound = sides_lists[g]
        group_warnings = list(warnings[g])
        for i, side in enumerate(at_bound if bounded[g] else ()):
            if side is not None:
                group_warnings.append(f"{names[i]} ended at its {side} bound ({params[g, i]:g}): its standard error is not meaningful")
        group_findings = findings[g]
        group_warnings += [f.message for f in group_findings]
        group_warnings = list(dict.fromkeys(group_warnings))  # each once (two null-space vectors can name the same parameters)
        status = status_list[g]
        if status == Status.TOO_FEW_POINTS:
            group_warnings = []  # not fitted: the status says why, the statistics of its start say nothing
        termination = None
        if status.success and any(f.fatal for f in group_findings):
            status, termination = Status.SUSPECT, status
        cov = covariance_kept[g] if has_covariance[g] else None
        results.append(
            FitResult(
                model=model,
                method=options.method,
                globalization=options.globalization,
                jac_mode=jac_mode,
                param_names=tuple(names),
                params=params[g],
                stderr=stderr[g] if has_covariance[g] else None,
                covariance=cov,
                correlation=correlation[g] if has_covariance[g] else None,
                intervals=intervals[g] if has_covariance[g] else None,
                tvalues=tvalues[g] if has_covariance[g] else None,
                status=status,
                termination=termination,
                stats=values[g],
                counts={"iterations": int(iterations[g]), "nfev": int(nfev[g]), "njev": int(njev[g])},
                history=solved.histories[g] if solved.histories is not None else [],
                seconds=solved.seconds,
                warnings=group_warnings,
                data_columns=data_columns,
                absolute_sigma=options.absolute_sigma and sigma_given,
                fixed=fixed[g],
                at_bound=at_bound,
                loss_name=loss_name,
                f_scale=float(f_scale[g] * scale[g]),
                starts=summaries[g],
                findings=group_findings,
                group=None if keys is None else keys[g],
                options=options_json,
            )
        )
    return results
