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

Scaling (Moré 1978): D_j is the running maximum of the norm of Jacobian column j (1 where
a column has always been zero), which makes GN, LM and Newton invariant to rescaling the
parameters. Steepest descent has no Jacobian and uses D = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from nlfit import derivatives
from nlfit._jax import jax, jnp
from nlfit.problem import Problem
from nlfit.solvers import subproblems


class Local(NamedTuple):
    """What a direction knows about the problem at one point."""

    residuals: jax.Array
    loss: jax.Array
    grad: jax.Array
    jac: jax.Array | None = None  # the m x n Jacobian (factorization "svd")
    hess: jax.Array | None = None
    gram: jax.Array | None = None  # J^T J without J (factorization "gram", large m)


def _column_norms(local: Local):
    if local.jac is None:
        return jnp.sqrt(jnp.maximum(jnp.diag(local.gram), 0.0))
    return jnp.sqrt(jnp.sum(local.jac * local.jac, axis=0))


def _cosine_measure(local: Local):
    """MINPACK's gtol measure: max_j |J_j^T r| / (||J_j|| ||r||), 0 when r = 0."""
    norms = _column_norms(local) * jnp.linalg.norm(local.residuals)
    return jnp.max(jnp.where(norms > 0, jnp.abs(local.grad) / jnp.where(norms > 0, norms, 1.0), 0.0))


@dataclass(frozen=True)
class Direction:
    """Base class. Subclasses are frozen dataclasses: hashable, used as static jit arguments.

    ``factorization``: "svd" keeps J and works from its SVD (accuracy follows cond(J));
    "gram" keeps only J^T J and J^T r (the normal equations, accuracy follows cond(J)^2) and
    never stores J, for large m.
    """

    factorization: str = "svd"
    name = "direction"
    damped = False  # True when the step depends on a damping parameter (LM)
    natural_step = True  # True when a step length of 1 is meaningful (Newton-like)

    def linearize(self, problem: Problem, params, jac_mode: str) -> Local:
        if self.factorization == "gram":
            r, gram, grad = derivatives.gram(params, problem, jac_mode)
            return Local(residuals=r, loss=0.5 * jnp.dot(r, r), grad=grad, gram=gram)
        r, jac = derivatives.jacobian(params, problem, jac_mode)
        return Local(residuals=r, loss=0.5 * jnp.dot(r, r), grad=jac.T @ r, jac=jac)

    def update_scale(self, scale, local: Local):
        norms = _column_norms(local)
        return jnp.maximum(scale, jnp.where(norms > 0, norms, 1.0))

    def initial_scale(self, local: Local):
        norms = _column_norms(local)
        return jnp.where(norms > 0, norms, 1.0)

    def gradient_measure(self, local: Local):
        return _cosine_measure(local)

    def step(self, problem, params, local: Local, scale, damping, key):
        raise NotImplementedError

    def descent_step(self, problem, params, local: Local, scale, damping, key):
        return self.step(problem, params, local, scale, damping, key)

    def trust_region_step(self, problem, params, local: Local, scale, radius):
        """(step, damping used) for the radius, in the scale-D norm."""
        raise NotImplementedError

    def predicted_decrease(self, problem, params, local: Local, step):
        """-(g^T s + 1/2 ||J s||^2) for the Gauss-Newton model."""
        if local.jac is None:
            curvature = jnp.dot(step, local.gram @ step)
        else:
            jac_step = local.jac @ step
            curvature = jnp.dot(jac_step, jac_step)
        return -(jnp.dot(local.grad, step) + 0.5 * curvature)

    def _jacobian_form(self, local: Local, scale):
        if local.jac is None:
            return subproblems.eigen_form_from_gram(local.gram / (scale[:, None] * scale[None, :]), local.grad / scale)
        return subproblems.eigen_form_from_jacobian(local.jac / scale[None, :], local.residuals)


@dataclass(frozen=True)
class GaussNewton(Direction):
    name = "gn"

    def step(self, problem, params, local, scale, damping, key):
        return subproblems.damped_step(self._jacobian_form(local, scale), 0.0) / scale

    def trust_region_step(self, problem, params, local, scale, radius):
        return subproblems.dogleg_step(self._jacobian_form(local, scale), radius) / scale, jnp.zeros(())


@dataclass(frozen=True)
class LevenbergMarquardt(Direction):
    name = "lm"
    damped = True

    def step(self, problem, params, local, scale, damping, key):
        return subproblems.damped_step(self._jacobian_form(local, scale), damping) / scale

    def trust_region_step(self, problem, params, local, scale, radius):
        scaled, damping = subproblems.trust_region_step(self._jacobian_form(local, scale), radius)
        return scaled / scale, damping


@dataclass(frozen=True)
class Newton(Direction):
    name = "newton"

    def linearize(self, problem, params, jac_mode):
        local = super().linearize(problem, params, jac_mode)
        return local._replace(hess=derivatives.hessian(params, problem))

    def _hessian_form(self, local, scale):
        scaled_hess = local.hess / (scale[:, None] * scale[None, :])
        return subproblems.eigen_form_from_hessian(scaled_hess, local.grad / scale)

    def step(self, problem, params, local, scale, damping, key):
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
    natural_step = False

    def linearize(self, problem, params, jac_mode):
        r, loss, grad = derivatives.value_and_grad(params, problem)
        return Local(residuals=r, loss=loss, grad=grad)

    def update_scale(self, scale, local):
        return scale

    def initial_scale(self, local):
        return jnp.ones_like(local.grad)

    def gradient_measure(self, local):
        return jnp.max(jnp.abs(local.grad))

    def step(self, problem, params, local, scale, damping, key):
        if self.batch_size is None or self.batch_size >= problem.n_residuals:
            return -local.grad
        m = problem.n_residuals
        rows = jax.random.choice(key, m, (self.batch_size,), replace=False)
        batch = Problem(x=problem.x[rows], y=problem.y[rows], sigma=problem.sigma[rows], model=problem.model)
        _, _, grad = derivatives.value_and_grad(params, batch)
        return -(m / self.batch_size) * grad

    def trust_region_step(self, problem, params, local, scale, radius):
        jac_grad = derivatives.jvp(params, problem, local.grad)
        return subproblems.cauchy_step(local.grad, jnp.dot(jac_grad, jac_grad), radius), jnp.zeros(())

    def predicted_decrease(self, problem, params, local, step):
        jac_step = derivatives.jvp(params, problem, step)
        return -(jnp.dot(local.grad, step) + 0.5 * jnp.dot(jac_step, jac_step))


def make_direction(method: str, batch_size: int | None = None, factorization: str = "svd") -> Direction:
    if method == "gd":
        return SteepestDescent(batch_size=batch_size)
    return {"newton": Newton, "gn": GaussNewton, "lm": LevenbergMarquardt}[method](factorization=factorization)
