"""From solved members to :class:`nlfit.result.Fits`: one post-processing path for every fit.

The stages are functions of arrays with a leading group axis, run once per batch, with no
Python loop over groups:

1. ``linearize``: the Jacobian (or its R factor), residuals and gradient at each result;
2. ``polish``: Gauss-Newton steps from each converged fit, and near an exact fit a
   refinement in extended precision (``nlfit.refine``, formula models on small data);
3. ``statistics``: covariance, standard errors, intervals and goodness of fit
   (``nlfit.stats``), one call per pattern of held parameters;
4. ``checks``: the warnings of ``nlfit.diagnostics.CHECKS`` and of the bounds; a fatal one
   turns a converged status into ``suspect``;
5. ``assemble``: the columns of the result.

What the checks need from the layer above (the auxiliary fit of the worse-than-a-constant
check) is passed in as ``fit_constant``: nothing here imports the code that runs the fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlfit import diagnostics, refine, stats
from nlfit.numerics import LARGE_DATA_POINTS, cost, gram_condition, on_real, sum_squares
from nlfit.result import STAT_ORDER, Fits
from nlfit.solvers.status import Status
from nlfit.solvers.subproblems import SMALL_PARAMETERS
from nlfit.warning import FitWarning

POLISH_STEPS = 3
# The condition number of the equilibrated J^T J up to which a large fit's statistics come from
# the Cholesky factor of the solver's own J^T J (``_from_gram``) instead of a streaming QR pass.
# The standard errors of the two differ by about 1.5e-16 times it (measured on polynomials of
# degree 2-8 over [-1, 1] to [0, 10], 10^5 and 10^6 rows: 5e-11 at 2e5, 3e-8 at 1.9e8), so at
# 1e6 by about 1e-10: the digits a user reads are the same, and the pass is saved.
STATS_CONDITION = 1e6


@dataclass
class Context:
    """What the stages share about a batch: its problems (leaves with a leading G axis),
    real-row ``counts`` and mask ``real``, the ``options``, Jacobian mode and factorization,
    whether sigma was given, and a NIST file's data in long double (``extended``)."""

    model: object
    problems: object
    counts: np.ndarray
    real: np.ndarray
    options: object
    jac_mode: str
    factorization: str
    sigma_given: bool
    extended: tuple | None = None

    @property
    def small(self) -> bool:
        return int(np.shape(self.problems.y)[1]) < LARGE_DATA_POINTS


def finish(context: Context, solved, *, data_columns: dict, keys=None, fit_constant=None, summaries=None, notes=None) -> Fits:
    """G results from the winners in ``solved`` (``nlfit.fitting.Solved``), stage by stage;
    ``notes`` ({g: [FitWarning]}): warnings from before the solve (the reader's), kept first."""
    statuses = np.asarray(solved.statuses)
    factor, residuals, middle, grad = linearize(context, solved.state, statuses)
    params, residuals, factor, grad = polish(context, np.array(solved.state.params), residuals, factor, grad, statuses)
    factor = square_factor(factor, context.real)
    lower, upper = np.asarray(context.problems.lower), np.asarray(context.problems.upper)
    fixed = lower == upper
    held = fixed | (params <= lower) | (params >= upper)
    with np.errstate(over="ignore", invalid="ignore"):  # a loss beyond the float range is reported as such (inf or NaN)
        real_residuals = on_real(residuals, context.real)
        rss = sum_squares(real_residuals)  # one pass, for the loss, the statistics and the checks
        linear = context.problems.loss == "linear"
        scaled_losses = 0.5 * rss if linear else cost(real_residuals, context.problems.loss, np.asarray(context.problems.f_scale, dtype=np.float64))
    table = statistics(context, factor, residuals, params, held, middle, rss)
    with np.errstate(over="ignore", invalid="ignore"):
        table.values["loss"] = scaled_losses * np.asarray(context.problems.scale, dtype=np.float64) ** 2
    evidence = diagnostics.Evidence(
        context.model, context.problems, params, np.asarray(solved.starts), residuals, factor, grad, scaled_losses, statuses, np.asarray(context.counts),
        context.real, held, np.asarray(solved.state.iteration), table.values["r2"], solved.members, summaries, fit_constant, rss, table.svd,
    )  # fmt: skip
    found = checks(evidence, table.warnings, params, lower, upper, fixed)
    statuses, termination, found = verdicts(statuses, found)
    for g, early in (notes or {}).items():
        found[g] = [*early, *found.get(g, [])]
    return assemble(context, solved, params, table, fixed, statuses, termination, found, data_columns=data_columns, keys=keys, summaries=summaries)


def linearize(context: Context, state, statuses):
    """(factor (G, M, n), residuals (G, L), middle (G, n, n) or None, gradient (G, n)) at the
    reported points, in scaled units: the Jacobian itself (small data) or its R factor from a
    streaming QR (more) for the covariance, the residuals, the sandwich's middle for a robust
    loss, and the gradient of the loss (with a robust loss, of J~ and r~). The solver's last
    linearization is reused where it is at the reported point and of the right kind."""
    from nlfit import derivatives
    from nlfit.problem import rho

    problems, jac_mode, loss = context.problems, context.jac_mode, context.problems.loss
    params = state.params
    stale = bool(np.any(np.isin(statuses, (Status.INTERRUPTED, Status.TIMEOUT, Status.TOO_FEW_POINTS, Status.NO_DATA))))
    robust = loss != "linear"
    mode = "rev" if jac_mode == "rev" else "fwd"
    if context.small:
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
    if context.factorization == "qr" and jac_mode != "fd" and not stale and state.local.r_factor is not None:
        residuals, factor, grad = np.asarray(state.local.residuals), np.asarray(state.local.r_factor), np.asarray(state.local.grad)
    elif not stale and jac_mode != "fd" and not robust and (fused := _from_gram(context, state)) is not None:
        residuals, factor, grad = fused
    else:
        residuals, factor, _, grad = (np.asarray(v) for v in derivatives.qr_linearize_batch(params, problems, "fwd"))
    middle = np.asarray(derivatives.influence_gram_batch(params, problems)) if robust else None
    return factor, residuals, middle, grad


def _from_gram(context: Context, state):
    """(residuals, R, gradient) of a large fit from the solver's last J^T J (the fused sums'
    iterations keep it, at the reported point): R is its Cholesky factor, and only the
    residuals take a pass over the data. None where a streaming QR must give R instead: no
    J^T J kept, a parameter fixed or held at a bound, a column of J that is zero, or a
    condition number above STATS_CONDITION."""
    from nlfit import derivatives

    gram, free = state.local.gram, state.local.free
    if gram is None or free is None or not np.all(np.asarray(free) == 1):
        return None
    gram = np.asarray(gram, dtype=np.float64)
    moving = np.ones(gram.shape[-1], dtype=bool)
    if not np.all(np.diagonal(gram, axis1=-2, axis2=-1) > 0):  # a column of J that is zero: the QR names what is not identifiable
        return None
    if not all(gram_condition(one, moving) <= STATS_CONDITION for one in gram):
        return None
    try:
        factor = np.swapaxes(np.linalg.cholesky(gram), -1, -2)  # upper: R^T R = J^T J
    except np.linalg.LinAlgError:
        return None
    return np.asarray(derivatives.residuals_batch(state.params, context.problems)), factor, np.asarray(state.local.grad)


def square_factor(factor: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(G, n, n) R with R^T R = J^T J for the Jacobians (G, L, n) of the real rows (Householder
    QR: backward stable, so the SVDs of the statistics and the checks, now of n x n matrices,
    see J's singular values to the same accuracy); a factor that is square already is kept.
    One QR per group instead of an SVD of J in each of the two stages that need one."""
    if factor.shape[1] <= factor.shape[2]:
        return factor
    with np.errstate(all="ignore"):
        rows = np.where(real[:, :, None], factor, 0.0)
        finite = np.all(np.isfinite(rows), axis=(1, 2))
        square = np.linalg.qr(np.where(finite[:, None, None], rows, 0.0), mode="r")
    return np.where(finite[:, None, None], square, np.nan)  # a Jacobian with inf or NaN stays unusable


def polish(context: Context, params, residuals, factor, grad, statuses):
    """Gauss-Newton polish of the converged least-squares fits on small data
    (``gauss_newton_polish``), then the extended-precision refinement near an exact fit.
    Returns (params, residuals, factor, grad)."""
    problems = context.problems
    if not context.small:  # a large fit's residuals are read, never written: not copied (10^7 rows: 80 MB)
        return params, residuals, factor, grad
    residuals = np.array(residuals)  # written in place by the refinement
    if problems.loss == "linear":
        closed_form = context.factorization == "cholesky" and params.shape[1] <= SMALL_PARAMETERS
        params, residuals, factor = gauss_newton_polish(problems, params, residuals, factor, statuses, context.jac_mode, closed_form)
        params, residuals = np.array(params), np.array(residuals)
        grad = np.einsum("gmn,gm->gn", factor, residuals)
    if refine.applies(context.model, problems.loss, int(np.max(context.counts))):
        params, residuals = _refine_exact(context, params, residuals, factor, statuses)
    return params, residuals, factor, grad


def _refine_exact(context: Context, params, residuals, factor, statuses):
    """Near an exact fit, polish in extended precision (only the few candidate groups)."""
    problems, real = context.problems, context.real
    scale = np.asarray(problems.scale, dtype=np.float64)
    y, sigma = np.asarray(problems.y), np.asarray(problems.sigma)
    lower, upper = np.asarray(problems.lower), np.asarray(problems.upper)
    model = getattr(context.model, "source", context.model)  # a padded model's own (nlfit.models.padded)
    shown = np.asarray(getattr(context.model, "shown", range(params.shape[1])), dtype=np.int64)
    candidates = refine.candidates(residuals * scale[:, None], sigma if context.sigma_given else None, y, real)
    candidates &= ~np.any((lower == upper)[:, shown], axis=1) & ~np.isin(statuses, (Status.NONFINITE, Status.TOO_FEW_POINTS, Status.NO_DATA))
    for g in np.flatnonzero(candidates):
        rows = real[g]
        x_g = np.asarray(problems.x[g])[rows]
        sigma_g = sigma[g][rows] if context.sigma_given else None
        polished = refine.refine(
            model, x_g, y[g][rows], sigma_g, params[g][shown], factor[g][rows][:, shown] * scale[g], residuals[g][rows] * scale[g], context.extended
        )
        if polished is not None:
            params[g][shown] = polished[0]
            residuals[g][rows] = polished[1] / scale[g]
    return params, residuals


def gauss_newton_polish(problems, params, residuals, jac, statuses, jac_mode: str, closed_form: bool = False):
    """Up to POLISH_STEPS Gauss-Newton steps from each converged fit, each kept only where it
    lowers the sum of squares or, where the sum is flat to rounding, the gradient measure.
    The solvers stop when the loss no longer falls by a relative ftol, which leaves the
    parameters accurate to about sqrt(ftol); at a minimum the Gauss-Newton step removes that
    remainder, so the answer no longer depends on how the iterations happened to approach it
    (for example on the rounding of rescaled data). Parameters held at a bound or fixed do
    not move. One compiled call for all groups. Returns (params, residuals, jac).

    ``closed_form``: the steps from the equilibrated normal equations, summed in one pass
    over the points and solved by the closed-form Cholesky of ``nlfit.solvers.subproblems``
    (``_polish_groups`` with ``normal``: the batches of many small fits whose solver used them too), else by
    least squares on J itself (``lstsq``: single fits, ill-conditioned problems)."""
    from nlfit.programs import compiled

    converged = np.isin(statuses, (Status.GTOL, Status.FTOL, Status.XTOL))
    if not np.any(converged):
        return params, residuals, jac
    mode = "rev" if jac_mode == "rev" else "fwd"
    out = compiled(_polish_groups, ("mode", "normal"), int(np.prod(np.shape(residuals))), optimize=problems.tape is not None)(
        params, residuals, jac, converged, problems, mode=mode, normal=closed_form
    )
    return tuple(np.asarray(v) for v in out)


def _polish_groups(params, residuals, jac, converged, problems, *, mode, normal):
    """The steps of ``gauss_newton_polish`` for every group at once (under ``vmap``), from a
    linearization that is J itself (its steps by ``lstsq``), or with ``normal`` the normal
    equations: each step then takes one pass that sums J^T J, J^T r and r^T r
    (``derivatives.gram``, one variadic reduction over the points) instead of forming J and
    multiplying it by itself (under ``vmap``, XLA:CPU runs a batch of tiny matrix products
    as one small product per group: 50 ms against 7 ms for 2,621 rational groups of 100
    points), and J is formed once, at the end, where a step was taken. The cosine between a
    column of J and r is g_j / (sqrt(A_jj) |r|) there."""
    from nlfit.problem import vmap_groups

    def one(p, r, j, ok, problem):
        return _polish_one(p, r, j, ok, problem, mode, normal)

    return vmap_groups(one, 0, 4)(params, residuals, jac, converged, problems)


def _polish_one(p, r, j, ok, problem, mode, normal):
    """``_polish_groups`` for one group: up to POLISH_STEPS steps, each kept where it lowers
    the sum of squares, or leaves it level within rounding and turns r away from the columns."""
    from nlfit import derivatives
    from nlfit._jax import jax, jnp

    eps = jnp.finfo(jnp.float64).eps
    lin = derivatives.normal_sums([j[:, a] for a in range(p.shape[0])], r) if normal else j

    def body(_, carry):
        p, r, lin, done, moved = carry
        free = ((p > problem.lower) & (p < problem.upper)).astype(r.dtype)
        trial = jnp.clip(p + _polish_step(lin, r, free, normal), problem.lower, problem.upper)
        r_new, lin_new = _linearization(trial, problem, mode, normal)
        decrease = jnp.sum((r - r_new) * (r + r_new))  # elementwise: keeps the digits a difference of sums loses
        level = 16 * eps * jnp.sum(r * r)
        flatter = _largest_cosine(lin_new, r_new, free, normal) < _largest_cosine(lin, r, free, normal)
        finite = jnp.isfinite(decrease)
        for leaf in jax.tree.leaves(lin_new):
            finite &= jnp.all(jnp.isfinite(leaf))
        good = ~done & finite & ((decrease > 0) | ((decrease >= -level) & flatter))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(good, a, b), new, old)  # noqa: E731
        return keep(trial, p), keep(r_new, r), keep(lin_new, lin), done | ~good, moved | good

    usable = ok & jnp.all(jnp.isfinite(j)) & jnp.all(jnp.isfinite(r))
    p, r, lin, _, moved = jax.lax.fori_loop(0, POLISH_STEPS, body, (p, r, lin, ~usable, False))
    if not normal:
        return p, r, lin
    return p, r, jnp.where(moved, derivatives.jacobian(p, problem, mode)[1], j)


def _polish_step(lin, r, free, normal):
    """The Gauss-Newton step of the parameters that may move (``free``), columns equilibrated."""
    from nlfit._jax import jnp
    from nlfit.solvers.directions import column_norms
    from nlfit.solvers.subproblems import normal_damped_step

    if normal:
        matrix, grad = lin
        held = matrix * free[:, None] * free[None, :]
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(held), 0.0))
        norms = jnp.where(norms > 0, norms, 1.0)
        return normal_damped_step(held / (norms[:, None] * norms[None, :]), grad * free / norms, 0.0) / norms
    columns = lin * free[None, :]
    norms = column_norms(columns)
    norms = jnp.where(norms > 0, norms, 1.0)
    return -jnp.linalg.lstsq(columns / norms[None, :], r)[0] / norms


def _linearization(p, problem, mode, normal):
    """(r, the linearization) at p: J, or with ``normal`` (J^T J, J^T r)."""
    from nlfit import derivatives

    if normal:
        r, matrix, grad = derivatives.gram(p, problem, mode)
        return r, (matrix, grad)
    return derivatives.jacobian(p, problem, mode)


def _largest_cosine(lin, r, free, normal):
    """The largest cosine between a moving column of J and r."""
    from nlfit._jax import jnp
    from nlfit.solvers.directions import column_norms

    if normal:
        matrix, grad = lin
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(matrix), 0.0)) * jnp.sqrt(jnp.sum(r * r))
        return jnp.max(jnp.where((free > 0) & (norms > 0), jnp.abs(grad) / jnp.where(norms > 0, norms, 1.0), 0.0))
    columns = lin * free[None, :]
    norms = column_norms(columns)
    size = column_norms(r[:, None])[0]
    unit = columns / jnp.where(norms > 0, norms, 1.0)[None, :]
    return jnp.max(jnp.abs(unit.T @ (r / jnp.where(size > 0, size, 1.0))))


def statistics(context: Context, factor, residuals, params, held, middle, rss=None) -> stats.Statistics:
    """``nlfit.stats.compute`` over the estimated parameters of each pattern of held ones
    (one call per pattern, not per group); held parameters get NaN. ``rss`` (G,): the scaled
    residuals' sums of squares over the real rows, where the caller has them."""
    problems = context.problems
    groups, n_params = params.shape
    names = list(context.model.param_names)
    sigma = np.asarray(problems.sigma)
    out = stats.Statistics(
        covariance=np.full((groups, n_params, n_params), np.nan),
        stderr=np.full((groups, n_params), np.nan),
        correlation=np.full((groups, n_params, n_params), np.nan),
        tvalues=np.full((groups, n_params), np.nan),
        intervals=np.full((groups, n_params, 2), np.nan),
        has_covariance=np.zeros(groups, dtype=bool),
        rank=np.zeros(groups, dtype=np.int64),
        values={},
        warnings={},
    )
    patterns, which = np.unique(held, axis=0, return_inverse=True)

    def rows(values, members):  # every group (one pattern): the arrays themselves, not copies of 10^7 rows
        return values if len(members) == groups else values[members]

    for p, pattern in enumerate(patterns):
        members = np.flatnonzero(which.reshape(-1) == p)
        estimated = np.flatnonzero(~pattern)
        sub = stats.compute(
            factor[members][:, :, estimated], rows(residuals, members), params[members][:, estimated], [names[i] for i in estimated],
            rows(np.asarray(problems.y), members), rows(sigma, members) if context.sigma_given else None, np.asarray(context.counts)[members],
            np.asarray(problems.scale, dtype=np.float64)[members], rows(context.real, members), absolute_sigma=context.options.absolute_sigma,
            conf_level=context.options.conf_level, sandwich_middle=None if middle is None else middle[members][:, estimated][:, :, estimated],
            rss_scaled=None if rss is None else rss[members],
        )  # fmt: skip
        grid = np.ix_(members, estimated, estimated)
        for name in ("stderr", "tvalues", "intervals"):
            getattr(out, name)[np.ix_(members, estimated)] = getattr(sub, name)
        out.covariance[grid], out.correlation[grid] = sub.covariance, sub.correlation
        out.has_covariance[members] = sub.has_covariance
        if len(patterns) == 1 and estimated.size == n_params:  # every parameter of every group estimated: the checks reuse the SVD
            out.svd = sub.svd
        for name, column in sub.values.items():
            out.values.setdefault(name, np.zeros(groups, dtype=column.dtype))[members] = column
        for position, found in sub.warnings.items():
            out.warnings[int(members[position])] = found
    return out


def checks(evidence, statistics_warnings: dict, params, lower, upper, fixed, every=diagnostics.CHECKS) -> dict:
    """{g: [FitWarning, ...]}: the statistics' warnings, the bounds', then every check's,
    each message once."""
    found = {g: list(w) for g, w in statistics_warnings.items()}
    for g, i in zip(*np.nonzero(~fixed & ((params <= lower) | (params >= upper))), strict=True):
        name, side = evidence.names[i], "lower" if params[g, i] <= lower[g, i] else "upper"
        message = f"{name} ended at its {side} bound ({params[g, i]:g}): its standard error is not meaningful"
        found.setdefault(int(g), []).append(FitWarning("at-bound", message, params=(name,)))
    for g, more in diagnostics.check(evidence, every).items():
        found.setdefault(g, []).extend(more)
    return {g: _once(warnings) for g, warnings in found.items()}


def _once(warnings: list) -> list:
    """Each message once, in first-seen order (two null-space vectors can name the same parameters)."""
    seen: dict = {}
    for warning in warnings:
        seen.setdefault(warning.message, warning)
    return list(seen.values())


def verdicts(statuses, found: dict):
    """(statuses, termination (-1 where none), warnings): a converged fit with a fatal
    warning becomes SUSPECT; a fit that was not made (too few points, no data) keeps its
    status and no warnings (the statistics of its start say nothing)."""
    statuses = np.array(statuses)
    termination = np.full(statuses.shape, -1)
    unfitted = np.isin(statuses, (Status.TOO_FEW_POINTS, Status.NO_DATA))
    found = {g: w for g, w in found.items() if not unfitted[g]}
    for g, warnings in found.items():
        if Status(int(statuses[g])).success and any(w.fatal for w in warnings):
            termination[g], statuses[g] = statuses[g], Status.SUSPECT
    return statuses, termination, found


def assemble(context: Context, solved, params, table, fixed, statuses, termination, found, *, data_columns, keys, summaries) -> Fits:
    """The columns of the result."""
    problems, options = context.problems, context.options
    lower, upper = np.asarray(problems.lower), np.asarray(problems.upper)
    sides = np.where(fixed, 0, np.where(params <= lower, 1, np.where(params >= upper, 2, 0))).astype(np.int8)
    state = solved.state
    values = {name: table.values[name] for name in (*STAT_ORDER, "conf_level", "t_quantile", "loss")}
    return Fits(
        model=context.model,
        method=options.method,
        globalization=options.globalization,
        jac_mode=context.jac_mode,
        loss_name=problems.loss,
        param_names=tuple(context.model.param_names),
        keys=keys,
        params=params,
        stderr=table.stderr,
        covariance=table.covariance,
        correlation=table.correlation,
        tvalues=table.tvalues,
        intervals=table.intervals,
        has_covariance=table.has_covariance,
        fixed=fixed,
        sides=sides,
        status=np.asarray(statuses, dtype=np.int64),
        termination=termination,
        stats=values,
        iterations=np.asarray(state.iteration, dtype=np.int64),
        nfev=np.asarray(state.nfev, dtype=np.int64),
        njev=np.asarray(state.njev, dtype=np.int64),
        f_scale=np.asarray(problems.f_scale, dtype=np.float64) * np.asarray(problems.scale, dtype=np.float64),
        warnings=found,
        starts=summaries,
        histories=solved.histories,
        seconds=solved.seconds,
        data_columns=data_columns,
        absolute_sigma=bool(options.absolute_sigma and context.sigma_given),
        options=options.to_json(),
    )
