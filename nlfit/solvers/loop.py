"""The one iteration loop every method x globalization runs.

``step(state) -> state`` is pure JAX and jitted once per (direction, globalization,
Jacobian mode, problem shape): it asks the globalization for a proposal, accepts or
rejects it, re-linearizes at an accepted point, and applies the termination tests, so a
batch of problems can run the same step under ``vmap`` with finished members frozen.
``solve`` drives it from Python: it records the history, honours ``max_iter`` and a time
limit, reports progress, and turns Ctrl-C into an "interrupted" result at the best point.

Termination tests (scipy.optimize.least_squares / MINPACK meanings):

gtol
    gradient measure <= gtol: for Jacobian methods MINPACK's
    max_j |J_j^T r| / (||J_j|| ||r||) (the cosine between r and each column of J,
    scale-invariant); for steepest descent ||g||_inf (it has no Jacobian). A zero loss
    counts as gtol.
ftol
    |actual decrease| <= ftol * loss and predicted decrease <= ftol * loss (MINPACK's test,
    checked on every trial step).
xtol
    an accepted step with ||step|| <= xtol (xtol + ||params||), or a trust region whose
    radius fell to xtol * ||D params|| (MINPACK).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np

from nlfit._jax import jax, jnp
from nlfit.solvers.directions import Direction, Local
from nlfit.solvers.globalization import Globalization
from nlfit.solvers.status import Status

INITIAL_DAMPING = 1e-3
# Initial trust-region radius = RADIUS_FACTOR * ||D p0|| (RADIUS_FACTOR when p0 = 0). MINPACK
# uses 100; scipy's trf uses 1. Measured on the 27 NIST StRD problems (both starts), 1 solves
# more of them (BoxBOD, MGH09 and MGH10 from start 1 overshoot with 100) in fewer evaluations.
RADIUS_FACTOR = 1.0
# Largest gradient cosine max_j |J_j^T r| / (||J_j|| ||r||) at which a collapsed trust region
# still counts as convergence (at minima it is round-off, below 1e-8 on all NIST problems).
STALL_MEASURE = 1e-4


class Settings(NamedTuple):
    """Numbers that change no compiled code (traced, so editing them never recompiles)."""

    ftol: float | jax.Array = 1e-15
    xtol: float | jax.Array = 1e-15
    gtol: float | jax.Array = 1e-15
    max_iter: int | jax.Array = 2000
    step: float | jax.Array = 1e-3
    momentum: float | jax.Array = 0.0


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


# The per-iteration record the driver reads back: one small vector, one transfer.
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


def initial_state(params, problem, settings: Settings, seed, *, direction: Direction, jac_mode: str):
    """The state at the start: the first linearization, scaling, radius and status."""
    params = jnp.asarray(params, dtype=jnp.float64)
    local = direction.linearize(problem, params, jac_mode)
    scale = direction.initial_scale(local)
    scaled_norm = jnp.linalg.norm(scale * params)
    finite = jnp.isfinite(local.loss) & jnp.all(jnp.isfinite(local.grad))
    converged = finite & ((local.loss == 0) | (direction.gradient_measure(local) <= settings.gtol))
    status = jnp.where(~finite, int(Status.NONFINITE), jnp.where(converged, int(Status.GTOL), int(Status.RUNNING)))
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
    )
    # Every leaf strongly typed, and advance() returns the same types: one compile of step.
    return jax.tree.map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), state)


@partial(jax.jit, static_argnames=("direction", "jac_mode"))
def init_state(params, problem, settings: Settings, seed, *, direction: Direction, jac_mode: str):
    state = initial_state(params, problem, settings, seed, direction=direction, jac_mode=jac_mode)
    return state, _record(state)


def advance(state: State, problem, settings: Settings, direction: Direction, globalization: Globalization, jac_mode: str) -> State:
    """One iteration: propose, accept or reject, re-linearize, test for termination."""
    key, subkey = jax.random.split(state.key)
    proposal = globalization.propose(direction, problem, state, settings, subkey)
    accepted = proposal.accepted
    params = jnp.where(accepted, proposal.trial_params, state.params)
    local = jax.lax.cond(
        accepted,
        lambda: direction.linearize(problem, proposal.trial_params, jac_mode),
        lambda: state.local,
    )
    scale = direction.update_scale(state.scale, local)
    old_loss = state.local.loss
    actual = proposal.actual
    step_norm = jnp.linalg.norm(proposal.step)
    iteration = state.iteration + 1

    finite = jnp.isfinite(local.loss) & jnp.all(jnp.isfinite(local.grad))
    gtol_met = accepted & ((local.loss == 0) | (direction.gradient_measure(local) <= settings.gtol))
    ftol_met = jnp.isfinite(actual) & (jnp.abs(actual) <= settings.ftol * old_loss) & (proposal.predicted <= settings.ftol * old_loss)
    # A trust region that collapsed is MINPACK's xtol test; it counts as convergence only
    # where the gradient is small too (cosine measure <= STALL_MEASURE) or the residuals are
    # at the rounding level of the data (there the cosine is noise), else the run is stalled:
    # no step of any size lowers the loss although the gradient says it should.
    collapsed = proposal.radius <= settings.xtol * jnp.linalg.norm(scale * params)

    def above_rounding():  # a pass over the data, so only when the region has collapsed
        return local.loss > (1e3 * jnp.finfo(jnp.float64).eps) ** 2 * jnp.sum((problem.y / problem.sigma) ** 2)

    steep = jnp.asarray(False)
    if direction.name != "gd":
        steep = (direction.gradient_measure(local) > STALL_MEASURE) & jax.lax.cond(collapsed, above_rounding, lambda: jnp.asarray(False))
    xtol_met = (accepted & (step_norm <= settings.xtol * (settings.xtol + jnp.linalg.norm(params)))) | (collapsed & ~steep)
    stalled = proposal.stalled | (collapsed & steep)
    status = jnp.select(
        [~finite, gtol_met, ftol_met, xtol_met, stalled, iteration >= settings.max_iter],
        [
            int(Status.NONFINITE),
            int(Status.GTOL),
            int(Status.FTOL),
            int(Status.XTOL),
            int(Status.STALLED),
            int(Status.MAX_ITER),
        ],
        default=int(Status.RUNNING),
    ).astype(jnp.int32)
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
    )
    return jax.tree.map(lambda leaf, old: jax.lax.convert_element_type(leaf, old.dtype), new, state)


@partial(jax.jit, static_argnames=("direction", "globalization", "jac_mode"))
def step(state: State, problem, settings: Settings, *, direction, globalization, jac_mode):
    new = advance(state, problem, settings, direction, globalization, jac_mode)
    return new, _record(new)


@dataclass
class SolveOutput:
    state: State
    status: Status
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _history_row(record: np.ndarray, direction: Direction, globalization: Globalization) -> dict:
    row = dict(zip(RECORD_FIELDS, record.tolist(), strict=True))
    out = {
        "iteration": int(row["iteration"]),
        "loss": row["loss"],
        "grad_norm": row["grad_norm"],
        "step_norm": row["step_norm"],
        "damping": row["damping"] if direction.damped else None,
        "radius": row["radius"] if globalization.name == "trust-region" else None,
        "step_length": row["step_length"] if globalization.name != "trust-region" else None,
        "accepted": bool(row["accepted"]),
        "nfev": int(row["nfev"]),
        "njev": int(row["njev"]),
    }
    return out


def solve(
    problem,
    params0,
    direction: Direction,
    globalization: Globalization,
    jac_mode: str,
    settings: Settings,
    seed: int = 0,
    timeout: float | None = None,
    on_iteration: Callable[[dict], None] | None = None,
) -> SolveOutput:
    """Iterate ``step`` until a termination test, ``max_iter``, the time limit or Ctrl-C.

    On Ctrl-C or the time limit the result is the best point seen (lowest loss), which for
    the monotone methods is the last one and for fixed-step gradient descent may be earlier.
    """
    started = time.perf_counter()
    settings = Settings(*(jnp.asarray(v) for v in settings))
    state, record = init_state(params0, problem, settings, seed, direction=direction, jac_mode=jac_mode)
    record = np.asarray(record)
    history = [_history_row(record, direction, globalization)]
    status = Status(int(record[-1]))
    best, best_loss = state, history[-1]["loss"]
    try:
        while status == Status.RUNNING:
            if timeout is not None and time.perf_counter() - started > timeout:
                status = Status.TIMEOUT
                break
            state, record = step(state, problem, settings, direction=direction, globalization=globalization, jac_mode=jac_mode)
            record = np.asarray(record)
            history.append(_history_row(record, direction, globalization))
            status = Status(int(record[-1]))
            if history[-1]["loss"] <= best_loss:  # NaN never counts as better
                best, best_loss = state, history[-1]["loss"]
            if on_iteration is not None:
                on_iteration(history[-1])
    except KeyboardInterrupt:
        status = Status.INTERRUPTED
    if status in (Status.INTERRUPTED, Status.TIMEOUT):
        state = best
    return SolveOutput(state=state, status=status, history=history, seconds=time.perf_counter() - started)


# ---------------------------------------------------------------------------------------
# Batches: the same step under vmap, finished members frozen, until every member stopped.


@partial(jax.jit, static_argnames=("direction", "jac_mode"))
def init_batch(params, problems, settings: Settings, seeds, *, direction: Direction, jac_mode: str):
    return jax.vmap(lambda p, problem, seed: initial_state(p, problem, settings, seed, direction=direction, jac_mode=jac_mode))(params, problems, seeds)


@partial(jax.jit, static_argnames=("direction", "globalization", "jac_mode"))
def step_batch(states: State, problems, settings: Settings, *, direction, globalization, jac_mode):
    """One iteration for every member still running; the others are returned unchanged."""

    def one(state, problem):
        new = advance(state, problem, settings, direction, globalization, jac_mode)
        running = state.status == int(Status.RUNNING)
        return jax.tree.map(lambda a, b: jnp.where(running, a, b), new, state)

    states = jax.vmap(one)(states, problems)
    return states, states.status


def solve_batch(
    problems,
    params0,
    direction: Direction,
    globalization: Globalization,
    jac_mode: str,
    settings: Settings,
    seed: int = 0,
    timeout: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
):
    """Run a batch (leading axis of ``problems`` and ``params0``) to the end. Returns
    (state, statuses): a member that is still running when time runs out or Ctrl-C comes
    gets TIMEOUT or INTERRUPTED; the others keep their own status."""
    started = time.perf_counter()
    settings = Settings(*(jnp.asarray(v) for v in settings))
    members = params0.shape[0]
    seeds = jnp.arange(members, dtype=jnp.uint32) + jnp.uint32(seed)
    state = init_batch(jnp.asarray(params0, dtype=jnp.float64), problems, settings, seeds, direction=direction, jac_mode=jac_mode)
    statuses = np.asarray(state.status)
    stop = None
    try:
        while np.any(statuses == Status.RUNNING):
            if on_progress is not None:
                on_progress(int(np.count_nonzero(statuses != Status.RUNNING)), members)
            if timeout is not None and time.perf_counter() - started > timeout:
                stop = Status.TIMEOUT
                break
            state, statuses = step_batch(state, problems, settings, direction=direction, globalization=globalization, jac_mode=jac_mode)
            statuses = np.asarray(statuses)
    except KeyboardInterrupt:
        stop = Status.INTERRUPTED
    statuses = np.where(statuses == Status.RUNNING, int(stop or Status.RUNNING), statuses)
    if on_progress is not None:
        on_progress(members, members)
    return state, statuses
