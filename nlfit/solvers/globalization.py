"""Globalizations: how a direction's step becomes an accepted (or rejected) move.

Each ``propose`` takes the direction and the current state and returns a ``Proposal``: the
trial step and point, the loss there, whether it is accepted, and the new damping, radius
and step length. Nothing here knows which direction it drives.

``NoGlobalization`` (none)
    The step is taken as it comes: step = alpha d with alpha = ``--step`` for steepest
    descent and 1 otherwise, plus heavy-ball momentum (Polyak 1964) when asked:
    v <- beta v + alpha d, p <- p + v. The direction says which steps it accepts and how
    its damping follows (``Direction.accepts``, ``Direction.adapt_damping``: LM accepts only
    a decrease and applies Marquardt's rule; the others accept every finite step).
``LineSearch`` (line-search)
    Backtracking on the Armijo condition loss(p + alpha d) <= loss(p) + c1 alpha g^T d
    (c1 = 1e-4), halving alpha up to 50 times. The first trial is alpha = 1 for Newton-like
    directions and twice the last accepted alpha for steepest descent. The direction may
    adapt its damping from the gain ratio of the full step (LM: Nielsen's rule).
Bounds: every trial point is projected onto the box (``nlfit.problem.project``) and the
step is what the projection leaves, so results stay inside; parameters held at a bound by
the gradient (and fixed ones) are already frozen in the direction (``Local.free``). This is
a projected active-set method (Bertsekas 1982; the same idea as scipy's 'dogbox').

``TrustRegion`` (trust-region)
    The direction solves its model inside ||D s|| <= radius. rho = actual / predicted
    decrease; the step is accepted when rho > 1e-4; radius = 1/4 ||D s|| when rho < 1/4,
    max(radius, 2 ||D s||) when rho > 3/4 (Moré 1978; Nocedal & Wright Alg. 4.1).
    A trial point with non-finite residuals gets rho = -inf: the region shrinks instead of
    the run failing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from nlfit._jax import jax, jnp
from nlfit.problem import cost_terms, project
from nlfit.problem import residuals as residuals_at
from nlfit.solvers.catalog import implementation

ARMIJO_C1 = 1e-4
MAX_BACKTRACKS = 50
ACCEPT_RATIO = 1e-4


class Proposal(NamedTuple):
    displacement: jax.Array  # trial_params - params
    trial_params: jax.Array
    actual: jax.Array  # actual decrease of the loss at the trial point (-inf when not finite)
    accepted: jax.Array
    predicted: jax.Array  # predicted decrease of the step taken (for the ftol test)
    damping: jax.Array
    nu: jax.Array
    radius: jax.Array
    step_length: jax.Array
    velocity: jax.Array
    nfev: jax.Array
    stalled: jax.Array  # no acceptable step can be found any more
    trial_local: object = None  # the Local at trial_params where the evaluation gave it (else the loop linearizes)


def decrease(params, problem, current_residuals, current_params):
    """loss(current) - loss(params), computed as 1/2 sum (r - r_t)(r + r_t).

    The two losses are sums of m squares that can agree to all their digits near a
    solution (large m or large residuals); their difference taken elementwise keeps the
    digits the subtraction of two sums would lose. Not finite -> -inf. Where no residual
    vector is kept (``Direction.keep_residuals``), r is recomputed at ``current_params`` in
    the same pass as r_t (one fused sum, nothing of length m stored).
    """
    if current_residuals.shape[-1] == 0:
        # its own copy of the data, as XLA sees it: the trial's residuals are not shared with the
        # linearization at the trial point (a shared vector of m values is stored, not fused)
        own = dataclasses.replace(problem, **dict(zip(("x", "y", "sigma"), jax.lax.optimization_barrier((problem.x, problem.y, problem.sigma)), strict=True)))
        trial, current = residuals_at(params, own), residuals_at(current_params, own)
        value = 0.5 * jnp.sum((current - trial) * (current + trial))
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)
    trial = residuals_at(params, problem)
    if problem.loss == "linear":
        value = 0.5 * jnp.dot(current_residuals - trial, current_residuals + trial)
    else:  # a robust loss: the difference of each point's cost, then the sum
        value = jnp.sum(cost_terms(current_residuals, problem) - cost_terms(trial, problem))
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def _gain_ratio(actual, predicted):
    return jnp.where(predicted > 0, actual / jnp.where(predicted > 0, predicted, 1.0), jnp.where(actual > 0, 1.0, -1.0))


@dataclass(frozen=True)
class Globalization:
    name = "globalization"
    # The size this globalization controls, as the history reports it: "radius" (trust
    # region, in the D-scaled norm) or "step_length" (a learning rate, a line search's step).
    size_field = "step_length"

    def propose(self, direction, problem, state, settings, key, evaluate) -> Proposal:
        """The step of this iteration and whether it is taken. ``evaluate(trial)`` gives
        (loss(params) - loss(trial), the Local at trial or None): a globalization that tries
        one point per iteration calls it; one that tries several (a line search) takes the
        decreases alone (``decrease``)."""
        raise NotImplementedError

    @staticmethod
    def proposal(state, step, trial, actual, accepted, predicted, **changed) -> Proposal:
        """A Proposal in which every part of the state not ``changed`` (damping, nu, radius,
        step_length, velocity) stays as it is, with one evaluation and no stall."""
        kept = {"damping": state.damping, "nu": state.nu, "radius": state.radius, "step_length": state.step_length, "velocity": state.velocity}
        extra = {"nfev": jnp.asarray(1), "stalled": jnp.asarray(False)}
        return Proposal(displacement=step, trial_params=trial, actual=actual, accepted=accepted, predicted=predicted, **{**kept, **extra, **changed})


@dataclass(frozen=True)
class NoGlobalization(Globalization):
    name = "none"

    def propose(self, direction, problem, state, settings, key, evaluate):
        local = state.local
        d = direction.full_step(problem, state.params, local, state.scale, state.damping, key)
        alpha = jnp.asarray(1.0) if direction.natural_step else settings.step
        velocity = settings.momentum * state.velocity + alpha * d
        trial = project(state.params + velocity, problem)  # bounds: the nearest point of the box
        step = trial - state.params
        actual, trial_local = evaluate(trial)
        finite = jnp.isfinite(actual)
        accepted = direction.accepts(actual)
        damping, nu = direction.adapt_damping(state.damping, state.nu, accepted)
        exhausted = direction.exhausted(damping)
        stalled = ~finite if exhausted is None else exhausted
        predicted = direction.predicted_decrease(problem, state.params, local, step)
        velocity = jnp.where(accepted, velocity, jnp.zeros_like(velocity))
        changed = {"damping": damping, "nu": nu, "step_length": alpha, "velocity": velocity, "stalled": stalled, "trial_local": trial_local}
        return self.proposal(state, step, trial, actual, accepted, predicted, **changed)


@dataclass(frozen=True)
class LineSearch(Globalization):
    name = "line-search"

    def propose(self, direction, problem, state, settings, key, evaluate):
        local = state.local
        d = direction.descent_step(problem, state.params, local, state.scale, state.damping, key)
        slope = jnp.dot(local.grad, d)
        not_descent = ~(slope < 0) | ~jnp.all(jnp.isfinite(d))
        d = jnp.where(not_descent, -local.grad, d)
        slope = jnp.where(not_descent, -jnp.dot(local.grad, local.grad), slope)
        first = jnp.asarray(1.0) if direction.natural_step else 2.0 * state.step_length

        def moved(alpha):  # along the projected path p(alpha) = P(p + alpha d) when there are bounds
            return project(state.params + alpha * d, problem) - state.params

        def armijo(alpha, decrease):
            return decrease >= -ARMIJO_C1 * jnp.dot(local.grad, moved(alpha))

        def cond(carry):
            alpha, decrease, count = carry
            return ~armijo(alpha, decrease) & (count < MAX_BACKTRACKS)

        def body(carry):
            alpha, _, count = carry
            alpha = 0.5 * alpha
            return alpha, decrease(state.params + moved(alpha), problem, local.residuals, state.params), count + 1

        first_decrease = decrease(state.params + moved(first), problem, local.residuals, state.params)
        alpha, actual, backtracks = jax.lax.while_loop(cond, body, (first, first_decrease, 0))
        accepted = armijo(alpha, actual) & (jnp.dot(local.grad, moved(alpha)) < 0)
        step = moved(alpha)

        def gain():  # of the full step, computed only by a direction that asks for it
            return _gain_ratio(first_decrease, direction.predicted_decrease(problem, state.params, local, moved(first)))

        damping, nu = direction.adapt_damping(state.damping, state.nu, accepted, gain=gain)
        exhausted = direction.exhausted(damping)
        stalled = ~accepted & (True if exhausted is None else exhausted)
        predicted = direction.predicted_decrease(problem, state.params, local, step)
        length = jnp.where(accepted, alpha, state.step_length)
        return self.proposal(
            state, step, state.params + step, actual, accepted, predicted, damping=damping, nu=nu, step_length=length, nfev=backtracks + 1, stalled=stalled
        )


@dataclass(frozen=True)
class TrustRegion(Globalization):
    name = "trust-region"
    size_field = "radius"

    def propose(self, direction, problem, state, settings, key, evaluate):
        local = state.local
        step, damping = direction.trust_region_step(problem, state.params, local, state.scale, state.radius)
        trial = project(state.params + step, problem)
        step = trial - state.params
        actual, trial_local = evaluate(trial)
        predicted = direction.predicted_decrease(problem, state.params, local, step)
        rho = jnp.where(jnp.isfinite(actual), _gain_ratio(actual, predicted), -jnp.inf)
        scaled_norm = jnp.linalg.norm(state.scale * step)
        radius = jnp.where(
            rho < 0.25,
            0.25 * jnp.minimum(scaled_norm, state.radius),
            jnp.where(rho > 0.75, jnp.maximum(state.radius, 2.0 * scaled_norm), state.radius),
        )
        damping = direction.region_damping(damping, state.damping)
        return self.proposal(state, step, trial, actual, rho > ACCEPT_RATIO, predicted, damping=damping, radius=radius, trial_local=trial_local)


def make_globalization(name: str) -> Globalization:
    """The globalization called ``name`` (its class's ``name``)."""
    return implementation(Globalization, name)()
