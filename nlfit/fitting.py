"""The one solve behind every fit: G problems x K starts, run as members of one batch.

``solve_groups`` takes G problems (a single fit is G = 1, ``--group-by`` gives one per
group) and their primary starts, expands them into K starts each (``nlfit.multistart``),
runs every member with ``nlfit.solvers.loop``, lets each group's winning start go on to the
full iteration budget, and returns one winner per group: its state, status, history and a
summary of the starts. Post-processing (statistics, diagnostics, JSON) is then the same for
every kind of fit (``nlfit.result``).

With more rows than ``multistart.SCREEN_ROWS``, the starts are first run on evenly spaced
rows (screening); each group's winner is then fitted to all the rows from where the
screening left it, beside the given start from where it began, and the lower loss wins.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from nlfit import multistart
from nlfit.solvers.status import Status


@dataclass
class Members:
    """Where every start of G groups ended (K starts each; the screening pass for large data):
    ``params`` and ``origins`` (G, K, n), ``losses`` (G, K) in the user's units, ``converged``
    (G, K), ``column_norms`` (G, K, n) of the scaled Jacobian (None for gradient descent),
    ``residual_norms`` (G, K) scaled, the chosen start per group, and the plan's labels."""

    params: np.ndarray
    origins: np.ndarray
    losses: np.ndarray
    converged: np.ndarray
    column_norms: np.ndarray | None
    residual_norms: np.ndarray
    residuals: np.ndarray  # (G, K, L) scaled: which starts reached the same fitted curve
    total_norms: np.ndarray  # (G,) sqrt of the weighted total sum of squares about the mean, scaled
    chosen: np.ndarray
    labels: list[str]
    screened_rows: int | None
    full_data_choice: np.ndarray | None = None  # screened fits: which start won on all the rows


@dataclass
class Solved:
    """The winners of G groups: ``state`` (leaves with a leading G axis), ``statuses`` (G,),
    the start each winner came from (``starts``, (G, n)), the ``histories`` (per group, when
    recorded), the ``members`` (every start; None for one start), seconds."""

    state: object
    statuses: np.ndarray
    starts: np.ndarray
    histories: list[list[dict]] | None
    members: Members | None
    seconds: float


def _take(tree, index):
    """Member ``index[g]`` of every group: leaves (G, K, ...) -> (G, ...) (on the host)."""
    from nlfit._jax import jax

    index = np.asarray(index)
    groups = np.arange(index.shape[0])
    return jax.tree.map(lambda leaf: np.asarray(leaf)[groups, index], tree)


def _member_history(records: np.ndarray, g: int, k: int, direction, globalization, scale: float) -> list[dict]:
    from nlfit.solvers.loop import history_rows, thinned

    rows = records[:, g, k]
    iterations = rows[:, 0]
    first = np.concatenate([[True], np.diff(iterations) > 0])
    rows = rows[first]
    return history_rows(rows[thinned(rows[:, 0])], direction, globalization, scale)


def subsample(problems, counts: np.ndarray, rows: int):
    """``rows`` evenly spaced real points of every group (G, L) -> (G, rows)."""
    import dataclasses

    from nlfit._jax import jnp

    index = np.rint(np.linspace(0.0, 1.0, rows)[None, :] * (np.asarray(counts)[:, None] - 1)).astype(np.int64)
    gather = jnp.asarray(index)

    def pick(values):
        values = jnp.asarray(values)
        return jnp.take_along_axis(values, gather.reshape(gather.shape + (1,) * (values.ndim - 2)), axis=1)

    return dataclasses.replace(problems, x=pick(problems.x), y=pick(problems.y), sigma=pick(problems.sigma))


def _stopped(output) -> np.ndarray:
    """Per group: INTERRUPTED or TIMEOUT when any of its starts was cut short, else 0."""
    cut = np.where(np.isin(output.statuses, (Status.INTERRUPTED, Status.TIMEOUT)), output.statuses, 0)
    return cut.max(axis=1)


def _run(problems, plan, direction, globalization, jac_mode, settings, seed, timeout, started, record, on_chunk):
    """Every member of ``plan`` to the end; then each group's winner, if its smaller budget
    stopped it, on to ``max_iter``. Returns (output, winners (G,))."""
    from nlfit._jax import jnp
    from nlfit.solvers.loop import solve_members, start_members

    state, first = start_members(problems, plan.params, plan.budgets, plan.linear, direction, jac_mode, settings, seed)
    output = solve_members(problems, state, first, direction, globalization, jac_mode, settings, timeout, started, record, on_chunk)
    winners = _choose(output, problems)
    if plan.count > 1 and not np.any(_stopped(output)):
        groups = np.arange(len(winners))
        budget = np.asarray(output.state.budget)
        go_on = (output.statuses[groups, winners] == Status.MAX_ITER) & (budget[groups, winners] < int(settings.max_iter))
        if np.any(go_on):
            chosen = np.zeros(output.statuses.shape, dtype=bool)
            chosen[groups[go_on], winners[go_on]] = True
            state = output.state._replace(
                status=jnp.where(jnp.asarray(chosen), int(Status.RUNNING), output.state.status),
                budget=jnp.where(jnp.asarray(chosen), int(settings.max_iter), output.state.budget),
            )
            last = output.records[-1] if record else None
            more = solve_members(problems, state, last, direction, globalization, jac_mode, settings, timeout, started, record, on_chunk)
            if record:
                more.records = np.concatenate([output.records, more.records[1:]], axis=0)
            output = more
            winners = _choose(output, problems)
    return output, winners


def data_keys(problems, counts) -> list[int]:
    """A hash of each group's real rows (x, y, sigma): the seed of its random starts, so the
    same data get the same starts wherever they are fitted."""
    import zlib

    arrays = [np.asarray(problems.x), np.asarray(problems.y), np.asarray(problems.sigma)]
    keys = []
    for g, count in enumerate(np.asarray(counts)):
        key = 0
        for values in arrays:
            key = zlib.crc32(np.ascontiguousarray(values[g, : int(count)]).tobytes(), key)
        keys.append(key)
    return keys


def data_norms(problems, counts=None) -> np.ndarray:
    """(G,) the norm of each group's weighted response about its mean, scaled (the yardstick
    of ``multistart.same_fit`` for exact fits); padded rows (sigma = inf) weigh nothing."""
    y = np.asarray(problems.y)
    sigma = np.asarray(problems.sigma)
    scale = np.asarray(problems.scale)[:, None]
    real = np.isfinite(sigma) if counts is None else np.arange(y.shape[1])[None, :] < np.minimum(np.asarray(counts), y.shape[1])[:, None]
    with np.errstate(all="ignore"):
        reference = np.max(np.where(real, sigma, 0.0), axis=1, keepdims=True)
        weights = np.where(real, (reference / np.where(real, sigma, 1.0)) ** 2, 0.0)  # 1/sigma^2, normalized
        mean = np.sum(weights * np.where(real, y, 0.0), axis=1) / np.sum(weights, axis=1)
        return _norms(np.where(real, (y - mean[:, None]) / (sigma * scale), 0.0), axis=1)


def _choose(output, problems) -> np.ndarray:
    converged = np.isin(output.statuses, (Status.GTOL, Status.FTOL, Status.XTOL))
    return multistart.choose(_final_losses(output), np.asarray(output.state.local.residuals), data_norms(problems), converged)


def _final_losses(output) -> np.ndarray:
    """Each member's loss at the point it reports (its best one where it was stopped early)."""
    stopped_early = np.isin(output.statuses, (Status.INTERRUPTED, Status.TIMEOUT))
    return np.where(stopped_early, np.asarray(output.state.best_loss), np.asarray(output.state.local.loss))


def solve_groups(
    problems,
    primary: np.ndarray,
    counts: np.ndarray,
    count: int,
    linear: np.ndarray,
    free: np.ndarray,
    direction,
    globalization,
    jac_mode: str,
    settings,
    seed: int = 0,
    timeout: float | None = None,
    record: bool = False,
    model_starts: np.ndarray | None = None,
    param_names=(),
    on_iteration=None,
    on_progress=None,
) -> Solved:
    """Fit G problems (``problems``: leaves with a leading G axis, ``counts`` real rows each)
    from ``primary`` (G, n) with ``count`` starts each. ``on_iteration(row)`` gets the latest
    history row of the best member (single fits); ``on_progress(done, total)`` the groups that
    have stopped."""

    started = time.perf_counter()
    groups = primary.shape[0]
    lower, upper = np.asarray(problems.lower), np.asarray(problems.upper)
    keys = data_keys(problems, counts) if count > 1 else None
    plan = multistart.plan(primary, count, linear, free, lower, upper, int(settings.max_iter), seed, model_starts, keys)
    width = int(problems.y.shape[1])
    scales = np.asarray(problems.scale, dtype=np.float64)
    screening = plan.count > 1 and width > multistart.SCREEN_ROWS

    def on_chunk(state, records):
        statuses = np.asarray(state.status)
        if on_progress is not None:
            on_progress(int(np.count_nonzero(np.all(statuses != Status.RUNNING, axis=1))), groups)
        if on_iteration is not None and records is not None and len(records):
            losses = np.where(np.isfinite(records[-1, 0, :, 1]), records[-1, 0, :, 1], np.inf)
            from nlfit.solvers.loop import history_rows

            on_iteration(history_rows(records[-1:, 0, int(np.argmin(losses))], direction, globalization, scales[0])[0])

    if screening:
        sample = subsample(problems, counts, multistart.SCREEN_ROWS)
        # the screening rows are few: J itself and its SVD, whatever the full data need
        small = dataclasses.replace(direction, factorization="svd") if hasattr(direction, "factorization") else direction
        first, screened = _run(sample, plan, small, globalization, jac_mode, settings, seed, timeout, started, False, on_chunk)
        members = _members(first, screened, plan, sample, np.minimum(counts, multistart.SCREEN_ROWS), screened=True)
        # On all the rows: the screening's winner, and the given start too unless it won (the
        # rows left out may hold what only the given start finds, such as a narrow peak).
        chosen = _take(first.state.params, screened)[:, None, :]
        both = bool(np.any(screened != 0))
        single = multistart.Plan(
            params=np.concatenate([chosen, plan.params[:, :1]], axis=1) if both else chosen,
            budgets=np.array([int(settings.max_iter)] * (2 if both else 1)),
            linear=np.zeros((2 if both else 1, primary.shape[1])),
            labels=["screened", "given"] if both else ["screened"],
        )
        stopped = _stopped(first)
        if np.any(stopped):  # cut short while screening: the full data at the best point so far
            from nlfit.solvers.loop import MembersOutput, start_members

            state, records = start_members(problems, single.params, single.budgets, single.linear, direction, jac_mode, settings, seed)
            output = MembersOutput(state=state, statuses=np.asarray(state.status), records=np.asarray(records)[None] if record else None, seconds=0.0)
            winners = np.zeros(groups, dtype=np.int64)
        else:
            output, winners = _run(problems, single, direction, globalization, jac_mode, settings, seed, timeout, started, record, on_chunk)
            stopped = _stopped(output)
        statuses = np.where(stopped > 0, stopped, output.statuses[np.arange(groups), winners])
        origin = np.where((winners == 0)[:, None], _take(first.state.origin, screened), plan.params[:, 0])
        members.full_data_choice = np.where(winners == 0, "screened", "given")
    else:
        output, winners = _run(problems, plan, direction, globalization, jac_mode, settings, seed, timeout, started, record, on_chunk)
        members = _members(output, winners, plan, problems, counts, screened=False) if plan.count > 1 else None
        stopped = _stopped(output)
        statuses = np.where(stopped > 0, stopped, output.statuses[np.arange(groups), winners])
        origin = _take(output.state.origin, winners)
    state = _take(output.state, winners)
    histories = None
    if record:
        histories = [_member_history(output.records, g, int(winners[g]), direction, globalization, float(scales[g])) for g in range(groups)]
    return Solved(state=state, statuses=np.asarray(statuses), starts=origin, histories=histories, members=members,
                  seconds=time.perf_counter() - started)  # fmt: skip


def _norms(values: np.ndarray, axis: int) -> np.ndarray:
    """Euclidean norms scaled by the largest entry (no overflow or underflow of the squares)."""
    with np.errstate(all="ignore"):  # NaN or inf entries give NaN or inf, without warnings
        largest = np.max(np.abs(values), axis=axis, keepdims=True)
        safe = np.where((largest > 0) & np.isfinite(largest), largest, 1.0)
        return np.squeeze(largest, axis) * np.sqrt(np.sum((values / safe) ** 2, axis=axis))


def _members(output, winners, plan, problems, counts, screened: bool) -> Members:
    local = output.state.local
    with np.errstate(over="ignore", invalid="ignore"):  # losses beyond the float range in the user's units
        losses = _final_losses(output) * np.asarray(problems.scale)[:, None] ** 2
    total = data_norms(problems, counts)
    if local.jac is not None:
        norms = _norms(np.asarray(local.jac), axis=-2)
    elif local.r_factor is not None:
        norms = _norms(np.asarray(local.r_factor), axis=-2)
    elif local.gram is not None:
        norms = np.sqrt(np.maximum(np.diagonal(np.asarray(local.gram), axis1=-2, axis2=-1), 0.0))
    else:
        norms = None
    return Members(
        params=np.asarray(output.state.params),
        origins=np.asarray(output.state.origin),
        losses=losses,
        converged=np.isin(output.statuses, (Status.GTOL, Status.FTOL, Status.XTOL)),
        column_norms=norms,
        residual_norms=_norms(np.asarray(local.residuals), axis=-1),
        residuals=np.asarray(local.residuals),
        total_norms=total,
        chosen=np.asarray(winners),
        labels=list(plan.labels),
        screened_rows=multistart.SCREEN_ROWS if screened else None,
    )
