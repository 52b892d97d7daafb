"""Checks after a fit: when the numbers may be wrong although the solver converged.

Every check gives a :class:`Finding`: one line for the user, and whether the result is
*known* to be wrong (``fatal``). A fatal finding turns a converged status into ``suspect``:
``success`` is false and the exit code 1. The checks:

worse than a constant (fatal when the model can be a constant)
    R^2 < 0: a horizontal line through the weighted mean fits better. When that happens to a
    fit that claims convergence, the model is fitted to the constant data (the mean) from the
    fitted point (Levenberg-Marquardt, multistart, at most 200 iterations); if it gets within
    1e-6 of it (relative to the total sum of squares), the model can represent a constant
    and the result is certainly not the least-squares fit.
plateau (fatal)
    A free parameter whose Jacobian column is dead: ||J_j|| max(|p_j|, 1) <= PLATEAU ||r||
    while the residuals are not at the rounding level of the data. Moving the parameter by
    its own size (or by 1) changes the fit by less than 1e-8 of the residuals: the solver
    stopped because the gradient vanished on a plateau (an exponential that underflowed, a
    saturated term), not at a minimum. R's nls stops here with "singular gradient".
no progress (fatal)
    The result is the start itself after steps were tried and rejected, and the gradient
    test was not met.
pole or non-finite model between the data points (warning)
    For one predictor, the model's denominators (``Model.denominators``) are evaluated on
    GRID_STEPS points between each pair of neighbouring x values: a sign change means the
    fitted curve has a pole inside the data range; a non-finite model value there is
    reported too.
parameters that ran away (warning)
    |p_j| > RUNAWAY max(|start_j|, 1): more than six orders of magnitude from the start,
    typical of a minimum at infinity.
several minima (warning)
    Multistart found another plausible fit (a different fitted curve, see
    ``multistart.distinct_minima``) that the data cannot tell apart from the chosen one: its
    loss is inside the 95% likelihood confidence region of the best,
    S <= S_best (1 + p / (n - p) F(p, n - p; 0.95)) (Bates & Watts 1988, ch. 6). The two
    losses are named. A start's end point is plausible when none of the checks above would
    flag it (no dead Jacobian column, no parameter run away, no pole or non-finite value
    between the data points) and it fits better than a constant. Every distinct minimum,
    plausible or not, competing or not, is listed in the JSON ``starts`` object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlfit.fitting import _norms
from nlfit.solvers.status import Status

PLATEAU = 1e-8
RUNAWAY = 1e6
GRID_STEPS = 4  # points between neighbouring x values: 3 interior points per interval
GRID_VALUES = 2000  # at most this many distinct x values are used for the grid
CONSTANT_FIT = 1e-6
CONSTANT_FIT_ITERATIONS = 200
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str
    fatal: bool = False


def check(model, problems, params, starts, residuals, factor, statuses, counts, real, values, held, solved, factorization, solver=None):
    """(findings, starts summaries) of G fits (see the module docstring). ``factor``: the
    scaled Jacobian (or its R factor) of every parameter; ``residuals``: scaled; ``values``:
    the statistics; ``solved.members``: every start, for the summaries."""
    groups = params.shape[0]
    names = list(model.param_names)
    findings: list[list[Finding]] = [[] for _ in range(groups)]
    fitted = np.isin(statuses, (Status.GTOL, Status.FTOL, Status.XTOL, Status.MAX_ITER, Status.STALLED, Status.INTERRUPTED, Status.TIMEOUT))
    y = np.asarray(problems.y)
    sigma = np.asarray(problems.sigma)
    scale = np.asarray(problems.scale)
    with np.errstate(all="ignore"):
        rss = np.sum(np.where(real, residuals, 0.0) ** 2, axis=1)
        rounding = (1e3 * np.finfo(float).eps) ** 2 * np.sum(np.where(real, y / (sigma * scale[:, None]), 0.0) ** 2, axis=1)
        column_norms = _norms(factor, axis=1)
        residual_norm = _norms(np.where(real, residuals, 0.0), axis=1)
        sensitivity = column_norms * np.maximum(np.abs(params), 1.0)
        dead = (~held) & (sensitivity <= PLATEAU * residual_norm[:, None]) & (rss > rounding)[:, None]
        runaway = (~held) & (np.abs(params) > RUNAWAY * np.maximum(np.abs(starts), 1.0))
    iterations = np.asarray(solved.state.iteration)
    stuck = fitted & (iterations > 0) & np.all(params == starts, axis=1) & (statuses != Status.GTOL)
    for g in np.flatnonzero(fitted & (np.any(dead, axis=1) | np.any(runaway, axis=1) | stuck)):
        if np.any(dead[g]):
            which = ", ".join(names[j] for j in np.flatnonzero(dead[g]))
            findings[g].append(
                Finding(
                    "plateau",
                    f"plateau: the model does not change with {which} here (the Jacobian column is ~0 while the residuals are not small); "
                    "the fit stopped where the gradient vanished, not at a minimum: try other start values",
                    fatal=True,
                )
            )
        if np.any(runaway[g]):
            which = ", ".join(f"{names[j]} = {params[g, j]:.3g}" for j in np.flatnonzero(runaway[g]))
            findings[g].append(
                Finding("runaway", f"parameters ran away by more than six orders of magnitude from the start ({which}): the minimum may be at infinity")
            )
        if stuck[g]:
            findings[g].append(Finding("no-progress", "the fit did not move from its start: every step tried was rejected", fatal=True))
    summaries = _starts_summaries(model, problems, solved.members, real)
    estimated = np.count_nonzero(~held, axis=1)
    for g in np.flatnonzero(fitted) if solved.members is not None else ():
        summary = summaries[g]
        plausible = [m for m in summary["minima"] if m["plausible"]] if summary is not None else []
        dof = int(counts[g]) - int(estimated[g])
        if len(plausible) < 2 or dof <= 0:
            continue
        from scipy.special import fdtri

        region = plausible[0]["loss"] * (1.0 + estimated[g] / dof * float(fdtri(estimated[g], dof, CONFIDENCE)))
        rivals = [m for m in plausible[1:] if m["loss"] <= region]
        if rivals:
            chosen = " (chosen)" if summary["chosen"] in plausible[0]["starts"] else ""
            findings[g].append(
                Finding(
                    "minima",
                    f"the data do not single out one fit: the starts found {1 + len(rivals)} different fits inside the 95% confidence region, "
                    f"losses {plausible[0]['loss']:.10g}{chosen} and {rivals[0]['loss']:.10g} (see 'starts' in the JSON)",
                )
            )
    for g, found in enumerate(_pole_findings(model, problems, params[:, None, :], real)):
        findings[g] += found[0]
    worse = [g for g in np.flatnonzero(fitted) if values[g].get("r2") is not None and values[g]["r2"] < 0]
    converged = [g for g in worse if Status(int(statuses[g])).success]  # the auxiliary fit only where the result claims success
    if worse:
        can_be_constant = _represents_constant(model, problems, params, real, converged, solver) if converged else {}
        for g in worse:
            r2 = values[g]["r2"]
            if can_be_constant.get(g, False):
                findings[g].append(
                    Finding(
                        "worse-than-constant",
                        f"the fit is worse than a constant (R² = {r2:.3g}) although the model can be one: it is not the least-squares fit",
                        fatal=True,
                    )
                )
            else:
                findings[g].append(Finding("worse-than-constant", f"the fit is worse than a constant (R² = {r2:.3g})"))
    return findings, summaries


def _starts_summaries(model, problems, members, real) -> list[dict | None]:
    """The JSON ``starts`` object of every group: how many starts were tried and converged,
    the distinct minima they reached (lowest loss first, each marked plausible or not), and
    which start was chosen."""
    from nlfit import multistart

    if members is None:
        return [None] * real.shape[0]
    lower, upper = np.asarray(problems.lower)[:, None, :], np.asarray(problems.upper)[:, None, :]
    free = lower != upper
    with np.errstate(all="ignore"):
        implausible = np.any(free & (np.abs(members.params) > RUNAWAY * np.maximum(np.abs(members.origins), 1.0)), axis=2)
        if members.column_norms is not None:
            sensitivity = members.column_norms * np.maximum(np.abs(members.params), 1.0)
            implausible |= np.any(free & (sensitivity <= PLATEAU * members.residual_norms[:, :, None]) & (members.residual_norms[:, :, None] > 0), axis=2)
    implausible |= members.residual_norms >= members.total_norms[:, None]
    poles = _pole_findings(model, problems, members.params, real)
    implausible |= np.array([[bool(found) for found in group] for group in poles], dtype=bool).reshape(implausible.shape)
    names = list(model.param_names)
    out = []
    for g in range(members.params.shape[0]):
        minima = multistart.distinct_minima(members.params[g], members.losses[g], members.converged[g], members.residuals[g], members.total_norms[g], names)
        for minimum in minima:
            minimum["plausible"] = not bool(np.all(implausible[g, minimum["starts"]]))
        chosen = int(members.chosen[g])
        out.append(
            {
                "tried": int(members.params.shape[1]),
                "converged": int(np.count_nonzero(members.converged[g])),
                "chosen": chosen,
                "chosen_start": members.labels[chosen],
                "screened_rows": members.screened_rows,
                "minima": minima,
            }
        )
    return out


def _grids(x: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For G groups' predictor values (G, L): GRID_STEPS - 1 points inside each interval
    between neighbouring sorted values, and the values themselves (at most GRID_VALUES of
    them, evenly picked). Returns (grids (G, W), valid (G, W)); a repeated value gives an
    empty interval, whose points are that value again."""
    values = np.sort(np.where(real & np.isfinite(x), x, np.inf), axis=1)
    counts = np.count_nonzero(np.isfinite(values), axis=1)
    width = int(min(max(counts.max(), 1), GRID_VALUES))
    pick = np.rint(np.linspace(0.0, 1.0, width)[None, :] * np.maximum(counts - 1, 0)[:, None]).astype(np.int64)
    values = np.take_along_axis(values, pick, axis=1)
    steps = np.linspace(0.0, 1.0, GRID_STEPS + 1)[:-1]
    with np.errstate(invalid="ignore"):
        inner = values[:, :-1, None] + steps[None, None, :] * np.diff(values, axis=1)[:, :, None]
    grids = np.concatenate([inner.reshape(len(values), -1), values[:, -1:]], axis=1)
    valid = np.isfinite(grids) & (counts >= 2)[:, None]
    return np.where(valid, grids, 0.0), valid


def _pole_findings(model, problems, params, real) -> list[list[list[Finding]]]:
    """For G groups x K points ``params`` (G, K, n): the pole and non-finite findings of each
    (one predictor only; several predictors have no order to look between)."""
    x = np.asarray(problems.x)
    groups, starts = params.shape[:2]
    out = [[[] for _ in range(starts)] for _ in range(groups)]
    if x.ndim != 2:
        return out
    grids, valid = _grids(x, real)
    if grids.shape[1] < 2 or not np.any(valid):
        return out
    values, denominators = _evaluate(model, params.reshape(groups * starts, -1), np.repeat(grids, starts, axis=0))
    values = values.reshape(groups, starts, grids.shape[1])
    denominators = denominators.reshape(groups, starts, denominators.shape[1], grids.shape[1])
    pairs = valid[:, None, None, :-1] & valid[:, None, None, 1:]
    with np.errstate(invalid="ignore"):
        crossing = pairs & ((np.sign(denominators[..., :-1]) * np.sign(denominators[..., 1:]) < 0) | (denominators[..., :-1] == 0))
    crossing = np.any(crossing, axis=2)  # any denominator: (G, K, W - 1)
    broken = valid[:, None, :] & ~np.isfinite(values)
    for g, k in zip(*np.nonzero(np.any(crossing, axis=2)), strict=True):
        first = int(np.argmax(crossing[g, k]))
        where = 0.5 * (grids[g, first] + grids[g, first + 1])
        out[g][k].append(Finding("pole", f"the fitted model has a pole inside the data range (a denominator changes sign near x = {where:.4g})"))
    for g, k in zip(*np.nonzero(np.any(broken, axis=2)), strict=True):
        where = grids[g, int(np.argmax(broken[g, k]))]
        out[g][k].append(Finding("nonfinite-between", f"the fitted model is not finite between the data points (near x = {where:.4g})"))
    return out


def _evaluate(model, params, grids):
    """Model values (G, W) and denominators (G, D, W) on the grids (G, W)."""
    from nlfit._jax import compiled

    values, denominators = compiled(_evaluate_on_grid, ("model",), grids.size)(params, grids, model=model)
    with np.errstate(all="ignore"):
        return np.asarray(values), np.asarray(denominators)


def _evaluate_on_grid(params, grids, *, model):
    from nlfit._jax import jax, jnp

    def one(p, grid):
        found = model.denominators(p, grid)
        stacked = jnp.stack(found) if found else jnp.zeros((0, grid.shape[0]))
        return model.predict(p, grid), stacked

    return jax.vmap(one)(params, grids)


def _represents_constant(model, problems, params, real, groups, solver) -> dict:
    """For each of ``groups``: can the model fit the constant data (the weighted mean)?"""
    import dataclasses

    from nlfit._jax import jax, jnp
    from nlfit.fitting import solve_groups
    from nlfit.multistart import auto_count
    from nlfit.solvers.directions import make_direction
    from nlfit.solvers.globalization import TrustRegion
    from nlfit.solvers.loop import Settings

    if solver is None:
        return {}
    pick = jnp.asarray(groups)
    subset = jax.tree.map(lambda leaf: leaf[pick] if getattr(leaf, "ndim", 0) >= 1 else leaf, problems)
    scale = np.asarray(subset.scale)[:, None]
    y = np.asarray(subset.y) / scale
    weights = np.where(real[groups], 1.0 / np.asarray(subset.sigma) ** 2, 0.0)
    mean = np.sum(weights * y, axis=1) / np.sum(weights, axis=1)
    constant = dataclasses.replace(subset, y=jnp.asarray(np.where(real[groups], mean[:, None], y) * scale))
    counts = np.count_nonzero(real[groups], axis=1)
    # Several starts whatever the fit used (a constant is often reached only in a limit, K -> 0
    # in Vm x/(K + x)), by the default solver with a bounded budget, whatever the fit's method.
    starts = max(solver["count"], auto_count(solver["linear"], solver["free"], int(counts.max()), len(groups)))
    direction = make_direction("lm", None, solver["factorization"])
    settings = Settings(max_iter=min(int(solver["settings"].max_iter), CONSTANT_FIT_ITERATIONS))
    solved = solve_groups(constant, params[groups], counts, starts, solver["linear"], solver["free"], direction, TrustRegion(),
                          solver["jac_mode"], settings, solver["seed"])  # fmt: skip
    residuals = np.asarray(solved.state.local.residuals)
    rss = np.sum(np.where(real[groups], residuals, 0.0) ** 2, axis=1)
    tss = np.sum(weights * (y - mean[:, None]) ** 2, axis=1)
    return {g: bool(rss[i] <= CONSTANT_FIT * tss[i]) for i, g in enumerate(groups)}
