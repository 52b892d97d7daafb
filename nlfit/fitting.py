"""Fitting: ``fit(dataset, model, ...) -> FitResult``, the library's entry point, and the one
solve behind every fit, G problems x K starts run as members of one batch.

``fit`` checks its options (``nlfit.options.FitOptions``), builds the model and the start
(``nlfit.start``), and runs the one-group case of ``fit_problems``, which grouped fits
(``nlfit.batch``) call with one problem per group. ``solve_groups`` takes G problems (a single fit is G = 1, ``--group-by`` gives one per
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
from nlfit.io.dataset import Dataset
from nlfit.models.padded import Padded
from nlfit.numerics import LARGE_DATA_POINTS, norms, padded_size  # noqa: F401 (padded_size, LARGE_DATA_POINTS: re-exported)
from nlfit.options import FitOptions
from nlfit.prepare import Batch, Prepared, SolverConfig, choose_factorization, prepare, solver_config, start_count  # noqa: F401 (re-exported)
from nlfit.result import FitResult, Fits
from nlfit.solvers.status import Status
from nlfit.start import guided_starts


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
    undetermined: np.ndarray | None = None  # (G, K): a pair of parameters not determined (nlfit.diagnostics.undetermined)
    set_aside: np.ndarray | None = None  # (G, K): stopped by the multistart's screening (nlfit.solvers.loop.SCREEN_AFTER)


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

    index = np.rint(np.linspace(0.0, 1.0, rows)[None, :] * (np.asarray(counts)[:, None] - 1)).astype(np.int64)

    def pick(values):  # on the host: only the picked rows are read (an eager JAX gather first copied all of them in)
        values = np.asarray(values)
        return np.take_along_axis(values, index.reshape(index.shape + (1,) * (values.ndim - 2)), axis=1)

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
            more = solve_members(problems, state, last, direction, globalization, jac_mode, settings, timeout, started, record, on_chunk, screen=False)
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
            key = zlib.crc32(memoryview(np.ascontiguousarray(values[g, : int(count)]).reshape(-1)).cast("B"), key)  # the bytes in place, not copied
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
        return norms(np.where(real, (y - mean[:, None]) / (sigma * scale), 0.0), axis=1)


def _choose(output, problems) -> np.ndarray:
    if np.shape(output.statuses)[1] == 1:  # one start: nothing to choose (and no pass over the data)
        return np.zeros(np.shape(output.statuses)[0], dtype=np.int64)
    converged = np.isin(output.statuses, (Status.GTOL, Status.FTOL, Status.XTOL))
    residuals = np.asarray(output.state.local.residuals)
    if residuals.shape[-1] == 0:  # no residual vectors kept (a large fit's fused sums): by the losses alone
        return multistart.choose(_final_losses(output), None, None, converged)
    return multistart.choose(_final_losses(output), residuals, data_norms(problems), converged)


def _final_losses(output) -> np.ndarray:
    """Each member's loss at the point it reports (its best one where it was stopped early)."""
    stopped_early = np.isin(output.statuses, (Status.INTERRUPTED, Status.TIMEOUT))
    return np.where(stopped_early, np.asarray(output.state.best_loss), np.asarray(output.state.local.loss))


def solve_groups(
    problems,
    primary: np.ndarray,
    counts: np.ndarray,
    config: SolverConfig,
    *,
    timeout: float | None = None,
    record: bool = False,
    model_starts: np.ndarray | None = None,
    on_iteration=None,
    on_progress=None,
) -> Solved:
    """Fit G problems (``problems``: leaves with a leading G axis, ``counts`` real rows each)
    from ``primary`` (G, n) with ``config.count`` starts each. ``on_iteration(row)`` gets the latest
    history row of the best member (single fits); ``on_progress(done, total)`` the groups that
    have stopped."""

    started = time.perf_counter()
    count, linear, free, seed, settings = config.count, config.linear, config.free, config.seed, config.settings
    direction, globalization, jac_mode = config.direction, config.globalization, config.jac_mode
    groups = primary.shape[0]
    lower, upper = np.asarray(problems.lower), np.asarray(problems.upper)
    keys = data_keys(problems, counts) if count > 1 else None
    guided, guided_labels = guided_starts(problems.model, problems.x, problems.y, counts) if count > 1 else (None, ())
    shown = getattr(problems.model, "shown", None)  # a padded fit's own parameters (nlfit.models.padded)
    plan = multistart.plan(primary, count, linear, free, lower, upper, int(settings.max_iter), seed, model_starts, keys, guided, guided_labels, shown)
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
        # the screening rows are few: J itself and its SVD, whatever the full data need; for LM
        # on few parameters the normal equations by closed-form Cholesky, as a batch of small
        # fits (the starts only compete there: the winner is refined on all the rows after)
        rows, count = int(np.shape(sample.y)[-1]), int(np.asarray(plan.params).shape[1])
        closed_form = choose_factorization("auto", rows, max(count, 2), int(np.shape(plan.params)[-1]), direction.name) == "cholesky"
        small = (
            dataclasses.replace(direction, factorization="cholesky" if closed_form else "svd", keep_residuals=True)
            if hasattr(direction, "factorization")
            else direction
        )
        first, screened = _run(sample, plan, small, globalization, jac_mode, settings, seed, timeout, started, False, on_chunk)
        members = _members(first, screened, plan, sample, np.minimum(counts, multistart.SCREEN_ROWS), True, linear, free)
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
        members = _members(output, winners, plan, problems, counts, False, linear, free) if plan.count > 1 else None
        stopped = _stopped(output)
        statuses = np.where(stopped > 0, stopped, output.statuses[np.arange(groups), winners])
        origin = _take(output.state.origin, winners)
    state = _take(output.state, winners)
    histories = None
    if record:
        histories = [_member_history(output.records, g, int(winners[g]), direction, globalization, float(scales[g])) for g in range(groups)]
    return Solved(state=state, statuses=np.asarray(statuses), starts=origin, histories=histories, members=members,
                  seconds=time.perf_counter() - started)  # fmt: skip


def _members(output, winners, plan, problems, counts, screened: bool, linear, free) -> Members:
    local = output.state.local
    with np.errstate(over="ignore", invalid="ignore"):  # losses beyond the float range in the user's units
        losses = _final_losses(output) * np.asarray(problems.scale)[:, None] ** 2
    total = data_norms(problems, counts)
    if local.jac is not None:
        columns = norms(np.asarray(local.jac), axis=-2)
    elif local.r_factor is not None:
        columns = norms(np.asarray(local.r_factor), axis=-2)
    elif local.gram is not None:
        columns = np.sqrt(np.maximum(np.diagonal(np.asarray(local.gram), axis1=-2, axis2=-1), 0.0))
    else:
        columns = None
    return Members(
        undetermined=_undetermined(local, output.state.params, problems, counts, linear, free),
        params=np.asarray(output.state.params),
        origins=np.asarray(output.state.origin),
        losses=losses,
        converged=np.isin(output.statuses, (Status.GTOL, Status.FTOL, Status.XTOL)),
        column_norms=columns,
        residual_norms=norms(np.asarray(local.residuals), axis=-1),
        residuals=np.asarray(local.residuals),
        total_norms=total,
        chosen=np.asarray(winners),
        labels=list(plan.labels),
        screened_rows=multistart.SCREEN_ROWS if screened else None,
        set_aside=(output.statuses == Status.MAX_ITER) & (np.asarray(output.state.budget) < np.asarray(plan.budgets)[None, :]),
    )


def _undetermined(local, params, problems, counts, linear, free) -> np.ndarray | None:
    """(G, K): whether each start ended with a pair of parameters that the data do not
    determine (``nlfit.diagnostics.undetermined``), from its last linearization; None
    when the solver kept none (gradient descent)."""
    from nlfit.diagnostics import undetermined

    if local.jac is not None:
        factor = np.asarray(local.jac)
    elif local.r_factor is not None:
        factor = np.asarray(local.r_factor)
    elif local.gram is not None:
        gram = np.asarray(local.gram)
        finite = np.all(np.isfinite(gram), axis=(-2, -1))  # a start that ran off to inf or NaN: eigh would fail on it
        values, vectors = np.linalg.eigh(np.where(finite[..., None, None], gram, 0.0))  # F = diag(sqrt(values)) Q^T: F^T F = J^T J
        factor = np.sqrt(np.maximum(values, 0.0))[..., :, None] * np.swapaxes(vectors, -1, -2)
        factor = np.where(finite[..., None, None], factor, np.nan)
    else:
        return None
    params = np.asarray(params)
    lower, upper = np.asarray(problems.lower)[:, None, :], np.asarray(problems.upper)[:, None, :]
    estimated = free & (params > lower) & (params < upper)
    with np.errstate(all="ignore"):
        rss = np.sum(np.asarray(local.residuals) ** 2, axis=-1)
    dof = np.asarray(counts)[:, None] - np.count_nonzero(estimated, axis=-1)
    return np.any(undetermined(factor, rss, dof, params, free & ~linear, estimated)[0], axis=-1)


# ----------------------------------------------------------------- the library's entry point


def fit(dataset: Dataset, model, p0=None, on_iteration=None, *, options: FitOptions | None = None, file_start: int | None = None, **given) -> FitResult:
    """Fit ``model`` (a spec string or a Model) to ``dataset``.

    ``options``: a ``FitOptions``; keywords (``method="gn"``, ``max_iter=50``, ...) set its
    fields (on top of ``options`` when both are given). ``p0``: the start by position or by
    name (``nlfit.start.choose_start``; ``file_start`` picks a NIST file's start 1 or 2). A
    single fit is the one-group case of ``solve_batch``; its starts are chosen by
    ``nlfit.multistart`` (``starts``: 'auto' or a count; 1 is the given start alone)."""
    options = FitOptions.of(given) if options is None else options.replace(**given)
    prepared = prepare(dataset, model, options, p0, file_start=file_start)
    (batch,) = prepared.batches()
    return solve_batch(prepared, batch, record=True, timeout=options.timeout, on_iteration=on_iteration).result(0)


def solve_batch(prepared: Prepared, batch: Batch, *, record: bool, timeout: float | None, on_iteration=None, on_progress=None) -> Fits:
    """The fits of one batch: the one solve (``solve``), then the one post-processing
    (``finish``)."""
    solved = solve(prepared, batch, record=record, timeout=timeout, on_iteration=on_iteration, on_progress=on_progress)
    return finish(prepared, batch, solved)


def solve(prepared: Prepared, batch: Batch, *, record: bool, timeout: float | None, on_iteration=None, on_progress=None) -> Solved:
    """The one solve of a batch (``solve_groups``) and each group's status: a group with
    fewer rows than free parameters is ``too-few-points`` and one without rows ``no-data``
    (reported at its start), one with non-finite data ``nonfinite``."""
    config, problems, real, counts = batch.config, batch.problems, batch.real, batch.counts
    if config.checked and ill_conditioned(_gram_at(batch.starts[0], problems, config.jac_mode), config.free):
        config = _qr_config(config, config.count)  # ill-conditioned from the start: the streaming QR all the way
    solved = solve_groups(
        problems, batch.starts, counts, config, timeout=timeout, record=record, model_starts=batch.model_starts,
        on_iteration=on_iteration, on_progress=on_progress,
    )  # fmt: skip
    budget = int(config.settings.max_iter) - int(solved.state.iteration[0])
    left = None if timeout is None else timeout - solved.seconds
    cut = np.isin(np.asarray(solved.statuses), (Status.INTERRUPTED, Status.TIMEOUT, Status.MAX_ITER))
    if config.checked and not np.any(cut) and budget > 0 and ill_conditioned(solved.state.local.gram[0], config.free):
        solved = _taken_on_by_qr(solved, problems, counts, config, budget, left, record, on_iteration)
    too_few = np.asarray(counts) < int(np.count_nonzero(config.free))
    x = np.asarray(problems.x).reshape(*np.shape(problems.y), -1)
    bad_data = ~np.all(np.where(real, np.isfinite(np.asarray(problems.y)) & np.all(np.isfinite(x), axis=2), True), axis=1)
    statuses = np.where(bad_data, int(Status.NONFINITE), solved.statuses)
    statuses = np.where(too_few, int(Status.TOO_FEW_POINTS), statuses)
    solved.statuses = np.where(np.asarray(counts) == 0, int(Status.NO_DATA), statuses)
    none = lambda counts: np.where(too_few, 0, np.asarray(counts))  # noqa: E731
    solved.state = solved.state._replace(  # not fitted: the start, and no iterations (what the solver did there is dropped)
        params=np.where(too_few[:, None], batch.starts, solved.state.params),
        iteration=none(solved.state.iteration), nfev=none(solved.state.nfev), njev=none(solved.state.njev),
    )  # fmt: skip
    return solved


def ill_conditioned(gram: np.ndarray, free: np.ndarray) -> bool:
    """Whether J^T J (of the free parameters, equilibrated) has a condition number above
    ``prepare.GRAM_CONDITION``, or is not finite: the fused sums' steps are then not accurate
    enough to end a fit on."""
    from nlfit.numerics import gram_condition
    from nlfit.prepare import GRAM_CONDITION

    return not gram_condition(gram, free) < GRAM_CONDITION


def _gram_at(params, problems, jac_mode: str) -> np.ndarray:
    """J^T J of the one problem of ``problems`` at ``params`` (one fused pass over the data)."""
    from nlfit import derivatives
    from nlfit._jax import jax

    problem = jax.tree.map(lambda leaf: leaf[0] if getattr(leaf, "ndim", 0) >= 1 else leaf, problems)
    mode = "fwd" if jac_mode == "fd" else jac_mode
    return np.asarray(derivatives.gram_jit(np.asarray(params, dtype=np.float64), problem, mode, with_residuals=False)[1])


def _qr_config(config: SolverConfig, count: int) -> SolverConfig:
    from nlfit.solvers.directions import make_direction

    return dataclasses.replace(config, direction=make_direction(config.direction.name, None, "qr"), factorization="qr", count=count, checked=False)


def _taken_on_by_qr(solved: Solved, problems, counts, config: SolverConfig, budget: int, timeout, record, on_iteration) -> Solved:
    """The fit continued from the fused sums' result by the streaming QR (its steps' accuracy
    follows cond(J), not cond(J)^2), within what is left of the iteration budget and of the
    time limit; the given start's record kept: iterations and evaluations are those of both runs."""

    qr = _qr_config(config, 1)
    qr = dataclasses.replace(qr, settings=config.settings._replace(max_iter=budget))
    done = solved.histories[0][-1] if record and solved.histories and solved.histories[0] else None

    def numbered_on(row):  # the live display goes on counting from the first run
        on_iteration(row if done is None else {**row, **{name: row[name] + done[name] for name in ("iteration", "nfev", "njev")}})

    more = solve_groups(
        problems, np.asarray(solved.state.params), counts, qr, timeout=timeout, record=record, on_iteration=None if on_iteration is None else numbered_on
    )
    state = more.state._replace(
        iteration=more.state.iteration + solved.state.iteration, nfev=more.state.nfev + solved.state.nfev, njev=more.state.njev + solved.state.njev
    )
    histories = None
    if record:  # the second run's rows numbered on from the first's
        histories = []
        for first, second in zip(solved.histories, more.histories, strict=True):
            last = first[-1]
            histories.append(first + [{**row, **{name: row[name] + last[name] for name in ("iteration", "nfev", "njev")}} for row in second[1:]])
    return dataclasses.replace(more, state=state, starts=solved.starts, histories=histories, members=solved.members, seconds=solved.seconds + more.seconds)


def finish(prepared: Prepared, batch: Batch, solved: Solved) -> Fits:
    """The one post-processing (``nlfit.postprocess``) of a batch's ``solve``: it reads only
    its arguments, so a grouped fit runs it for one block while the next is solved
    (``nlfit.batch.GroupFits``)."""
    from nlfit import postprocess

    config, problems = batch.config, batch.problems
    too_few = np.asarray(batch.counts) < int(np.count_nonzero(config.free))
    nist = prepared.dataset.nist
    padded = isinstance(problems.model, Padded)  # computed with padded parameters (nlfit.models.padded)
    model = problems.model if padded else prepared.model
    context = postprocess.Context(
        model, problems, np.asarray(batch.counts), np.asarray(batch.real, dtype=bool), prepared.options, config.jac_mode, config.factorization,
        prepared.dataset.sigma is not None, None if nist is None else (nist.long_x, nist.long_y),
    )  # fmt: skip
    from nlfit.diagnostics import starts_summaries

    solved = _relabelled(prepared.model, problems, solved)
    summaries = starts_summaries(model, problems, solved.members, context.real)
    summaries = [None if skipped else summary for skipped, summary in zip(too_few.tolist(), summaries, strict=True)]  # not fitted: no starts
    fits = postprocess.finish(
        context, solved, data_columns=prepared.data_columns, keys=batch.keys, fit_constant=constant_fitter(config), summaries=summaries,
        notes=prepared.reader_warnings(batch),
    )  # fmt: skip
    return fits.unpadded(prepared.model) if padded else fits


def _relabelled(model, problems, solved: Solved) -> Solved:
    """The winners, and every start's result, with their labels in the model's documented
    order (``relabel``: a model symmetric under exchanging parameters, e.g. R's lKe < lKa),
    where the exchanged parameters have the same bounds; the winners' linearization is then
    recomputed at the new point."""
    relabel = getattr(model, "relabel", None)
    if relabel is None:
        return solved
    shown = np.asarray(getattr(problems.model, "shown", range(np.shape(solved.state.params)[1])))
    lower, upper = (np.asarray(v)[:, shown] for v in (problems.lower, problems.upper))

    def permuted(params, group_of_row):
        """(params with the labels in order, which rows moved) for rows (N, n) of the groups."""
        order = relabel(params[:, shown])
        box = np.all((np.take_along_axis(lower[group_of_row], order, axis=1) == lower[group_of_row])
                     & (np.take_along_axis(upper[group_of_row], order, axis=1) == upper[group_of_row]), axis=1)  # fmt: skip
        moved = box & np.any(order != np.arange(len(shown))[None, :], axis=1)
        out = params.copy()
        out[np.ix_(moved, shown)] = np.take_along_axis(params[:, shown], order, axis=1)[moved]
        return out, moved, order

    params = np.asarray(solved.state.params)
    groups = np.arange(params.shape[0])
    members = solved.members
    if members is not None:  # the summaries' minima in the same order as the result
        size, starts, n = members.params.shape
        flat, moved, order = permuted(members.params.reshape(-1, n), np.repeat(groups, starts))
        norms = members.column_norms
        if norms is not None:
            full = np.tile(np.arange(n), (size * starts, 1))
            full[np.ix_(moved, shown)] = shown[order[moved]]
            norms = np.take_along_axis(norms.reshape(-1, n), full, axis=1).reshape(norms.shape)
        solved = dataclasses.replace(solved, members=dataclasses.replace(members, params=flat.reshape(members.params.shape), column_norms=norms))
    relabelled, moved, _ = permuted(params, groups)
    if not np.any(moved):
        return solved
    local = solved.state.local._replace(jac=None, r_factor=None, qtr=None, gram=None, hess=None)
    return dataclasses.replace(solved, state=solved.state._replace(params=relabelled, local=local))


CONSTANT_FIT_ITERATIONS = 200


def constant_fitter(config: SolverConfig):
    """The auxiliary fit of the worse-than-a-constant check (``nlfit.diagnostics``): the model
    fitted by least squares to constant data, from the results, with several starts whatever
    the fit used (a constant is often reached only in a limit, K -> 0 in Vm x/(K + x)), by
    Levenberg-Marquardt with at most CONSTANT_FIT_ITERATIONS iterations."""

    def fit_constant(problems, params, counts):
        from nlfit.multistart import auto_count
        from nlfit.options import DEFAULTS
        from nlfit.solvers.directions import make_direction
        from nlfit.solvers.globalization import TrustRegion

        starts = max(config.count, auto_count(config.linear, config.free, int(np.max(counts)), len(counts)))
        settings = DEFAULTS.replace(max_iter=min(int(config.settings.max_iter), CONSTANT_FIT_ITERATIONS)).settings()
        constant = dataclasses.replace(
            config, direction=make_direction("lm", None, config.factorization), globalization=TrustRegion(), settings=settings, count=starts
        )
        return solve_groups(problems, params, counts, constant).state.params

    return fit_constant
