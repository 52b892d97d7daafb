"""The stopping rule: one pure function, used at the start and after every iteration.

``termination(measures, tolerances) -> status`` maps what one iteration measured to a
:class:`~nlfit.solvers.status.Status` code (RUNNING while none of the tests holds). It is
plain ``jax.numpy`` on scalars, so it runs inside the jitted, vmapped step, and it can be
called with Python numbers in unit tests (``tests/test_termination.py``), as scipy's
``_lsq/common.py: check_termination`` and optimistix's ``cauchy_termination`` are.

The tests, in the order they win (scipy.optimize.least_squares / MINPACK meanings):

nonfinite
    the loss or the gradient at the current point is not finite.
gtol
    the gradient measure is at most gtol: for Jacobian methods MINPACK's
    max_j |J_j^T r| / (||J_j|| ||r||) (the cosine between r and each column of J, invariant
    to the units of the data and of each parameter); for steepest descent ||g||_inf (it has
    no Jacobian). A zero loss counts as gtol. After the start it is tested at accepted
    points only (a rejected step leaves the point, and so the measure, as it was).
ftol
    |actual decrease| <= ftol * loss and predicted decrease <= ftol * loss, both (MINPACK's
    test, checked on every trial step, accepted or not).
xtol
    an accepted step with ||D step|| <= xtol (xtol + ||D params||) (MINPACK's test in the
    scaled norm ||D .||, D the direction's scaling, 1 for steepest descent); or a trust
    region that collapsed, radius <= xtol ||D params||, at a point that is not steep.
stalled
    the globalization can find no acceptable step any more (its own test: LM's damping
    beyond MAX_DAMPING, a line search that shrank to nothing), or a collapsed trust region
    at a steep point: no step of any size lowers the loss although the gradient says it
    should (``steep``: the gradient cosine above STALL_MEASURE while the residuals are above
    the rounding level of the data, see ``nlfit.solvers.loop``).
max-iter
    the member's iteration budget is used up.
"""

from __future__ import annotations

from typing import NamedTuple

from nlfit._jax import jnp
from nlfit.solvers.status import Status

# Largest gradient cosine max_j |J_j^T r| / (||J_j|| ||r||) at which a collapsed trust region
# still counts as convergence: at minima it is round-off, below 1e-8 on all NIST problems;
# 1e-4 leaves four orders of margin and still catches a region that collapsed on a slope.
STALL_MEASURE = 1e-4
# Residuals whose weighted sum of squares is below (ROUNDING_LEVEL)^2 * sum((y/sigma)^2) are
# at the rounding level of the data: a thousand ulps of each value. There the gradient
# cosine is noise, so a collapsed region is convergence whatever the cosine says.
ROUNDING_LEVEL = 1e3 * float(jnp.finfo(jnp.float64).eps)


class Measures(NamedTuple):
    """What one iteration measured (scalars; arrays of them under vmap)."""

    finite: object  # loss and gradient at the current point are finite
    loss: object  # the loss at the current point
    old_loss: object  # the loss before this iteration's trial step
    gradient_measure: object  # the direction's measure at the current point (see gtol)
    accepted: object  # the trial step was accepted
    actual: object  # actual decrease of the loss by the trial step (NaN if it was not finite)
    predicted: object  # decrease the local model predicted for it
    scaled_step: object  # ||D step|| of the trial step
    scaled_params: object  # ||D params|| at the current point
    collapsed: object  # a trust region whose radius fell to xtol ||D params|| (False without one)
    steep: object  # the gradient cosine is above STALL_MEASURE and the residuals above rounding
    search_stalled: object  # the globalization found no acceptable step
    iteration: object  # iterations done, this one included
    budget: object  # the member's iteration budget


class Tolerances(NamedTuple):
    ftol: object
    xtol: object
    gtol: object


def termination(m: Measures, tol: Tolerances):
    """The status after an iteration: the first test that holds in the order nonfinite, gtol,
    ftol, xtol, stalled, max-iter; RUNNING when none does (int32)."""
    gtol_met = m.accepted & ((m.loss == 0) | (m.gradient_measure <= tol.gtol))
    ftol_met = jnp.isfinite(m.actual) & (jnp.abs(m.actual) <= tol.ftol * m.old_loss) & (m.predicted <= tol.ftol * m.old_loss)
    small_step = m.accepted & (m.scaled_step <= tol.xtol * (tol.xtol + m.scaled_params))
    xtol_met = small_step | (m.collapsed & ~m.steep)
    stalled = m.search_stalled | (m.collapsed & m.steep)
    return jnp.select(
        [~jnp.asarray(m.finite), gtol_met, ftol_met, xtol_met, stalled, m.iteration >= m.budget],
        [int(Status.NONFINITE), int(Status.GTOL), int(Status.FTOL), int(Status.XTOL), int(Status.STALLED), int(Status.MAX_ITER)],
        default=int(Status.RUNNING),
    ).astype(jnp.int32)


def at_start(finite, loss, gradient_measure, tol: Tolerances):
    """The status of a start: nonfinite, gtol (already converged, or a zero loss), else
    RUNNING. The same function as after an iteration, with no step taken yet."""
    nothing = jnp.asarray(False)
    measures = Measures(
        finite=finite,
        loss=loss,
        old_loss=loss,
        gradient_measure=gradient_measure,
        accepted=jnp.asarray(True),  # the start counts as an accepted point
        actual=jnp.nan,  # no step: ftol cannot hold
        predicted=jnp.nan,
        scaled_step=jnp.inf,  # no step: xtol cannot hold
        scaled_params=jnp.asarray(0.0),
        collapsed=nothing,
        steep=nothing,
        search_stalled=nothing,
        iteration=jnp.asarray(0),
        budget=jnp.asarray(1),
    )
    return termination(measures, tol)
