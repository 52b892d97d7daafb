"""The one iteration loop every method x globalization runs.

``advance(state) -> state`` is pure JAX: it asks the globalization for a proposal, accepts
or rejects it, re-linearizes at an accepted point, and applies the termination tests.

Every fit is a batch of *members*: G problems (a single fit is G = 1; ``--group-by`` gives
one problem per group) times K starts of each (multistart; K = 1 is one start). The members
are advanced together by ``advance`` under two nested ``vmap``s; a member that has stopped
is frozen. ``run_chunk`` runs up to ``CHUNK`` iterations in one compiled call (a
``while_loop`` that ends as soon as every member has stopped) and returns each iteration's
record when asked, so the Python driver ``solve_members`` pays one dispatch per chunk, not
per iteration. The driver honours the time limit, reports progress, and turns Ctrl-C into an
"interrupted" result at each member's best point.

A large batch runs on every core (``nlfit.cores``: one XLA host device per core): its
members are cut into one share per device (``Spread``), and each chunk dispatches the same
compiled ``run_chunk`` to every device, which then run their loops side by side, each ending
with its own slowest member (``spread_for`` decides when it pays).

Each member carries its own iteration budget (``State.budget``): multistart gives its extra
starts a smaller one and lets the winner go on to ``max_iter`` (``nlfit.multistart``).

Termination: ``nlfit.solvers.termination.termination``, one pure function for the start and
every iteration (its docstring lists the tests and their order).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from nlfit import signals
from nlfit._jax import jax, jnp
from nlfit.problem import fixed, vmap_groups
from nlfit.programs import compiled, program
from nlfit.solvers.directions import Direction, Local
from nlfit.solvers.globalization import Globalization, decrease
from nlfit.solvers.settings import Settings
from nlfit.solvers.status import Status
from nlfit.solvers.termination import ROUNDING_LEVEL, STALL_MEASURE, Measures, Tolerances, at_start, termination

INITIAL_DAMPING = 1e-3
# Initial trust-region radius = RADIUS_FACTOR * ||D p0|| (RADIUS_FACTOR when p0 = 0). MINPACK
# uses 100; scipy's trf uses 1. Measured on the 27 NIST StRD problems (both starts), 1 solves
# more of them (BoxBOD, MGH09 and MGH10 from start 1 overshoot with 100) in fewer evaluations.
RADIUS_FACTOR = 1.0
# Iterations per compiled call of run_chunk (the driver asks for fewer when iterations are slow).
CHUNK = 16
# Seconds one call of run_chunk should take at most, so that Ctrl-C, the time limit and the
# progress line are served promptly.
CHUNK_SECONDS = 0.1


class State(NamedTuple):
    params: jax.Array
    local: Local
    scale: jax.Array
    damping: jax.Array
    nu: jax.Array
    radius: jax.Array
    step_length: jax.Array
    velocity: jax.Array
    key: jax.Array
    step_norm: jax.Array
    accepted: jax.Array
    iteration: jax.Array
    nfev: jax.Array
    njev: jax.Array
    status: jax.Array
    budget: jax.Array  # this member's iteration limit
    best_params: jax.Array  # the lowest-loss point seen (returned on Ctrl-C or a timeout)
    best_loss: jax.Array
    origin: jax.Array  # where this member started (after its linear parameters were solved for)


# The per-iteration record the driver reads back: one small vector per member.
RECORD_FIELDS = (
    "iteration",
    "loss",
    "grad_norm",
    "step_norm",
    "damping",
    "radius",
    "step_length",
    "accepted",
    "nfev",
    "njev",
    "status",
)


def _record(state: State):
    values = (
        state.iteration,
        state.local.loss,
        jnp.linalg.norm(state.local.grad),
        state.step_norm,
        state.damping,
        state.radius,
        state.step_length,
        state.accepted,
        state.nfev,
        state.njev,
        state.status,
    )
    return jnp.stack([jnp.asarray(v, dtype=jnp.float64) for v in values])


def project_linear(params, problem, linear, jac_mode: str):
    """The start with its linear parameters (``linear``: 1 where the model is jointly affine in
    the parameter) replaced by their least-squares values for the others as they are: one
    Gauss-Newton step in those parameters, which is exact because the model is affine in
    them (variable projection, Golub & Pereyra 1973). Kept inside the bounds; where the
    residuals or the Jacobian are not finite, the start is returned unchanged."""
    from nlfit import derivatives
    from nlfit.problem import project
    from nlfit.solvers.directions import column_norms

    # The model is affine in the linear parameters, so with them at 0 the residuals are the
    # rest of the model minus the data, and their best values solve J_L v = -r0 outright:
    # no cancellation of a start of 1 against a value of 1e-28.
    at_zero = params * (1.0 - linear)
    r, jac = derivatives.jacobian(at_zero, problem, "fwd" if jac_mode == "fd" else jac_mode)
    # Equilibrated first: far from the data (a start of 1 for data of size 1e-300) the columns
    # and the residuals can be ~1e298, whose squares overflow.
    norms = column_norms(jac) * linear
    norms = jnp.where(norms > 0, norms, 1.0)
    size = column_norms(r[:, None])[0]
    size = jnp.where(size > 0, size, 1.0)
    solution, *_ = jnp.linalg.lstsq(jac * linear[None, :] / norms[None, :], -r / size)
    moved = project(at_zero + solution * size / norms * linear, problem)
    usable = jnp.any(linear > 0) & jnp.all(jnp.isfinite(r)) & jnp.all(jnp.isfinite(jac)) & jnp.all(jnp.isfinite(moved))
    return jnp.where(usable, moved, params)


def initial_state(params, problem, settings: Settings, seed, budget, linear, *, direction: Direction, jac_mode: str, solve_linear: bool = False):
    """The state at the start: the first linearization, scaling, radius and status.

    With ``solve_linear``, ``linear`` (a 0/1 vector) marks parameters to solve for first
    (``project_linear``); all zeros leaves the start as given."""
    params = jnp.asarray(params, dtype=jnp.float64)
    if solve_linear:
        params = jax.lax.cond(jnp.any(linear > 0), lambda: project_linear(params, problem, linear, jac_mode), lambda: params)
    local = direction.linearize(problem, params, jac_mode)
    scale = direction.initial_scale(local)
    scaled_norm = scaled_params(scale, params, problem)
    finite = jnp.isfinite(local.loss) & jnp.all(jnp.isfinite(local.grad))
    status = at_start(finite, local.loss, direction.gradient_measure(local, problem), _tolerances(settings))
    real = partial(jnp.asarray, dtype=jnp.float64)
    count = partial(jnp.asarray, dtype=jnp.int32)
    state = State(
        params=params,
        local=local,
        scale=scale,
        damping=real(INITIAL_DAMPING),
        nu=real(2.0),
        radius=real(jnp.where(scaled_norm > 0, RADIUS_FACTOR * scaled_norm, RADIUS_FACTOR)),
        step_length=real(settings.step),
        velocity=jnp.zeros_like(params),
        key=jax.random.PRNGKey(seed),
        step_norm=real(0.0),
        accepted=jnp.asarray(True),
        iteration=count(0),
        nfev=count(1),
        njev=count(1),
        status=status.astype(jnp.int32),
        budget=count(budget),
        best_params=params,
        best_loss=real(jnp.where(jnp.isfinite(local.loss), local.loss, jnp.inf)),
        origin=params,
    )
    # Every leaf strongly typed, and advance() returns the same types: one compile of a step.
    return jax.tree.map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), state)


def scaled_params(scale, params, problem):
    """||D p|| over the parameters that are estimated, the yardstick of the first trust radius
    and of the xtol tests: a fixed parameter (``--fix``, or the domain a padded Chebyshev
    series carries, ``nlfit.models.padded``) is a constant of the model, not a coordinate of
    the search (as lmfit, which leaves fixed parameters out of what MINPACK sees)."""
    return jnp.linalg.norm(jnp.where(fixed(problem), 0.0, scale * params))


def _tolerances(settings: Settings) -> Tolerances:
    return Tolerances(ftol=settings.ftol, xtol=settings.xtol, gtol=settings.gtol)


def advance(state: State, problem, settings: Settings, direction: Direction, globalization: Globalization, jac_mode: str) -> State:
    """One iteration: propose, accept or reject, re-linearize, test for termination."""
    key, subkey = jax.random.split(state.key)

    def evaluate(trial):  # the trial's decrease, and where one pass gives it too, its linearization
        if direction.fuses_trial(problem):  # a large fit: one pass of fused sums (10^7 rational points: 53 ms against 26 + 41)
            local, actual = direction.linearize_trial(problem, trial, state.params, jac_mode)
            return actual, local
        return decrease(trial, problem, state.local.residuals, state.params), None

    proposal = globalization.propose(direction, problem, state, settings, subkey, evaluate)
    accepted = proposal.accepted
    params = jnp.where(accepted, proposal.trial_params, state.params)
    # The members run under vmap, where a cond on a per-member predicate computes both of its
    # branches and selects: written as the select, XLA fuses it with the linearization.
    trial = proposal.trial_params
    if proposal.trial_local is not None:
        trial_local = proposal.trial_local
    else:
        if not direction.keep_residuals:  # the fused sums of a large fit: the linearization's pass apart from the
            trial = jax.lax.optimization_barrier(trial)  # proposal's (merged, they store a vector of m values: 139 -> 88 ms at 10^7)
        trial_local = direction.linearize(problem, trial, jac_mode)
    local = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), trial_local, state.local)
    scale = direction.update_scale(state.scale, local)
    old_loss = state.local.loss
    actual = proposal.actual
    step_norm = jnp.linalg.norm(proposal.displacement)
    iteration = state.iteration + 1

    # a step that is not finite (from a Hessian or Jacobian with inf or NaN where the loss and
    # gradient are finite) leaves the state where it was, with a NaN radius: nothing can follow
    finite = jnp.isfinite(local.loss) & jnp.all(jnp.isfinite(local.grad)) & jnp.all(jnp.isfinite(proposal.displacement))
    collapsed = proposal.radius <= settings.xtol * scaled_params(scale, params, problem)

    def above_rounding():  # a pass over the data, so only when the region has collapsed
        return local.loss > ROUNDING_LEVEL**2 * jnp.sum((problem.y / (problem.sigma * problem.scale)) ** 2)

    measure = direction.gradient_measure(local, problem)
    steep = jnp.asarray(False)
    if direction.measure_is_cosine:  # ||g||_inf of steepest descent has no scale-free threshold
        steep = (measure > STALL_MEASURE) & jax.lax.cond(collapsed, above_rounding, lambda: jnp.asarray(False))
    measures = Measures(
        finite=finite,
        loss=local.loss,
        old_loss=old_loss,
        gradient_measure=measure,
        accepted=accepted,
        actual=actual,
        predicted=proposal.predicted,
        scaled_step=jnp.linalg.norm(scale * proposal.displacement),
        scaled_params=scaled_params(scale, params, problem),
        collapsed=collapsed,
        steep=steep,
        search_stalled=proposal.stalled,
        iteration=iteration,
        budget=state.budget,
    )
    status = termination(measures, _tolerances(settings))
    better = local.loss < state.best_loss  # NaN never counts as better
    new = State(
        params=params,
        local=local,
        scale=scale,
        damping=proposal.damping,
        nu=proposal.nu,
        radius=proposal.radius,
        step_length=proposal.step_length,
        velocity=proposal.velocity,
        key=key,
        step_norm=jnp.where(accepted, step_norm, 0.0),
        accepted=accepted,
        iteration=iteration,
        nfev=state.nfev + proposal.nfev,
        njev=state.njev + accepted.astype(state.njev.dtype),
        status=status,
        budget=state.budget,
        best_params=jnp.where(better, params, state.best_params),
        best_loss=jnp.where(better, local.loss, state.best_loss),
        origin=state.origin,
    )
    return jax.tree.map(lambda leaf, old: jax.lax.convert_element_type(leaf, old.dtype), new, state)


def _members(function):
    """``function(state, problem)`` for every member: states (G, K, ...), problems (G, ...)."""
    return vmap_groups(jax.vmap(function, in_axes=(0, None)), (0, 0), 1)


def init_members(params, problems, settings: Settings, seeds, budgets, linear, *, direction: Direction, jac_mode: str, solve_linear: bool):
    """Initial states of G x K members: params (G, K, n), seeds (G, K), budgets (K,), linear (K, n)."""

    def one(start, problem, seed, budget, mask):
        return initial_state(start, problem, settings, seed, budget, mask, direction=direction, jac_mode=jac_mode, solve_linear=solve_linear)

    per_group = jax.vmap(one, in_axes=(0, None, 0, 0, 0))
    states = vmap_groups(per_group, (0, 0, 0, None, None), 1)(params, problems, seeds, budgets, linear)
    return states, _members(lambda state, problem: _record(state))(states, problems)


def run_chunk(states: State, problems, settings: Settings, limit, stop_at, *, direction, globalization, jac_mode, record: bool):
    """Up to ``limit`` (<= CHUNK) iterations of every running member; stops early when every
    member has stopped, or when at most ``stop_at[0]`` groups or at most ``stop_at[1]`` starts
    have a running member (``Compacted`` sets the groups' count, where its working set can
    shrink; 0 where nothing can shrink, and 0 starts in every use now: ``Turns`` does not
    shrink). Returns (states, records (CHUNK, G, K, fields) or None, iterations run)."""

    def one(state, problem):
        new = advance(state, problem, settings, direction, globalization, jac_mode)
        running = state.status == int(Status.RUNNING)
        return jax.tree.map(lambda a, b: jnp.where(running, a, b), new, state)

    step_all = _members(one)
    shape = states.status.shape
    if shape == (1, 1) and not direction.keep_residuals:  # one large fit: no vmap (over a batch of one, XLA fused its passes worse)

        def step_all(states, problems):
            # tied to the state, the data are not loop invariants: XLA would hoist what the
            # model computes from x alone out of the loop, writing and re-reading vectors of m values
            problems, states = jax.lax.optimization_barrier((problems, states))
            alone = one(jax.tree.map(lambda leaf: leaf[0, 0], states), jax.tree.map(lambda leaf: leaf[0], problems))
            return jax.tree.map(lambda leaf: leaf[None, None], alone)

    records = jnp.zeros((CHUNK, *shape, len(RECORD_FIELDS))) if record else jnp.zeros((0,))

    def cond(carry):
        count, current, _ = carry
        running = current.status == int(Status.RUNNING)
        groups = jnp.sum(jnp.any(running, axis=1))
        starts = jnp.sum(jnp.any(running, axis=0))
        return (count < limit) & (groups > 0) & (groups > stop_at[0]) & (starts > stop_at[1])

    def body(carry):
        count, current, buffer = carry
        current = step_all(current, problems)
        if record:
            buffer = buffer.at[count].set(_members(lambda state, problem: _record(state))(current, problems))
        return count + 1, current, buffer

    count, states, records = jax.lax.while_loop(cond, body, (jnp.asarray(0), states, records))
    return states, (records if record else None), count


def run_turns(states: State, turns, own, problems, settings: Settings, limit, *, direction, globalization, jac_mode, record: bool):
    """``run_chunk`` on the starts of one problem (G = 1) in turns (``Turns``): ``turns`` (T, W)
    are distinct start indices per turn, ``own`` (T, W) the ones each turn advances; a turn's
    other starts are frozen in it (stopped for its loop) and not written back, and a turn that
    owns none runs no iteration. Returns (states, records (T, CHUNK, 1, W, fields) or None,
    each turn's iterations (T,))."""

    def one_turn(full, turn):
        index, mine = turn
        work = jax.tree.map(lambda leaf: jnp.take(leaf, index, axis=1), full)
        frozen = work._replace(status=jnp.where(mine[None], work.status, int(Status.MAX_ITER)))
        options = {"direction": direction, "globalization": globalization, "jac_mode": jac_mode, "record": record}
        done, records, count = run_chunk(frozen, problems, settings, limit, NO_STOP, **options)

        def put(leaf, new, old):
            keep = mine.reshape((1, -1) + (1,) * (jnp.ndim(new) - 2))
            return leaf.at[:, index].set(jnp.where(keep, new, old), unique_indices=True)

        return jax.tree.map(put, full, done, work), (records, count)

    states, (records, counts) = jax.lax.scan(one_turn, states, (turns, own))
    return states, (records if record else None), counts


# Groups below which a batch is not shrunk further: a smaller shape saves less than its compile.
SMALLEST_COMPACTED = 64
# The factor by which a working set shrinks (``Compacted``): a quarter, not a half. Each size is
# a compiled loop that a new process loads (and a new model compiles) once; halving gave a
# block of 2,621 groups six sizes down to 64, a quarter gives three. Measured on 2 cores:
# 100,000 rational groups with an empty compile cache, 31.6-33.5 s with halves, 18.2-22.8 s
# with quarters (48 stored programs, 24); a helper process's first block waited 1.2 s for
# its 25 loads with halves. The solve itself did not get slower: benchmarks/batch_stages.py
# (20,000 groups, one core) gave 22.3 and 20.0 us a rational fit against 23.1 and 22.7, and
# 22.1 and 22.4 us a 2D Gaussian against 22.1 and 21.8: the groups still running after the
# first iterations are few, so a set a quarter full costs about what a half-full one does.
# A block below COMPACTION x SMALLEST_COMPACTED groups (256) runs whole: halves shrank one of
# 128-255 groups once, to 64-127.
COMPACTION = 4
# The starts of a single fit (their iterations differ most: rational on 200 points, 5 to 108)
# run in working sets of one width, a quarter of the starts and at least TURN_WIDTH
# (``Turns``). An iteration's cost grows with the width (rational, 200 points, 16 iterations,
# the loop alone: 6.7-11 ms at 32 starts, 2.6-3.5 ms at 8, 1.0-1.1 ms at 2), so the starts
# taking turns in sets of 8 cost about what they cost together, and the sets of the running
# ones stop paying for the starts that stopped. One width is one compiled loop: gathering the
# running starts into ever smaller sets (32, 8, 2) compiled three, and on a machine that had
# not seen the model the compiles cost far more than the iterations they saved (a grouped
# test fitting 3 single groups: 46 s with three sizes, 20 s with one).
TURN_WIDTH = 8
STARTS_FACTOR = 4
# After this many iterations of every start, only the most promising of those still running go
# on (``Turns._screen``): the given start, and the others of lowest loss that fill a quarter of
# the starts. The others stop as if their (smaller) iteration budget had
# run out, so that one of them with the lowest loss of all still goes on to the full budget
# (``nlfit.fitting._run``). Rational on 200 points: a fifth of the 32 starts wander towards a
# pole for the whole budget (200 iterations), at losses 30x the best, and kept every start
# running for 108 iterations.
SCREEN_AFTER = 17
NO_STOP = np.zeros(2, dtype=np.int32)  # ``stop_at`` of a loop that runs its members to the end


def turn_width(starts: int) -> int:
    """The width of the working sets of a single fit's ``starts``: a quarter of them, at least
    TURN_WIDTH (all of them below that: no turns)."""
    return min(starts, max(starts // STARTS_FACTOR, TURN_WIDTH))


class Compacted:
    """``run_chunk`` on the groups of a batch that still run: when at most a quarter
    (1/COMPACTION) of the current working set is running, the running ones (padded with
    stopped ones) are gathered into a working set a quarter the size (or smaller by further
    quarters, not below SMALLEST_COMPACTED), so that the iterations
    of the slowest groups no longer pay for the whole batch. The loop stops itself at the first
    iteration where the set can shrink (``run_chunk``'s ``stop_at``). One compiled shape per
    size, shared by every block of a batch. The state handed in and returned is always the
    full one (G, K, ...): the working set is scattered back after each chunk, so the driver
    sees every group as it is.

    A group computes the same steps in a set of any size, but XLA vectorizes each size in
    its own way, so the last bits may differ from an uncompacted run (an ill-conditioned
    problem amplifies them: MGH17's parameters moved by 3e-8 relative). The sizes depend only
    on the groups' statuses, so the same input gives the same bits every time, in the worker
    and in-process."""

    def __init__(self, chunk, problems, size: int, smallest: int = SMALLEST_COMPACTED):
        self.chunk, self.problems, self.size, self.smallest = chunk, problems, size, smallest
        self.index = None  # the working set's groups; None while it is all of them
        self.work = self.full = None
        self.sub_problems = problems

    def _shrink(self, statuses: np.ndarray) -> None:
        running = np.any(statuses == Status.RUNNING, axis=1)
        size = self.size
        while size // COMPACTION >= max(int(np.count_nonzero(running)), self.smallest):
            size //= COMPACTION
        if size == self.size:
            return
        live, stopped = np.flatnonzero(running), np.flatnonzero(~running)
        self.size, self.index = size, np.sort(np.concatenate([live, stopped[: size - len(live)]]))
        self.work = None
        self.sub_problems = _gather(self.problems, jax.device_put(self.index), 0)

    def __call__(self, state: State, problems, settings, limit, **options):
        self._shrink(np.asarray(state.status))
        stop_at = NO_STOP.copy()
        if self.size // COMPACTION >= self.smallest:  # the loop ends where _shrink can act
            stop_at[0] = self.size // COMPACTION
        if self.index is None:
            return self.chunk(state, problems, settings, limit, stop_at, **options)
        index = jax.device_put(self.index)
        if self.work is None or state is not self.full:
            self.work = _gather(state, index, 0)
        self.work, records, count = self.chunk(self.work, self.sub_problems, settings, limit, stop_at, **options)
        self.full = _scatter(state, index, self.work, 0)
        return self.full, records, count


class Turns:
    """The starts of a single fit (G = 1) in working sets of one ``width``: while more starts
    run than one set holds, the running ones take turns, set after set, each advanced by the
    same ``limit`` iterations (a set whose starts all stop ends early); once at most ``width``
    run, they go on in one set. The turns of a chunk are one call of one compiled program
    (``run_turns``: its number of turns, ceil(K / width), is fixed, and a turn with nothing to
    run runs no iteration), so a single fit compiles one loop whatever its starts do (TURN_WIDTH).
    The records of the starts outside a turn, or of a turn that ended early, repeat their last
    record, as a stopped start's do in one loop (``first_records``: every start's record at
    the start).

    After ``screen_after`` iterations the running starts are screened (``_screen``).

    A start computes the same steps in a set of any composition, but XLA may vectorize a set
    of 8 otherwise than one of 32, so the last bits may differ from the starts run together.
    The sets depend only on the starts' statuses, so the same input gives the same bits every
    time, in the worker and in-process."""

    def __init__(self, chunk, problems, starts: int, width: int, first_records=None, screen_after: int | None = None):
        self.chunk, self.problems, self.starts, self.width = chunk, problems, starts, width
        self.screen_after, self.done = screen_after, 0  # iterations before the screening; run so far
        self.last = None if first_records is None else np.asarray(first_records)

    def _screen(self, state: State) -> State:
        """The starts after ``screen_after`` iterations: the given one (start 0) and the
        running ones of lowest loss (the earlier start on a tie) that fill a quarter
        (1/STARTS_FACTOR) of all the starts go on; the other running ones stop (MAX_ITER,
        their budget the iterations run)."""
        status = np.asarray(state.status)
        running = status == Status.RUNNING
        others = running.copy()
        others[:, 0] = False
        keep = self.starts // STARTS_FACTOR - int(running[0, 0])
        if keep < 1 or np.count_nonzero(others) <= keep:
            return state
        loss = np.where(others, np.asarray(state.local.loss), np.inf)[0]
        # running starts first (a stopped one never takes a place), then by loss, then by index
        order = np.lexsort((np.arange(loss.size), np.where(np.isnan(loss), np.inf, loss), ~others[0]))
        stop = others.copy()
        stop[0, order[:keep]] = False
        stop = jax.device_put(stop)
        return state._replace(status=jnp.where(stop, int(Status.MAX_ITER), state.status), budget=jnp.where(stop, state.iteration, state.budget))

    def sets(self, statuses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The turns (T, width) of distinct starts, running ones first and in order, and which
        of them each turn advances (T, width): its share of the running starts."""
        turns = -(-self.starts // self.width)
        running = np.flatnonzero(statuses[0] == Status.RUNNING)
        index = np.empty((turns, self.width), dtype=np.int32)
        own = np.zeros((turns, self.width), dtype=bool)
        for t in range(turns):
            mine = running[t * self.width : (t + 1) * self.width]
            index[t] = np.concatenate([mine, np.setdiff1d(np.arange(self.starts), mine)[: self.width - len(mine)]])
            own[t, : len(mine)] = True
        return index, own

    def __call__(self, state: State, problems, settings, limit, **options):
        if self.screen_after is not None and self.done >= self.screen_after:
            state, self.screen_after = self._screen(state), None
        if self.screen_after is not None:
            limit = min(limit, self.screen_after - self.done)
        index, own = self.sets(np.asarray(state.status))
        state, records, counts = self.chunk(state, jax.device_put(index), jax.device_put(own), problems, settings, limit)
        counts = np.asarray(counts)
        count = int(counts.max())
        self.done += count
        return state, self._records(records, index, own, counts, count), count

    def _records(self, records, index, own, counts, count: int) -> np.ndarray | None:
        """The turns' records of every start (count, 1, K, fields) on the host."""
        if records is None or self.last is None:
            return None
        records = np.asarray(records)
        rows = np.repeat(self.last[None], count, axis=0)
        for t, ran in enumerate(counts.tolist()):  # a turn that ended early repeats its last record
            mine = index[t][own[t]]
            if ran and len(mine):
                rows[:ran, :, mine] = records[t, :ran][:, :, own[t]]
                rows[ran:, :, mine] = records[t, ran - 1][None][:, :, own[t]]
        if count:
            self.last = rows[-1]
        return rows


@program(static_argnames="axis")
def _gather(tree, index, axis: int):
    """The members ``index`` along ``axis`` of every leaf that has that axis."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, index, axis=axis) if jnp.ndim(leaf) > axis else leaf, tree)


@program(static_argnames="axis")
def _scatter(tree, index, part, axis: int):
    """``tree`` with the members ``index`` along ``axis`` replaced by ``part``."""

    def put(leaf, new):
        where = (slice(None),) * axis + (index,)
        return leaf.at[where].set(new, unique_indices=True)

    return jax.tree.map(put, tree, part)


# A batch is spread over the devices from this many residuals (members x rows) on. Measured
# (rational, 100 points a group, 2 cores shared with other work, so noisy): 128-512 groups
# ran 0.6-0.8x as fast spread (a few ms to split and gather, two dispatches a chunk),
# 1024-2500 groups 1.2-1.65x.
SPREAD_ELEMENTS = 1 << 17


@dataclass(frozen=True)
class Spread:
    """A batch of members spread over ``devices``, one equal share each along the member
    ``axis`` (0 groups, 1 starts) of real ``size``, padded with copies of its last member
    (whose results are dropped). Each share is advanced by the same compiled ``run_chunk`` as
    a one-device batch, dispatched to its device (dispatch does not wait, so the devices run
    together): one loop per device, no collective, and each share's arithmetic is that of a
    one-device solve of the same members. (``shard_map`` over a device mesh runs the same
    loops, but XLA's partitioned compile rounds differently: 3 of 64 Gaussian fits changed
    status between ftol and xtol.)"""

    devices: tuple
    axis: int
    size: int

    @property
    def share(self) -> int:
        return -(-self.size // len(self.devices))

    def split(self, tree, axis: int | None = None) -> list:
        """``tree``'s leaves padded and cut into one share per device, each placed there;
        ``axis`` None: the whole tree on every device (the problems when starts are spread)."""

        def cut(leaf, d):  # on the host: one transfer per device, not an operation per leaf
            leaf = np.asarray(leaf)
            if axis is None or leaf.ndim <= axis:
                return leaf
            index = np.minimum(np.arange(d * self.share, (d + 1) * self.share), self.size - 1)
            return np.take(leaf, index, axis=axis)

        return [jax.device_put(jax.tree.map(lambda leaf, d=d: cut(leaf, d), tree), device) for d, device in enumerate(self.devices)]

    def join(self, values: list, axis_offset: int = 0) -> np.ndarray:
        """The real members of per-device host arrays (``axis_offset`` leading axes first)."""
        joined = np.concatenate([np.asarray(value) for value in values], axis=self.axis + axis_offset)
        return np.take(joined, np.arange(self.size), axis=self.axis + axis_offset)

    def gather(self, states: list) -> State:
        """One state of the real members, on the default device (as one device leaves it)."""
        device = jax.devices()[0]
        return jax.tree.map(lambda *leaves: jax.device_put(self.join(leaves), device), *states)


def spread_for(shape: tuple[int, int], rows: int) -> Spread | None:
    """How to spread G x K members of ``rows`` residuals each, or None for one device: too
    few residuals to pay (SPREAD_ELEMENTS), one usable device, or fewer groups and starts
    than devices. Groups are spread when there are enough of them, else the starts."""
    from nlfit._jax import solve_devices

    devices = solve_devices()
    groups, starts = shape
    if len(devices) < 2 or groups * starts * rows < SPREAD_ELEMENTS:
        return None
    axis = 0 if groups >= len(devices) else 1 if starts >= len(devices) else None
    return None if axis is None else Spread(tuple(devices), axis, shape[axis])


def _chunk(
    problems, state: State, first_records, settings: Settings, direction, globalization, jac_mode, record: bool, spread: Spread | None, screen: bool = True
):
    """``chunk(state, limit) -> (state, statuses, records on the host or None, iterations)``:
    one compiled call of ``run_chunk``, or one per device of ``spread`` (``state`` is then the
    list of shares; ``problems`` are placed once). A share whose loop ended early repeats its
    last record up to the others' count, as its stopped members would under one loop."""
    settings = Settings(*(jax.device_put(v) for v in settings))
    elements = int(np.prod(np.shape(problems.y))) * int(np.shape(state.status)[1])
    # The loop runs its chunk many times: XLA's full optimization pays for itself (2D
    # Gaussians, 5000 x 25 points: 5x faster iterations; rational, 200 points, 32 starts: 2.5x).
    function = partial(compiled(run_chunk, ("direction", "globalization", "jac_mode", "record"), elements, optimize=True),
                       direction=direction, globalization=globalization, jac_mode=jac_mode, record=record)  # fmt: skip

    starts = int(np.shape(state.status)[1])

    def to_the_end(state, problems_here, settings, limit):  # a working set that does not shrink
        return function(state, problems_here, settings, limit, NO_STOP)

    def compact(problems_here, whole: bool = True):  # finished members dropped from the working set
        size = int(np.shape(problems_here.y)[0])
        if not record and size >= COMPACTION * SMALLEST_COMPACTED:  # the groups of a batch large enough to shrink once
            return Compacted(function, problems_here, size)
        width = turn_width(starts)
        screen_after = SCREEN_AFTER if screen and starts // STARTS_FACTOR >= 2 else None
        if whole and size == 1 and (width < starts or screen_after is not None):  # the starts of a single fit
            turns = partial(compiled(run_turns, ("direction", "globalization", "jac_mode", "record"), elements, optimize=True),
                            direction=direction, globalization=globalization, jac_mode=jac_mode, record=record)  # fmt: skip
            return Turns(turns, problems_here, starts, width, first_records if record else None, screen_after)
        return to_the_end

    if spread is None:
        problems = jax.device_put(problems)  # once: a call with host arrays copies them in every time (10^7 rows: 240 MB a chunk)
        runner = compact(problems)

        def chunk(state, limit):
            state, records, count = runner(state, problems, settings, limit)
            count = int(count)
            return state, np.asarray(state.status), (np.asarray(records)[:count] if record else None), count

        return chunk
    shares = spread.split(problems, 0 if spread.axis == 0 else None)
    runners = [compact(share, whole=False) if spread.axis == 0 else to_the_end for share in shares]
    last = [None] * len(shares)  # each share's latest record (records only)

    def chunk(states, limit):
        done = [run(state, share, settings, limit) for run, state, share in zip(runners, states, shares, strict=True)]
        counts = [int(count) for _, _, count in done]
        count, states = max(counts), [state for state, _, _ in done]
        records = None
        if record:
            filled = []
            for d, (own, (_, rows, _)) in enumerate(zip(counts, done, strict=True)):
                rows = np.asarray(rows)[:own]
                last[d] = rows[-1] if own else last[d]
                filled.append(np.concatenate([rows, np.repeat(last[d][None], count - own, axis=0)]) if own < count else rows)
            records = spread.join(filled, 1)
        return states, spread.join([state.status for state in states]), records, count

    if record:  # the members' records at the start
        last[:] = [np.asarray(rows) for rows in spread.split(first_records, spread.axis)]
    return chunk


@dataclass
class MembersOutput:
    """The members at the end: ``state`` leaves (G, K, ...), the reported ``state`` (each
    member's best point where it was interrupted or timed out), ``statuses`` (G, K), and the
    ``records`` of every iteration (iterations + 1, G, K, fields) when they were kept."""

    state: State
    statuses: np.ndarray
    records: np.ndarray | None
    seconds: float


HISTORY_ROWS = 1000  # a history keeps at most about this many rows (memory and JSON stay bounded)
HISTORY_HEAD = 100  # ... with every one of the first iterations, where the loss falls fastest


def thinned(iterations: np.ndarray, limit: int = HISTORY_ROWS) -> np.ndarray:
    """Which rows of a history to keep (a boolean mask), by their iteration numbers: all of
    the first HISTORY_HEAD, then every s-th iteration, s the smallest power of two that keeps
    at most ``limit`` rows, and always the last row. Evenly spaced rows keep the shape of
    the loss curve on a linear and on a log axis."""
    iterations = np.asarray(iterations)
    keep = np.ones(iterations.shape, dtype=bool)
    if iterations.size == 0:
        return keep
    # The stride depends on the iteration numbers only (not on how many rows are at hand), so
    # thinning as the history grows and thinning at the end pick the same rows.
    span = max(int(iterations.max()) - HISTORY_HEAD, 1)
    stride = 1
    while HISTORY_HEAD + span // stride + 2 > limit:  # the head, the strided rows, the last
        stride *= 2
    if stride == 1:
        return keep
    keep = (iterations < HISTORY_HEAD) | ((iterations - HISTORY_HEAD) % stride == 0)
    keep[-1] = True
    return keep


def history_rows(records: np.ndarray, direction: Direction, globalization: Globalization, scale: float = 1.0) -> list[dict]:
    """One member's records (iterations + 1, fields) as the history of the JSON contract, in
    the user's units (the solvers see residuals divided by ``scale``: the loss and the
    gradient scale with its square, the trust radius with it)."""
    rows = []
    squared = scale * scale
    for record in records:
        row = dict(zip(RECORD_FIELDS, record.tolist(), strict=True))
        rows.append(
            {
                "iteration": int(row["iteration"]),
                "loss": row["loss"] * squared,
                "grad_norm": row["grad_norm"] * squared,
                "step_norm": row["step_norm"],
                "damping": row["damping"] if direction.damped else None,
                "radius": row["radius"] * scale if globalization.size_field == "radius" else None,
                "step_length": row["step_length"] if globalization.size_field == "step_length" else None,
                "accepted": bool(row["accepted"]),
                "nfev": int(row["nfev"]),
                "njev": int(row["njev"]),
            }
        )
    return rows


def start_members(problems, params0, budgets, linear, direction: Direction, jac_mode: str, settings: Settings, seed: int = 0):
    """Initial states (G, K) and their records; ``params0`` (G, K, n), ``budgets`` (K,) and
    ``linear`` (K, n) (see ``initial_state``)."""
    settings = Settings(*(jax.device_put(v) for v in settings))
    groups, starts = params0.shape[:2]
    seeds = (np.arange(groups * starts, dtype=np.uint32) + np.uint32(seed)).reshape(groups, starts)
    elements = int(np.prod(np.shape(problems.y))) * starts
    return compiled(init_members, ("direction", "jac_mode", "solve_linear"), elements, optimize=problems.tape is not None)(
        jnp.asarray(params0, dtype=jnp.float64),
        problems,
        settings,
        seeds,
        np.asarray(budgets, dtype=np.int32),
        jnp.asarray(linear, dtype=jnp.float64),
        direction=direction,
        jac_mode=jac_mode,
        solve_linear=bool(np.any(np.asarray(linear) > 0)),
    )


def solve_members(
    problems,
    state: State,
    first_records,
    direction: Direction,
    globalization: Globalization,
    jac_mode: str,
    settings: Settings,
    timeout: float | None = None,
    started: float | None = None,
    record: bool = True,
    on_chunk: Callable[[State, np.ndarray | None], None] | None = None,
    screen: bool = True,
) -> MembersOutput:
    """Run every member from ``state`` until all have stopped, the time limit (seconds since
    ``started``) or Ctrl-C. A member still running then gets TIMEOUT or INTERRUPTED and is
    reported at its best point; the others keep their own status. ``on_chunk(state, records)``
    is called after each compiled chunk (progress). ``screen``: the starts of a single fit are
    screened after SCREEN_AFTER iterations (not when the winner goes on alone)."""
    started = time.perf_counter() if started is None else started
    kept = [np.asarray(first_records)[None]] if record else []
    statuses = np.asarray(state.status)
    stop = None
    limit = 1  # the first chunk measures the cost of an iteration
    spread = spread_for(statuses.shape, int(np.shape(problems.y)[-1]))
    chunk = _chunk(problems, state, first_records, settings, direction, globalization, jac_mode, record, spread, screen)
    state = spread.split(state, spread.axis) if spread is not None else state  # one share per device
    try:
        while np.any(statuses == Status.RUNNING):
            signals.check()  # a signal that a gc callback swallowed still stops the solve
            if timeout is not None and time.perf_counter() - started > timeout:
                stop = Status.TIMEOUT
                break
            began = time.perf_counter()
            state, statuses, records, count = chunk(state, limit)
            if record:
                kept.append(records)
                if sum(len(k) for k in kept) > 2 * HISTORY_ROWS:  # bounded memory: thin as it grows
                    rows = np.concatenate(kept, axis=0)
                    kept = [rows[thinned(rows[..., 0].max(axis=tuple(range(1, rows.ndim - 1))))]]
            if on_chunk is not None:  # a spread batch: the first share, with every real member's status
                on_chunk(state if spread is None else state[0]._replace(status=statuses), kept[-1] if record else None)
            per_iteration = (time.perf_counter() - began) / max(count, 1)
            limit = int(max(1, min(CHUNK, CHUNK_SECONDS // max(per_iteration, 1e-9))))
    except (KeyboardInterrupt, signals.Interrupted):
        signals.consume()
        stop = Status.INTERRUPTED
    state = spread.gather(state) if spread is not None else state
    if stop is not None:
        running = statuses == Status.RUNNING
        statuses = np.where(running, int(stop), statuses)
        state = state._replace(params=jnp.where(jnp.asarray(running)[..., None], state.best_params, state.params))
    return MembersOutput(
        state=state,
        statuses=statuses,
        records=np.concatenate(kept, axis=0) if record else None,
        seconds=time.perf_counter() - started,
    )
