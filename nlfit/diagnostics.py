"""Checks after a fit: when the numbers may be wrong although the solver converged.

Every check is one function of the :class:`Evidence` of G fits in the tuple ``CHECKS``; it
gives :class:`nlfit.warning.FitWarning` values: one line for the user, and whether the
result is *known* to be wrong (``fatal``). A fatal finding turns a converged status into ``suspect``:
``success`` is false and the exit code 1. The checks:

not a stationary point (fatal)
    The solver reported convergence, but at the result the gradient is not small: MINPACK's
    measure max_j |J_j^T r| / (||J_j|| ||r||) over the free parameters (with a robust loss,
    of J~ and r~) exceeds STATIONARY while the residuals are above the rounding level of the
    data. A minimum has a gradient of round-off size there; this one was stopped by a
    scaling that froze a parameter, or by a Jacobian that overflowed (J^T J of data near
    1e-300).
worse than a constant (fatal when the model can be a constant)
    The loss is above that of the best constant c (the weighted mean for least squares,
    R^2 < 0; the minimizer of the robust cost for a robust loss; any loss above rounding
    when the data are constant). When that happens to a fit that claims convergence, the
    model is fitted to the constant data c (least squares, Levenberg-Marquardt, multistart,
    at most 200 iterations) from the result, and the fit's own loss is evaluated there: if it
    is lower, a better point exists and the result is certainly not the minimum.
plateau (fatal)
    A free parameter whose Jacobian column is dead: ||J_j|| max(|p_j|, 1) <= PLATEAU ||r||
    while the residuals are not at the rounding level of the data. Moving the parameter by
    its own size (or by 1) changes the fit by less than 1e-8 of the residuals: the solver
    stopped because the gradient vanished on a plateau (an exponential that underflowed, a
    saturated term), not at a minimum. R's nls stops here with "singular gradient".
no progress (fatal)
    The result is the start itself after steps were tried and rejected, and it is not a
    stationary point (the measure above exceeds STATIONARY).
pole or non-finite model between the data points (warning)
    For one predictor, the model's denominators (``Model.denominators``) are evaluated on
    GRID_STEPS points between each pair of neighbouring x values: a sign change means the
    fitted curve has a pole inside the data range; a non-finite model value there is
    reported too.
parameters that ran away (warning)
    |p_j| > RUNAWAY max(|start_j|, 1): more than six orders of magnitude from the start,
    typical of a minimum at infinity.
parameters not determined (warning)
    A pair of free parameters, at least one of them nonlinear, whose relative standard
    errors SE_j / |p_j| both exceed UNDETERMINED and whose correlation exceeds
    COUPLED in absolute value. The standard errors are those of s^2 (J^T J)^-1 (s^2 = RSS /
    dof; J's columns equilibrated; a singular value below the rank cutoff eps max(m, n) S_max
    taken at the cutoff, so a rank-deficient J gives huge, not missing, errors). Such a pair
    moves together along a valley of the loss in which each runs to 0 or infinity while a
    combination of them stays fixed: a*sin(b*x) with b -> 0 and a*b fixed, a/(x-b) + c with
    b -> infinity, A*(1 - exp(-exp(l)*x)) with l -> -infinity; in the limit the model
    degenerates (there: to a straight line). A relative error above UNDETERMINED means the
    95% interval spans more than twenty times the value on both sides of zero: neither the
    sign nor the order of magnitude of either parameter is determined, only their
    combination. A model linear in both parameters has no such limit (its minimum is unique
    and finite) and is not checked. Measured margins: the certified NIST fits' correlated
    pairs reach at most 0.12; the degenerate fits of issue 24 start at 147.
several minima (warning)
    Multistart found another plausible fit (a different fitted curve, see
    ``multistart.distinct_minima``) that the data cannot tell apart from the chosen one: its
    loss is inside the 95% likelihood confidence region of the best,
    S <= S_best (1 + p / (n - p) F(p, n - p; 0.95)) (Bates & Watts 1988, ch. 6). The two
    losses are named. A start's end point is plausible when none of the checks above would
    flag it (no dead Jacobian column, no parameter run away, no pair of parameters not
    determined, no pole or non-finite value between the data points) and it fits better than
    a constant. Every distinct minimum,
    plausible or not, competing or not, is listed in the JSON ``starts`` object.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nlfit.numerics import centred_squares, cost, divided_squares, norms, on_real, padded_size, sum_squares, uniform
from nlfit.solvers.status import Status
from nlfit.warning import FitWarning

PLATEAU = 1e-8
RUNAWAY = 1e6
GRID_STEPS = 4  # points between neighbouring x values: 3 interior points per interval
GRID_VALUES = 2000  # at most this many distinct x values are used for the grid
STATIONARY = 1e-4  # the gradient measure above which a converged result is no minimum (nlfit.solvers.termination.STALL_MEASURE)
CONFIDENCE = 0.95
UNDETERMINED = 10.0  # relative standard error above which a parameter's order of magnitude is not determined
COUPLED = 0.99  # |correlation| of a pair that moves together (nlfit.stats.CORRELATION_WARNING)


@dataclass(frozen=True, eq=False)
class Evidence:
    """What the checks look at, for G fits (arrays with a leading G axis, scaled units):
    the model and problems, the reported ``params`` and the ``starts`` they came from, the
    ``residuals``, the Jacobian (or R) ``factor`` and the gradient ``grad`` there, each fit's
    ``losses``, ``statuses``, real-row ``counts`` and mask ``real``, the parameters ``held``
    (fixed or at a bound), the solver's ``iterations``, the statistics' ``r2`` column, the
    multistart ``members`` and ``summaries`` (None for one start), and ``fit_constant``
    (the auxiliary fit of the worse-than-a-constant check, passed in by the caller; None: the
    check only warns), ``rss``, the residuals' sums of squares over the real rows where the
    caller has them, and ``svd``, the statistics' SVD of the factor with unit columns where no
    parameter is held (``nlfit.stats.Statistics.svd``). ``prepared()`` adds what several checks
    share."""

    model: object
    problems: object
    params: np.ndarray
    starts: np.ndarray
    residuals: np.ndarray
    factor: np.ndarray
    grad: np.ndarray
    losses: np.ndarray
    statuses: np.ndarray
    counts: np.ndarray
    real: np.ndarray
    held: np.ndarray
    iterations: np.ndarray
    r2: np.ndarray
    members: object = None
    summaries: list | None = None
    fit_constant: object = None
    rss: np.ndarray | None = None
    svd: tuple | None = None

    @cached_property
    def names(self) -> list[str]:
        return list(self.model.param_names)

    @cached_property
    def fitted(self) -> np.ndarray:
        return np.isin(self.statuses, (Status.GTOL, Status.FTOL, Status.XTOL, Status.MAX_ITER, Status.STALLED, Status.INTERRUPTED, Status.TIMEOUT))

    @cached_property
    def converged(self) -> np.ndarray:
        return np.isin(self.statuses, (Status.GTOL, Status.FTOL, Status.XTOL))

    @cached_property
    def shared(self) -> dict:
        """The rounding level, column norms, dead columns and the gradient measure."""
        from nlfit.problem import robust_scaling_numpy

        real, residuals, held, params = self.real, self.residuals, self.held, self.params
        with np.errstate(all="ignore"):
            real_residuals = on_real(residuals, real)
            rss = sum_squares(real_residuals) if self.rss is None else self.rss
            rounding = (1e3 * np.finfo(float).eps) ** 2 * _response_squares(self.problems, real)
            above = rss > rounding
            columns = norms(self.factor, axis=1)
            residual_norm = norms(real_residuals, axis=1, squares=rss)  # no second pass where rss is in range
            dead = (~held) & (columns * np.maximum(np.abs(params), 1.0) <= PLATEAU * residual_norm[:, None]) & above[:, None]
            if self.problems.loss == "linear":  # r~ is r itself
                size = residual_norm
            else:
                size = norms(robust_scaling_numpy(real_residuals, self.problems.loss, np.asarray(self.problems.f_scale)), axis=1)
            ratio = np.abs(self.grad) / (np.where(columns > 0, columns, 1.0) * size[:, None])
            measure = np.max(np.where(~held & (columns > 0), ratio, 0.0), axis=1)
            steep = above & (size > 0) & (measure > STATIONARY)
        return {"rss": rss, "above": above, "dead": dead, "measure": measure, "steep": steep, "estimated": np.count_nonzero(~held, axis=1)}


def _add(found: dict, g, warning: FitWarning) -> None:
    found.setdefault(int(g), []).append(warning)


def plateau(ev: Evidence) -> dict:
    """A dead Jacobian column while the residuals are not at the rounding level (fatal)."""
    dead, found = ev.shared["dead"], {}
    for g in np.flatnonzero(ev.fitted & np.any(dead, axis=1)):
        which = [ev.names[j] for j in np.flatnonzero(dead[g])]
        message = (
            f"plateau: the model does not change with {', '.join(which)} here (the Jacobian column is ~0 while the residuals are not small); "
            "the fit stopped where the gradient vanished, not at a minimum: try other start values"
        )
        _add(found, g, FitWarning("plateau", message, fatal=True, params=tuple(which)))
    return found


def runaway(ev: Evidence) -> dict:
    """Parameters more than RUNAWAY times their start's size from it (a warning)."""
    with np.errstate(all="ignore"):
        away = (~ev.held) & (np.abs(ev.params) > RUNAWAY * np.maximum(np.abs(ev.starts), 1.0))
    found = {}
    for g in np.flatnonzero(ev.fitted & np.any(away, axis=1)):
        which = np.flatnonzero(away[g])
        text = ", ".join(f"{ev.names[j]} = {ev.params[g, j]:.3g}" for j in which)
        message = f"parameters ran away by more than six orders of magnitude from the start ({text}): the minimum may be at infinity"
        _add(found, g, FitWarning("runaway", message, params=tuple(ev.names[j] for j in which)))
    return found


def not_a_minimum(ev: Evidence) -> dict:
    """No progress from the start, or a converged result that is not stationary (fatal)."""
    steep, dead = ev.shared["steep"], ev.shared["dead"]
    stuck = ev.fitted & (ev.iterations > 0) & np.all(ev.params == ev.starts, axis=1) & steep
    not_minimum = ev.converged & steep & ~np.any(dead, axis=1) & ~stuck  # a dead column says more (plateau)
    found = {}
    for g in np.flatnonzero(stuck):
        _add(found, g, FitWarning("no-progress", "the fit did not move from its start: every step tried was rejected", fatal=True))
    for g in np.flatnonzero(not_minimum):
        measure = ev.shared["measure"][g]
        message = f"the solver stopped as converged, but the gradient at the result is not small (measure {measure:.2g}): this is not a minimum"
        _add(found, g, FitWarning("not-stationary", message, fatal=True))
    return found


def undetermined_pairs(ev: Evidence) -> dict:
    """A pair of parameters, one of them nonlinear, that the data do not determine (a warning)."""
    rows_factor = np.where(ev.real[:, :, None], ev.factor, 0.0) if ev.factor.shape[1] == ev.real.shape[1] else ev.factor
    nonlinear = ~np.asarray(ev.model.linear_params, dtype=bool)
    svd = ev.svd if ev.svd is not None and not np.any(ev.held) and rows_factor is ev.factor else None  # the statistics' SVD is of the same (square) factor
    loose, relative = undetermined(rows_factor, ev.shared["rss"], np.asarray(ev.counts) - ev.shared["estimated"], ev.params, nonlinear, ~ev.held, svd)
    found = {}
    for g in np.flatnonzero(ev.fitted & np.any(loose, axis=1)):
        which = np.flatnonzero(loose[g])
        text = ", ".join(f"{ev.names[j]} = {ev.params[g, j]:.4g} (standard error {relative[g, j]:.2g} times its size)" for j in which)
        message = (
            f"parameters not determined: {text}, correlated beyond {COUPLED}: the fit runs along a valley where they go to 0 or infinity together "
            "and the model degenerates (e.g. to a straight line), not to a minimum of the model: try other starts, bounds or a simpler model"
        )
        _add(found, g, FitWarning("undetermined", message, params=tuple(ev.names[j] for j in which)))
    return found


def several_minima(ev: Evidence) -> dict:
    """Another plausible minimum inside the 95% likelihood region of the best (a warning)."""
    found = {}
    if ev.members is None:
        return found
    estimated = ev.shared["estimated"]
    for g in np.flatnonzero(ev.fitted):
        summary = ev.summaries[g]
        plausible = [m for m in summary["minima"] if m["plausible"]]
        if summary["screened_rows"] is not None and ev.members.full_data_choice[g] == "given":
            continue  # the screening rows misled (the given start did better on all of them): their minima say nothing
        rows = int(ev.counts[g]) if summary["screened_rows"] is None else min(int(ev.counts[g]), summary["screened_rows"])  # the losses' own rows
        dof = rows - int(estimated[g])
        if len(plausible) < 2 or dof <= 0:
            continue
        from scipy.special import fdtri  # here, not above: scipy.special's import costs 0.1-0.25 s (nlfit.quantiles)

        region = plausible[0]["loss"] * (1.0 + estimated[g] / dof * float(fdtri(estimated[g], dof, CONFIDENCE)))
        rivals = [m for m in plausible[1:] if m["loss"] <= region]
        if rivals:
            chosen = " (chosen)" if summary["chosen"] in plausible[0]["starts"] else ""
            message = (
                f"the data do not single out one fit: the starts found {1 + len(rivals)} different fits inside the 95% confidence region, "
                f"losses {plausible[0]['loss']:.10g}{chosen} and {rivals[0]['loss']:.10g} (see 'starts' in the JSON)"
            )
            _add(found, g, FitWarning("minima", message))
    return found


def poles(ev: Evidence) -> dict:
    """A pole or a non-finite model value between the data points (warnings)."""
    return {g: found for (g, _), found in _pole_findings(ev.model, ev.problems, ev.params[:, None, :], ev.real).items()}


def worse_than_constant(ev: Evidence) -> dict:
    """The loss above that of the best constant (module docstring); fatal where the model,
    fitted to that constant, shows that a lower loss exists."""
    constants, constant_losses = best_constants(ev.problems, ev.real)
    with np.errstate(invalid="ignore"):
        worse = ev.fitted & ev.shared["above"] & (ev.losses > constant_losses * (1.0 + 1e-9))
    groups = np.flatnonzero(worse)
    found = {}
    if groups.size == 0:
        return found
    claimed = [int(g) for g in groups if Status(int(ev.statuses[g])).success]  # the auxiliary fit only where the result claims success
    better = _lower_loss_as_constant(ev, constants, claimed) if claimed and ev.fit_constant is not None else {}
    for g in groups:
        r2 = ev.r2[g]
        if ev.problems.loss == "linear":
            what = f"the fit is worse than a constant (R² = {r2:.3g})" if np.isfinite(r2) else "the data are constant and the fit is not"
        else:
            units = float(ev.problems.scale[g]) ** 2
            what = f"the fit's loss ({ev.losses[g] * units:.6g}) is higher than that of a constant ({constant_losses[g] * units:.6g})"
        if better.get(int(g), False):
            _add(found, g, FitWarning("worse-than-constant", f"{what} although the model can be one: a lower loss exists, this is not the minimum", fatal=True))
        else:
            _add(found, g, FitWarning("worse-than-constant", what))
    return found


CHECKS = (plateau, runaway, not_a_minimum, undetermined_pairs, several_minima, poles, worse_than_constant)


def check(ev: Evidence, checks=CHECKS) -> dict:
    """{g: [FitWarning, ...]} of every check in ``checks``, in their order, for the groups
    that have any."""
    found: dict = {}
    for one in checks:
        for g, warnings in one(ev).items():
            found.setdefault(g, []).extend(warnings)
    return found


def undetermined(factor, rss, dof, params, nonlinear, free, svd=None) -> tuple[np.ndarray, np.ndarray]:
    """(flags (..., n), relative standard errors (..., n)): the parameters of a pair that
    is not determined (module docstring). ``factor`` (..., M, n): the scaled Jacobian or a
    factor F with F^T F = J^T J; ``rss`` (...): the scaled residual sum of squares; ``dof``
    (...): degrees of freedom; ``params`` (..., n); ``nonlinear`` (n,): which parameters
    enter the model nonlinearly; ``free`` (..., n): estimated (not fixed, not at a bound);
    ``svd``: (singular values, V^T) of ``factor`` with its columns scaled to unit norm, where
    the caller has them and every parameter is free (the statistics compute the same SVD)."""
    factor = np.asarray(factor, dtype=np.float64)
    free = np.broadcast_to(np.asarray(free, dtype=bool), np.shape(params))
    rows, n = factor.shape[-2:]
    with np.errstate(all="ignore"):
        columns = np.where(free[..., None, :], factor, 0.0)
        lengths = norms(columns, axis=-2)
        usable = np.all(np.isfinite(columns), axis=(-2, -1)) & np.all(np.isfinite(params), axis=-1) & (np.asarray(dof) > 0) & np.isfinite(rss)
        unit = np.where(usable[..., None, None], columns / np.where(lengths > 0, lengths, 1.0)[..., None, :], 0.0)
        singular, vt = np.linalg.svd(unit, full_matrices=False)[1:] if svd is None else svd
        floor = np.finfo(float).eps * max(rows, n) * singular[..., :1]
        usable &= floor[..., 0] > 0
        root = np.swapaxes(vt, -1, -2) / np.where(usable[..., None], np.maximum(singular, floor), 1.0)[..., None, :]  # rows: parameters
        length = norms(root, axis=-1)
        spread = np.sqrt(np.where(usable, rss, 0.0) / np.where(usable, dof, 1))[..., None]
        relative = np.where(usable[..., None] & free & (lengths > 0), spread * length / (lengths * np.abs(params)), np.nan)
        unit_rows = root / np.where(length > 0, length, 1.0)[..., None]
        correlation = np.abs(unit_rows @ np.swapaxes(unit_rows, -1, -2))
        loose = relative > UNDETERMINED
        nonlinear = np.asarray(nonlinear, dtype=bool)
        pairs = (correlation > COUPLED) & loose[..., :, None] & loose[..., None, :] & (nonlinear[:, None] | nonlinear[None, :]) & ~np.eye(n, dtype=bool)
    return np.any(pairs, axis=-1), relative


def _response_squares(problems, real) -> np.ndarray:
    """(G,) sum of (y / (sigma scale))^2 over the real rows; without a quotient per row where
    each group has one sigma (``numerics.uniform``)."""
    same = uniform(problems.sigma, real)
    squares = None if same is None else divided_squares(sum_squares(problems.y), same * np.asarray(problems.scale))
    return sum_squares(_scaled_response(problems, real)) if squares is None else squares


def _scaled_response(problems, real) -> np.ndarray:
    """y / (sigma scale) on the real rows: the response in the units of the scaled residuals."""
    with np.errstate(all="ignore"):
        return on_real(np.asarray(problems.y) / (np.asarray(problems.sigma) * np.asarray(problems.scale)[:, None]), real)


def best_constants(problems, real) -> tuple[np.ndarray, np.ndarray]:
    """(c (G,), loss (G,) in scaled units): the constant that fits each group best under the
    fit's own loss, and its loss. Least squares: the weighted mean; a robust loss: the
    minimizer of the robust cost, by golden-section search between the smallest and the
    largest y (the cost of a constant is unimodal there for the convex losses and close to
    it for the others)."""
    from nlfit.problem import rho

    y = np.asarray(problems.y)
    sigma = np.asarray(problems.sigma)
    scale = np.asarray(problems.scale)[:, None]
    same = uniform(sigma, real) if problems.loss == "linear" else None
    if same is not None:  # one sigma per group, every row real: the plain mean, and one pass over the centred values
        mean, squares = centred_squares(y, same * scale[:, 0])
        if squares is not None:
            return mean, 0.5 * squares
    with np.errstate(all="ignore"):
        reference = np.max(np.where(real, sigma, 0.0), axis=1, keepdims=True)
        weights = np.where(real, (reference / sigma) ** 2, 0.0)  # 1/sigma^2, normalized: no overflow for sigma ~ 1e-300

        def cost(c):
            r = np.where(real, (c[:, None] - y) / (sigma * scale), 0.0)
            if problems.loss == "linear":
                return 0.5 * np.sum(r * r, axis=1)
            f = np.asarray(problems.f_scale)[:, None]
            return 0.5 * f[:, 0] ** 2 * np.sum(np.where(real, rho((r / f) ** 2, problems.loss, np)[0], 0.0), axis=1)

        mean = np.sum(weights * np.where(real, y, 0.0), axis=1) / np.sum(weights, axis=1)
        if problems.loss == "linear":
            return mean, cost(mean)
        low, high = np.min(np.where(real, y, np.inf), axis=1), np.max(np.where(real, y, -np.inf), axis=1)
        ratio = (np.sqrt(5.0) - 1.0) / 2.0
        for _ in range(80):
            a, b = high - ratio * (high - low), low + ratio * (high - low)
            left = cost(a) <= cost(b)
            high, low = np.where(left, b, high), np.where(left, low, a)
        best = 0.5 * (low + high)
        return best, cost(best)


def starts_summaries(model, problems, members, real) -> list[dict | None]:
    """The JSON ``starts`` object of every group: how many starts were tried and converged,
    how many were set aside (stopped by the screening after a few iterations, at a higher loss
    than the ones that went on: ``nlfit.solvers.loop.SCREEN_AFTER``), the distinct minima they reached (lowest loss first, each marked plausible or not), and
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
    if members.undetermined is not None:
        implausible |= members.undetermined
    for g, k in _pole_findings(model, problems, members.params, real):
        implausible[g, k] = True
    names = list(model.param_names)
    out = []
    for g in range(members.params.shape[0]):
        minima = multistart.distinct_minima(members.params[g], members.losses[g], members.converged[g], members.residuals[g], members.total_norms[g], names)
        for minimum in minima:
            minimum["plausible"] = not bool(np.all(implausible[g, minimum["starts"]]))
        chosen = screening = int(members.chosen[g])
        label = members.labels[chosen]
        if members.full_data_choice is not None and members.full_data_choice[g] == "given":
            chosen, label = 0, members.labels[0]  # on all the rows the given start did better than the screening's winner
        out.append(
            {
                "tried": int(members.params.shape[1]),
                "converged": int(np.count_nonzero(members.converged[g])),
                "set_aside": 0 if members.set_aside is None else int(np.count_nonzero(members.set_aside[g])),
                "chosen": chosen,
                "chosen_start": label,
                "screened_rows": members.screened_rows,
                "screening_choice": screening if members.screened_rows is not None else None,
                "minima": minima,
            }
        )
    return out


def _grids(x: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For G groups' predictor values (G, L): GRID_STEPS - 1 points inside each interval
    between neighbouring sorted values, and the values themselves (at most GRID_VALUES of
    them, evenly picked). Returns (grids (G, W), valid (G, W)), read-only views of one row
    where every group has the same x; a repeated value gives an empty interval, whose points
    are that value again."""
    with np.errstate(all="ignore"):  # a sum that overflows, or inf - inf, only means "not clean"
        clean = np.all(real) and bool(np.isfinite(np.sum(x)))  # every value usable: taken as they are (no copy of 10^7 rows)
    if clean and len(x) > 1 and np.array_equal(x, np.broadcast_to(x[:1], x.shape)):  # every group on the same x (a design): one grid
        grids, valid = _grids(x[:1], real[:1])
        return np.broadcast_to(grids, (len(x), grids.shape[1])), np.broadcast_to(valid, (len(x), valid.shape[1]))
    values = x if clean else np.where(real & np.isfinite(x), x, np.inf)
    counts = np.full(len(values), values.shape[1]) if clean else np.count_nonzero(np.isfinite(values), axis=1)
    width = int(min(max(counts.max(), 1), GRID_VALUES))
    pick = np.rint(np.linspace(0.0, 1.0, width)[None, :] * np.maximum(counts - 1, 0)[:, None]).astype(np.int64)
    if not np.all(values[:, 1:] >= values[:, :-1]):  # data in x order (a series, a scan) are sorted already
        if len(values) == 1 and values.shape[1] > 4 * width:  # one long fit: only the picked ranks (10^7 rows: no full sort)
            values = np.partition(values, np.unique(pick[0]), axis=1)
        else:
            values = np.sort(values, axis=1)
    values = np.take_along_axis(values, pick, axis=1)
    steps = np.linspace(0.0, 1.0, GRID_STEPS + 1)[:-1]
    with np.errstate(invalid="ignore"):
        inner = values[:, :-1, None] + steps[None, None, :] * np.diff(values, axis=1)[:, :, None]
    grids = np.concatenate([inner.reshape(len(values), -1), values[:, -1:]], axis=1)
    valid = np.isfinite(grids) & (counts >= 2)[:, None]
    return np.where(valid, grids, 0.0), valid


def _pole_findings(model, problems, params, real) -> dict:
    """For G groups x K points ``params`` (G, K, n): {(g, k): [FitWarning, ...]}, the pole
    and non-finite findings of the points that have any (one predictor only; several
    predictors have no order to look between)."""
    x = np.asarray(problems.x)
    groups, starts = params.shape[:2]
    out: dict = {}
    if x.ndim != 2:
        return out
    grids, valid = _grids(x, real)
    if grids.shape[1] < 2 or not np.any(valid):
        return out
    values, denominators = _evaluate(model, params.reshape(groups * starts, -1), grids if starts == 1 else np.repeat(grids, starts, axis=0))
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
        message = f"the fitted model has a pole inside the data range (a denominator changes sign near x = {where:.4g})"
        out.setdefault((int(g), int(k)), []).append(FitWarning("pole", message))
    for g, k in zip(*np.nonzero(np.any(broken, axis=2)), strict=True):
        where = grids[g, int(np.argmax(broken[g, k]))]
        out.setdefault((int(g), int(k)), []).append(
            FitWarning("nonfinite-between", f"the fitted model is not finite between the data points (near x = {where:.4g})")
        )
    return out


def _evaluate(model, params, grids):
    """Model values (G, W) and denominators (G, D, W) on the grids (G, W)."""
    from nlfit.programs import compiled

    if hasattr(model, "values_on_grids"):  # a formula: numpy, no program compiled for it
        return model.values_on_grids(params, grids)
    width = grids.shape[1]
    grids = np.pad(grids, ((0, 0), (0, padded_size(width) - width)), mode="edge")  # one program for many data lengths
    values, denominators = compiled(_evaluate_on_grid, ("model",), grids.size)(params, grids, model=model)
    with np.errstate(all="ignore"):
        return np.asarray(values)[:, :width], np.asarray(denominators)[..., :width]


def _evaluate_on_grid(params, grids, *, model):
    from nlfit._jax import jax, jnp

    def one(p, grid):
        found = model.denominators(p, grid)
        stacked = jnp.stack(found) if found else jnp.zeros((0, grid.shape[0]))
        return model.predict(p, grid), stacked

    return jax.vmap(one)(params, grids)


def _lower_loss_as_constant(ev: Evidence, constants: np.ndarray, groups: list[int]) -> dict:
    """For each of ``groups``: does the model, fitted to the constant data (its best constant),
    reach a point where the fit's own loss on the real data is lower than the result's?
    The fit itself is ``ev.fit_constant(problems, params, counts) -> params``, run by the
    caller's solver (least squares, several starts, a bounded budget)."""
    import dataclasses

    from nlfit import derivatives
    from nlfit._jax import jax, jnp

    pick = np.asarray(groups)
    subset = jax.tree.map(lambda leaf: np.asarray(leaf)[pick] if getattr(leaf, "ndim", 0) >= 1 else leaf, ev.problems)
    rows = ev.real[pick]
    constant = dataclasses.replace(subset, y=jnp.asarray(np.where(rows, constants[pick][:, None], np.asarray(subset.y))), loss="linear")
    at_constant = np.asarray(ev.fit_constant(constant, ev.params[pick], np.count_nonzero(rows, axis=1)))
    residuals = np.asarray(derivatives.jacobian_batch(at_constant, subset, "fwd")[0])
    with np.errstate(all="ignore"):
        there = cost(np.where(rows, residuals, 0.0), ev.problems.loss, np.asarray(subset.f_scale))
    return {g: bool(np.isfinite(there[i]) and there[i] < ev.losses[g] * (1.0 - 1e-9)) for i, g in enumerate(groups)}
