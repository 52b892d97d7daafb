"""Multistart: the starts a fit tries, and what they found.

A model that is nonlinear in its parameters can have several minima, and a start far from
the right one (or on a plateau) converges to the wrong one while every convergence test is
met. nlfit therefore tries K starts by default (``--starts auto``) and keeps the lowest loss.
The K starts are members of one vmapped solve (``nlfit.solvers.loop``), the same machinery as
grouped fits, so they cost one compiled step.

The starts, in order (``plan``):

1. the given start (or the model's default), exactly as with ``--starts 1``;
2. the same start with the model's *linear* parameters solved for (variable projection: for
   the others fixed, a parameter the model is affine in has a least-squares optimum that one
   Gauss-Newton step reaches exactly; ``Model.linear_params``);
3. the model's own default start when a start was given (the linearized fit of a rational
   model, gnuplot's ones for a formula);
3b. starts read off the data where the formula says what a parameter is
   (``nlfit.start.guided_starts``): a frequency of sin(b x) or cos(b x) at the periodogram's
   highest peaks, a pole position of a/(x - b) next to the largest deviation and beyond the
   data: away from the limits where such a model degenerates to a straight line;
4. for each factor 1/10, 1/100, 10, 1/1000, 100 in turn: the whole start scaled by it, as it
   is (a start that is off by that factor), and the start with only its nonlinear parameters
   scaled (a zero value takes the typical magnitude of the others) and the linear ones
   solved for (when the model has no linear parameters the two are the same, and only the
   second is tried);
5. the start with every sign flipped, as it is;
6. random starts: each nonlinear parameter multiplied by 10^u, u uniform in [-2, 2], and its
   sign flipped with probability 1/4 (a zero start value is replaced by the typical magnitude
   of the others first); reproducible with ``--seed``.

From the second start on, the linear parameters are solved for (but in the starts scaled
or flipped as they are); fixed parameters stay
fixed, and every start is moved into the bounds. The given start has the full iteration
budget (``--max-iter``); the others have EXTRA_BUDGET, and the winner goes on to the full
budget if it was stopped by its smaller one.

The winner is the lowest final loss; losses within a relative TIE of the lowest count as
equal, and then the earliest start wins (so the given start keeps its answer when another
start only finds the same minimum, or an equivalent one with relabelled parameters).

``--starts auto``: one start for a model that is linear in its free parameters (with the
least-squares loss: a robust loss is not convex, so it gets several); otherwise
K = WORK // (groups * rows * parameters), between 1 (grouped fits) or MIN_STARTS (single
fits) and MAX_STARTS, where rows is at most SCREEN_ROWS. With more rows than that, the starts
are tried on SCREEN_ROWS evenly spaced rows (a screening pass), and only the winner and the
given start are then fitted to all the data, the lower loss winning: the extra cost of
multistart stays that of a small fit and one more fit of all the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_STARTS = 32
MIN_STARTS = 8
WORK = 2**20  # rows x parameters x starts evaluated per iteration, summed over all members
SCREEN_ROWS = 2048
TIE = 1e-9
SAME_FIT = 1e-6  # residual vectors this close (relative to their norm) are one fit
EXACT_FIT = 1e-9  # ... or this close relative to the data's norm (exact fits)
DECADES = (-1, -2, 1, -3, 2)
SPREAD_DECADES = 2.0
SIGN_FLIP = 0.25


def extra_budget(max_iter: int) -> int:
    """Iterations for the starts other than the given one (the winner may go on)."""
    return int(min(max_iter, max(100, max_iter // 10)))


def auto_count(linear: np.ndarray, free: np.ndarray, rows: int, groups: int, robust: bool = False) -> int:
    """The K of ``--starts auto``: see the module docstring. A model linear in its free
    parameters needs one start for least squares, not for a robust loss (not convex)."""
    if not np.any(free & ~linear) and not robust:
        return 1
    work = groups * min(rows, SCREEN_ROWS) * max(int(np.count_nonzero(free)), 1)
    floor = 1 if groups > 1 else MIN_STARTS
    return int(min(MAX_STARTS, max(floor, WORK // max(work, 1))))


@dataclass
class Plan:
    """K starts for each of G groups: ``params`` (G, K, n), the per-start iteration
    ``budgets`` (K,), which parameters to solve for at each start (``linear``, (K, n) of 0/1),
    and a ``label`` per start."""

    params: np.ndarray
    budgets: np.ndarray
    linear: np.ndarray
    labels: list[str]

    @property
    def count(self) -> int:
        return self.params.shape[1]


def plan(primary: np.ndarray, count: int, linear: np.ndarray, free: np.ndarray, lower: np.ndarray, upper: np.ndarray, max_iter: int,
         seed: int = 0, model_starts: np.ndarray | None = None, keys=None, guided: np.ndarray | None = None, guided_labels=(),
         shown=None) -> Plan:  # fmt: skip
    """``count`` starts for each group from the groups' primary starts ``primary`` (G, n).

    ``linear``, ``free``: (n,) booleans (the model's linear parameters; parameters not fixed).
    ``model_starts``: (G, n) or None, the model's own default start per group when the
    primary is a start the user gave. The random starts of a group depend on ``seed`` and its
    key (``keys``: integers, a hash of each group's data; ``fitting.data_keys``), not on its
    position, so the same data get the same starts whether they are fitted alone, as a group
    of a batch or in a Dask partition. ``guided``: (G, S, n) starts read off the data
    (``nlfit.start.guided_starts``; NaN: the primary's value), tried right after the model's
    default, with the linear parameters solved. ``shown``: the positions of the model's own
    parameters where the vector is padded (``nlfit.models.padded``; None: all).
    """
    primary = np.atleast_2d(np.asarray(primary, dtype=np.float64))
    groups, n = primary.shape
    solve = (linear & free).astype(np.float64)
    nonlinear = free & ~linear
    columns: list[np.ndarray] = [primary]
    labels = ["given"]
    masks = [np.zeros(n)]

    def add(values, label, solved=True):
        if len(columns) < count:
            columns.append(np.where(free, values, primary))
            labels.append(label)
            masks.append(solve if solved else np.zeros(n))

    if np.any(solve):
        add(primary, "given, linear parameters solved")
    if model_starts is not None and len(columns) < count:
        model_starts = np.atleast_2d(np.asarray(model_starts, dtype=np.float64))
        if model_starts.shape == primary.shape:
            model_starts = np.where(np.isfinite(model_starts), model_starts, primary)  # a group without one: its given start again
            if not np.allclose(model_starts, primary):
                add(model_starts, "model default")
    if guided is not None:
        for s, label in enumerate(guided_labels):
            if np.any(np.isfinite(guided[:, s])):
                add(np.where(np.isfinite(guided[:, s]), guided[:, s], primary), label)
    magnitude = np.abs(primary)
    nonzero = np.where((magnitude > 0) & nonlinear, magnitude, np.nan)
    with np.errstate(all="ignore"):
        typical = np.nanmedian(np.where(np.all(np.isnan(nonzero), axis=1, keepdims=True), 1.0, nonzero), axis=1, keepdims=True)
    typical = np.where(np.isfinite(typical) & (typical > 0), typical, 1.0)
    base = np.where(magnitude > 0, primary, typical)  # a zero start value takes the typical magnitude
    for decade in DECADES:
        if np.any(solve):  # the whole start scaled, as it is (a start that is 10 or 100 times off)
            add(primary * 10.0**decade, f"all x 1e{decade:+d}", solved=False)
        add(np.where(nonlinear, base * 10.0**decade, primary), f"nonlinear x 1e{decade:+d}")
    if np.any(free & (primary != 0)):
        add(-primary, "signs flipped", solved=False)
    if len(columns) < count:
        generators = [np.random.default_rng([seed, int(key)]) for key in (keys if keys is not None else [0] * groups)]
    drawn = list(range(n)) if shown is None else list(shown)  # a padded fit's own parameters (nlfit.models.padded)

    def draw(values):  # (G, drawn) -> (G, n): the padded parameters draw nothing, so their starts are those of the fit unpadded
        out = np.ones((groups, n))
        out[:, drawn] = values
        return out

    while len(columns) < count:
        factor = 10.0 ** draw(np.stack([rng.uniform(-SPREAD_DECADES, SPREAD_DECADES, len(drawn)) for rng in generators]))
        sign = np.where(draw(np.stack([rng.uniform(size=len(drawn)) for rng in generators])) < SIGN_FLIP, -1.0, 1.0)
        add(np.where(nonlinear, base * factor * sign, primary), "random")
    params = np.stack(columns, axis=1)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (groups, n))[:, None, :]
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (groups, n))[:, None, :]
    inside = np.clip(params, lower, upper)
    params = np.where(np.isfinite(inside), inside, params)
    budgets = np.array([max_iter] + [extra_budget(max_iter)] * (len(columns) - 1), dtype=np.int64)
    return Plan(params=params, budgets=budgets, linear=np.stack(masks), labels=labels)


def same_fit(residuals: np.ndarray, reference: np.ndarray, data_norm) -> np.ndarray:
    """Whether residual vectors (..., m) give the same fitted curve as ``reference`` (..., m): they
    differ by at most SAME_FIT of the larger residual norm, or EXACT_FIT of the data's norm
    (``data_norm``: at an exact fit the residuals are rounding noise, which differs from one
    labelling of the parameters to the next)."""
    with np.errstate(all="ignore"):
        gap = np.sqrt(np.sum((residuals - reference) ** 2, axis=-1))
        larger = np.maximum(np.sqrt(np.sum(residuals**2, axis=-1)), np.sqrt(np.sum(reference**2, axis=-1)))
    return gap <= SAME_FIT * larger + EXACT_FIT * data_norm


def choose(losses: np.ndarray, residuals: np.ndarray | None = None, data_norms: np.ndarray | None = None, converged: np.ndarray | None = None) -> np.ndarray:
    """The winning start of each group: losses (G, K) -> indices (G,). The lowest finite loss;
    among the starts within a relative TIE of it and those that reached the same fitted curve
    (``residuals`` (G, K, m), ``data_norms`` (G,); see ``same_fit``) the earliest one that
    ``converged`` wins (else the earliest): the given start keeps its answer when another
    start only finds it again, or finds it with the parameters relabelled, and a start that
    stopped short of convergence gives way to one that converged to the same fit. A group
    with no finite loss: 0."""
    losses = np.where(np.isfinite(losses), losses, np.inf)
    if losses.shape[1] == 1:
        return np.zeros(losses.shape[0], dtype=np.int64)
    best = losses.min(axis=1, keepdims=True)
    close = losses <= best + TIE * np.abs(best) + np.finfo(float).tiny
    if residuals is not None:
        lowest = np.argmin(losses, axis=1)
        reference = residuals[np.arange(losses.shape[0]), lowest][:, None, :]
        close |= same_fit(residuals, reference, np.asarray(data_norms)[:, None]) & np.isfinite(losses)
    if converged is not None:
        close = np.where(np.any(close & converged, axis=1, keepdims=True), close & converged, close)
    return np.where(np.isfinite(best[:, 0]), np.argmax(close, axis=1), 0)


def distinct_minima(params: np.ndarray, losses: np.ndarray, converged: np.ndarray, residuals: np.ndarray, data_norm: float, names) -> list[dict]:
    """The different fits the converged starts of one group reached: a list of
    {loss, params, count, starts}, lowest loss first. Two results are the same fit when their
    residual vectors (``residuals``, (K, m)) agree (``same_fit``): parameters that differ only
    by a relabelling or a sign symmetry of the model (two exponentials swapped, b and -b in
    exp(-(x/b)^2)) give the same curve and count once."""
    minima: list[dict] = []
    for k in np.argsort(np.where(np.isfinite(losses), losses, np.inf), kind="stable"):
        if not (converged[k] and np.isfinite(losses[k]) and np.all(np.isfinite(params[k])) and np.all(np.isfinite(residuals[k]))):
            continue
        for found in minima:
            if same_fit(residuals[k], residuals[found["_index"]], data_norm):
                found["count"] += 1
                found["starts"].append(int(k))
                break
        else:
            minima.append({"loss": float(losses[k]), "_index": int(k), "count": 1, "starts": [int(k)]})
    return [
        {"loss": m["loss"], "params": dict(zip(names, (float(v) for v in params[m["_index"]]), strict=True)), "count": m["count"], "starts": m["starts"]}
        for m in minima
    ]
