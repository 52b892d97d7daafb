"""Search directions: what each method computes at a point, independent of globalization.

A direction knows how to

- ``linearize`` the problem at the parameters (residuals, loss, gradient, and the Jacobian
  or Hessian it needs),
- give its ``step`` for a damping value (line search, none), and a ``descent_step`` that is
  guaranteed downhill (line search),
- solve its model inside a trust region (``trust_region_step``),
- say how much its quadratic model predicts the loss to fall (``predicted_decrease``),
- measure the gradient for the gtol test.

Directions (model B of the loss near p; g = J^T r):

``SteepestDescent`` (gd)
    step -g. g from one reverse pass; J is never formed. Its model for the trust region
    and the gain ratio is the Gauss-Newton one, with J s from one forward pass (JVP).
    Optional minibatches (stochastic gradient descent): the step uses the gradient of a
    random subset of the residuals, rescaled by m / K so that it is unbiased.
``Newton``
    B = H, the exact Hessian. ``step``: H^+ g (pseudo-inverse through eigh).
    ``descent_step``: the eigenvalue-modified Newton step. Trust region: exact subproblem.
``GaussNewton``
    B = J^T J. ``step``: the least-squares step from the SVD of J. Trust region: dogleg.
``LevenbergMarquardt``
    B = J^T J, ``step`` = -(J^T J + damping D^2)^-1 g. Trust region: Moré's (1978) exact
    damped step for the radius in the D-scaled norm.

Scaling (after Moré 1978): D_j follows the norm of Jacobian column j (1 where a column has
always been zero), which makes GN, LM and Newton invariant to rescaling the parameters.
Moré takes the running maximum; nlfit relaxes it by half in log scale per iteration
(``update_scale``). Steepest descent has no Jacobian and uses D = 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from nlfit import derivatives
from nlfit._jax import jax, jnp
from nlfit.problem import Problem, cost_terms, free_mask, robust_scaling
from nlfit.solvers import subproblems
from nlfit.solvers.catalog import implementation

MAX_DAMPING = 1e16  # LM's damping beyond which its step is nil (the run has stalled)


class Local(NamedTuple):
    """What a direction knows about the problem at one point."""

    residuals: jax.Array  # r, the weighted residuals (the loss and actual decreases use them)
    loss: jax.Array
    grad: jax.Array  # the projected gradient: 0 for fixed parameters and those held at a bound
    jac: jax.Array | None = None  # the m x n Jacobian (factorization "svd"); J~ for a robust loss
    hess: jax.Array | None = None
    gram: jax.Array | None = None  # J^T J without J (factorization "gram", large m)
    r_factor: jax.Array | None = None  # R with R^T R = J^T J, from a streaming QR (factorization "qr")
    qtr: jax.Array | None = None  # Q^T r~ that goes with r_factor
    model_residuals: jax.Array | None = None  # r~ of a robust loss (None: r itself)
    free: jax.Array | None = None  # 1 for parameters that may move, 0 for fixed or held at a bound


def column_norms(matrix, axis: int = -2):
    """Euclidean norms along ``axis``, scaled by the largest entry first so that tiny (or huge)
    columns neither underflow nor overflow when squared (a parameter of size 1e300 has a
    Jacobian column of size 1e-300)."""
    largest = jnp.max(jnp.abs(matrix), axis=axis, keepdims=True)
    safe = jnp.where(largest > 0, largest, 1.0)
    return jnp.squeeze(largest, axis) * jnp.sqrt(jnp.sum((matrix / safe) ** 2, axis=axis))


def vector_norm(vector):
    """``column_norms`` of one vector, reduced along its own (last) axis: the same scaled sum,
    but as a reduction over the minor axis, which XLA vectorizes (the (m, 1) column form
    reduces across rows and ran about 6x slower under ``vmap``)."""
    largest = jnp.max(jnp.abs(vector), axis=-1)
    safe = jnp.where(largest > 0, largest, 1.0)
    return largest * jnp.sqrt(jnp.sum((vector / safe[..., None]) ** 2, axis=-1))


def _column_norms(local: Local):
    if local.r_factor is not None:
        return column_norms(local.r_factor)
    if local.jac is None:
        return jnp.sqrt(jnp.maximum(jnp.diag(local.gram), 0.0))
    return column_norms(local.jac)


def _model_residuals(local: Local):
    return local.residuals if local.model_residuals is None else local.model_residuals


def _cosine_measure(local: Local):
    """MINPACK's gtol measure: max_j |J_j^T r| / (||J_j|| ||r||), 0 when r = 0."""
    residuals = _model_residuals(local)
    # the normal-equation forms (many small fits) take ||r|| along its own axis, the fast
    # reduction; the others keep the column form, whose rounding the single fits were tuned with
    if residuals.shape[-1] == 0:  # no residual vector kept (``Direction.keep_residuals``): ||r|| from r^T r = 2 loss
        size = jnp.sqrt(2.0 * local.loss)
    else:
        size = vector_norm(residuals) if local.gram is not None else column_norms(residuals[:, None])[0]
    norms = _column_norms(local) * size
    return jnp.max(jnp.where(norms > 0, jnp.abs(local.grad) / jnp.where(norms > 0, norms, 1.0), 0.0))


@dataclass(frozen=True)
class Direction:
    """Base class. Subclasses are frozen dataclasses: hashable, used as static jit arguments.

    ``factorization``: "svd" keeps J and works from its SVD (accuracy follows cond(J));
    "qr" keeps only the n x n R factor of J from a streaming QR (``derivatives.qr_linearize``)
    and works from the SVD of R: the same accuracy without storing J, for large m; "gram"
    keeps only J^T J and J^T r (the normal equations, accuracy follows cond(J)^2, the fastest);
    "cholesky" keeps them too, and Levenberg-Marquardt solves its steps by a closed-form
    Cholesky instead of an eigendecomposition (n <= ``subproblems.SMALL_PARAMETERS``; others as "gram").
    """

    factorization: str = "svd"
    # False: the normal-equation forms ("gram", "cholesky") keep no residual vector, only the
    # sums (r^T r, J^T r, J^T J) of one fused pass over the data: a single fit of many points,
    # where storing r (and selecting it each iteration) cost more passes than the sums
    # (``nlfit.prepare.solver_config``). The decrease of a step is then taken from both
    # points' residuals recomputed in the pass that linearizes at the trial point
    # (``linearize_trial``), or in a pass of its own (``globalization.decrease``).
    keep_residuals: bool = True
    name = "direction"
    damped = False  # True when the step depends on a damping parameter (LM)
    measure_is_cosine = True  # gradient_measure is MINPACK's scale-free cosine (False: ||g||_inf)
    natural_step = True  # True when a step length of 1 is meaningful (Newton-like)

    def linearize(self, problem: Problem, params, jac_mode: str) -> Local:
        """r, the loss, and J (or J^T J) with its gradient, rescaled for a robust loss (scipy's
        way) and with the columns of parameters that may not move (fixed, or held at a bound)
        set to zero, so that every direction leaves them where they are."""
        robust = problem.loss != "linear"
        if self.factorization == "qr":
            r, factor, qtr, grad = derivatives.qr_linearize(params, problem, jac_mode)
            free = free_mask(params, grad, problem)
            model_r = robust_scaling(r, problem)[0] if robust else None
            return Local(r, jnp.sum(cost_terms(r, problem)), grad * free, r_factor=factor * free[None, :], qtr=qtr, model_residuals=model_r, free=free)
        if self.sums_only(problem):
            return self._fused(problem, params, derivatives.gram(params, problem, jac_mode, with_residuals=False))
        if self.factorization in ("gram", "cholesky"):
            r, gram, grad = derivatives.gram(params, problem, jac_mode)
            free = free_mask(params, grad, problem)
            model_r = robust_scaling(r, problem)[0] if robust else None
            return Local(r, jnp.sum(cost_terms(r, problem)), grad * free, gram=gram * jnp.outer(free, free), model_residuals=model_r, free=free)
        r, jac = derivatives.jacobian(params, problem, jac_mode)
        model_r, scale = robust_scaling(r, problem)
        if robust:
            jac = jac * scale[:, None]
        free = free_mask(params, jac.T @ model_r, problem)
        jac = jac * free[None, :]
        return Local(r, jnp.sum(cost_terms(r, problem)), jac.T @ model_r, jac=jac, model_residuals=model_r if robust else None, free=free)

    def sums_only(self, problem: Problem) -> bool:
        """Whether the linearization is the fused sums of one pass and no residual vector is
        kept (a large fit, the plain loss)."""
        return self.factorization in ("gram", "cholesky") and not self.keep_residuals and problem.loss == "linear"

    def fuses_trial(self, problem: Problem) -> bool:
        """Whether a trial point's decrease comes from the pass that linearizes there
        (``linearize_trial``): where the linearization is those sums alone."""
        return self.sums_only(problem)

    def linearize_trial(self, problem: Problem, trial, current, jac_mode: str):
        """(the Local at ``trial``, loss(current) - loss(trial)) from one pass over the data
        (``fuses_trial`` problems only); a decrease that is not finite is -inf."""
        rss, gram, grad, twice = derivatives.gram(trial, problem, jac_mode, with_residuals=False, current=current)
        decrease = 0.5 * twice
        return self._fused(problem, trial, (rss, gram, grad)), jnp.where(jnp.isfinite(decrease), decrease, -jnp.inf)

    @staticmethod
    def _fused(problem: Problem, params, sums) -> Local:
        rss, gram, grad = sums
        free = free_mask(params, grad, problem)
        return Local(jnp.zeros((0,)), 0.5 * rss, grad * free, gram=gram * jnp.outer(free, free), free=free)

    def update_scale(self, scale, local: Local):
        """D <- sqrt(D max(D, ||J_j||)): Moré's running maximum of the column norms, relaxed
        by half in log scale each iteration (log D moves half-way up to log ||J_j||, never
        down). It keeps the invariance to rescaling the parameters (D is homogeneous in the
        column norms) but does not freeze a transient spike of a column at the first
        iterations into the scaling for the rest of the run. Measured on the 27 NIST StRD
        problems from both starts: 54 of 54 solved to LRE >= 6 in 5357 evaluations, against
        53 (MGH17 start 1 stuck where b4 = b5) in 6051 for the plain running maximum."""
        norms = _column_norms(local)
        return jnp.sqrt(scale) * jnp.sqrt(jnp.maximum(scale, jnp.where(norms > 0, norms, 1.0)))  # no overflow of the product

    def initial_scale(self, local: Local):
        norms = _column_norms(local)
        return jnp.where(norms > 0, norms, 1.0)

    def gradient_measure(self, local: Local, problem: Problem):
        return _cosine_measure(local)

    def full_step(self, problem, params, local: Local, scale, damping, key):
        raise NotImplementedError

    # How the direction's damping follows the trials (only a damped direction has one; the
    # globalizations call these and know no damping rule themselves).

    def accepts(self, actual):
        """Whether a step taken as it comes (no globalization) is kept: any finite one."""
        return jnp.isfinite(actual)

    def adapt_damping(self, damping, nu, accepted, gain=None):
        """(damping, nu) after a trial; ``gain()`` gives the gain ratio of the full step when
        the globalization has one (a line search). Undamped: unchanged."""
        return damping, nu

    def exhausted(self, damping):
        """True where no acceptable step is left at this damping; None: no such test."""
        return None

    def region_damping(self, used, previous):
        """The damping to keep after a trust-region step that used ``used``."""
        return previous

    def descent_step(self, problem, params, local: Local, scale, damping, key):
        return self.full_step(problem, params, local, scale, damping, key)

    def trust_region_step(self, problem, params, local: Local, scale, radius):
        """(step, damping used) for the radius, in the scale-D norm."""
        raise NotImplementedError

    def predicted_decrease(self, problem, params, local: Local, step):
        """-(g^T s + 1/2 ||J s||^2) for the Gauss-Newton model."""
        if local.r_factor is not None:
            factor_step = local.r_factor @ step
            curvature = jnp.dot(factor_step, factor_step)
        elif local.jac is None:
            curvature = jnp.dot(step, local.gram @ step)
        else:
            jac_step = local.jac @ step
            curvature = jnp.dot(jac_step, jac_step)
        return -(jnp.dot(local.grad, step) + 0.5 * curvature)

    def _jacobian_form(self, local: Local, scale):
        if local.r_factor is not None:  # J = Q R: the SVD of R D^-1 with Q^T r in place of r
            return subproblems.eigen_form_from_jacobian(local.r_factor / scale[None, :], local.qtr)
        if local.jac is None:
            return subproblems.eigen_form_from_gram(local.gram / (scale[:, None] * scale[None, :]), local.grad / scale)
        return subproblems.eigen_form_from_jacobian(local.jac / scale[None, :], _model_residuals(local))


@dataclass(frozen=True)
class GaussNewton(Direction):
    name = "gn"

    def full_step(self, problem, params, local, scale, damping, key):
        return subproblems.damped_step(self._jacobian_form(local, scale), 0.0) / scale

    def trust_region_step(self, problem, params, local, scale, radius):
        return subproblems.dogleg_step(self._jacobian_form(local, scale), radius) / scale, jnp.zeros(())


@dataclass(frozen=True)
class LevenbergMarquardt(Direction):
    """(J^T J + damping D^2) s = -g. The damping follows Marquardt's rule when the step is
    taken as it comes (a decrease is accepted and divides it by 10, a rise is rejected and
    multiplies it by 10) and Nielsen's rule (1999) from the gain ratio rho of the full step
    under a line search (rho > 0: damping *= max(1/3, 1 - (2 rho - 1)^3), nu = 2; else
    damping *= nu, nu *= 2). Beyond MAX_DAMPING the step is nil: the run has stalled."""

    name = "lm"
    damped = True

    def accepts(self, actual):
        return jnp.isfinite(actual) & (actual > 0)

    def adapt_damping(self, damping, nu, accepted, gain=None):
        if gain is None:  # Marquardt
            return jnp.where(accepted, damping / 10.0, damping * 10.0), nu
        rho = gain()  # Nielsen
        good = rho > 0
        return jnp.where(good, damping * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), damping * nu), jnp.where(good, 2.0, 2.0 * nu)

    def exhausted(self, damping):
        return damping > MAX_DAMPING

    def region_damping(self, used, previous):
        return used

    def full_step(self, problem, params, local, scale, damping, key):
        if self._closed_form(local):
            return subproblems.normal_damped_step(*self._normal_form(local, scale), damping) / scale
        return subproblems.damped_step(self._jacobian_form(local, scale), damping) / scale

    def trust_region_step(self, problem, params, local, scale, radius):
        if self._closed_form(local):
            scaled, damping = subproblems.normal_trust_region_step(*self._normal_form(local, scale), radius)
        else:
            scaled, damping = subproblems.trust_region_step(self._jacobian_form(local, scale), radius)
        return scaled / scale, damping

    def _closed_form(self, local):
        """Factorization "cholesky": the damped normal equations solved by the closed-form
        Cholesky of ``subproblems`` (few parameters; the batches' fast path)."""
        return self.factorization == "cholesky" and local.grad.shape[-1] <= subproblems.SMALL_PARAMETERS

    def _normal_form(self, local, scale):
        return local.gram / (scale[:, None] * scale[None, :]), local.grad / scale


@dataclass(frozen=True)
class Newton(Direction):
    name = "newton"

    def linearize(self, problem, params, jac_mode):
        local = super().linearize(problem, params, jac_mode)
        # the exact Hessian of the (robust) loss, without the rows and columns of held parameters
        hess = derivatives.hessian(params, problem) * jnp.outer(local.free, local.free)
        return local._replace(hess=hess)

    def fuses_trial(self, problem):  # its linearization adds the Hessian to the sums: a pass of its own
        return False

    def _hessian_form(self, local, scale):
        scaled_hess = local.hess / (scale[:, None] * scale[None, :])
        return subproblems.eigen_form_from_hessian(scaled_hess, local.grad / scale)

    def full_step(self, problem, params, local, scale, damping, key):
        return subproblems.damped_step(self._hessian_form(local, scale), 0.0) / scale

    def descent_step(self, problem, params, local, scale, damping, key):
        return subproblems.modified_newton_step(self._hessian_form(local, scale)) / scale

    def trust_region_step(self, problem, params, local, scale, radius):
        scaled, damping = subproblems.trust_region_step(self._hessian_form(local, scale), radius)
        return scaled / scale, damping

    def predicted_decrease(self, problem, params, local, step):
        return -(jnp.dot(local.grad, step) + 0.5 * jnp.dot(step, local.hess @ step))


@dataclass(frozen=True)
class SteepestDescent(Direction):
    """-g; with ``batch_size`` set, the minibatch gradient (stochastic gradient descent)."""

    batch_size: int | None = None
    name = "gd"
    measure_is_cosine = False
    natural_step = False

    def linearize(self, problem, params, jac_mode):
        r, loss, grad = derivatives.value_and_grad(params, problem)
        free = free_mask(params, grad, problem)
        return Local(residuals=r, loss=loss, grad=grad * free, free=free)

    def fuses_trial(self, problem):  # its linearization is the gradient alone
        return False

    def update_scale(self, scale, local):
        return scale

    def initial_scale(self, local):
        return jnp.ones_like(local.grad)

    def gradient_measure(self, local, problem):
        """||g||_inf in the user's units (the solvers' residuals are divided by problem.scale)."""
        return jnp.max(jnp.abs(local.grad)) * problem.scale**2

    def full_step(self, problem, params, local, scale, damping, key):
        """-g in the user's units, so that --step is the learning rate of the loss as written."""
        units = problem.scale**2
        if self.batch_size is None or self.batch_size >= problem.n_residuals:
            return -local.grad * units
        m = problem.n_residuals
        rows = jax.random.choice(key, m, (self.batch_size,), replace=False)
        batch = dataclasses.replace(problem, x=problem.x[rows], y=problem.y[rows], sigma=problem.sigma[rows])
        _, _, grad = derivatives.value_and_grad(params, batch)
        return -(m / self.batch_size) * grad * local.free * units

    def trust_region_step(self, problem, params, local, scale, radius):
        jac_grad = derivatives.jvp(params, problem, local.grad)
        return subproblems.cauchy_step(local.grad, jnp.dot(jac_grad, jac_grad), radius), jnp.zeros(())

    def predicted_decrease(self, problem, params, local, step):
        jac_step = derivatives.jvp(params, problem, step)
        return -(jnp.dot(local.grad, step) + 0.5 * jnp.dot(jac_step, jac_step))


def make_direction(method: str, batch_size: int | None = None, factorization: str = "svd", keep_residuals: bool = True) -> Direction:
    """The direction called ``method`` (its class's ``name``), given the settings its fields take."""
    cls = implementation(Direction, method)
    given = {"factorization": factorization, "batch_size": batch_size, "keep_residuals": keep_residuals}
    return cls(**{field.name: given[field.name] for field in dataclasses.fields(cls) if field.name in given})
