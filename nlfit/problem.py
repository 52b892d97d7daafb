"""Dataset + Model -> Problem: weighted residuals r(params) and loss = 1/2 ||r||^2 in JAX.

    r_i(params) = (f(params, x_i) - y_i) / sigma_i

with sigma_i = 1 for an unweighted fit, so the loss is the C^{-1}-weighted norm of the
lecture with a diagonal C. ``y`` is the fitted response: the response column, or its
transform for a formula such as ``log(y) = ...``.

A Problem is a JAX pytree: x, y and sigma are traced arrays and the model is static, so a
compiled solver step is reused for every dataset of the same shape. A formula fitted from
its tape (``nlfit.models.tape``) has a ``Runner`` as its static model, equal for every
formula of one bucket, and the tape itself among the traced arrays (``tape``), so the same
compiled step also serves every such formula; ``model_values`` evaluates either kind.

Robust losses (scipy.optimize.least_squares' definitions): with z = (r / C)^2 and
C = f_scale, the cost is 1/2 C^2 sum rho(z), where rho(z) is

    linear  z               soft_l1  2 ((1 + z)^(1/2) - 1)     huber  z if z <= 1 else 2 z^(1/2) - 1
    cauchy  ln(1 + z)       arctan   arctan(z)

Bounds: lower <= params <= upper (componentwise, +-inf when absent); a fixed parameter has
lower = upper. ``project`` clips a point into the box.

Scale: the solvers work with r / scale, where ``scale`` is the power of two nearest below
max |y / sigma| (``residual_scale``). Multiplying by a power of two is exact, so a fit of
data multiplied by 1e-300 or 1e30 takes the same steps as the unscaled fit, and the squares
of the residuals neither underflow nor overflow. Losses, gradients and statistics are
converted back to the user's units when they are reported (``nlfit.result``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from nlfit._jax import jax, jnp
from nlfit.io.dataset import Dataset
from nlfit.models.base import Model

_jnp = jnp


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Problem:
    x: jax.Array
    y: jax.Array
    sigma: jax.Array
    model: Model = field(metadata={"static": True})
    loss: str = field(default="linear", metadata={"static": True})
    f_scale: jax.Array | float = 1.0  # in units of the scaled residuals r / scale
    lower: jax.Array | None = None
    upper: jax.Array | None = None
    scale: jax.Array | float = 1.0  # the residuals the solvers see are (f - y) / (sigma scale)
    tape: tuple | None = None  # a formula as data (``nlfit.models.tape``) when ``model`` is its Runner

    @property
    def n_residuals(self) -> int:
        return int(self.y.shape[-1])


def vmap_groups(function, in_axes, at: int):
    """``jax.vmap(function, in_axes)`` over the groups of a batch whose problems are argument
    ``at``. The groups of a batch share one formula: a tape (``Problem.tape``) is taken out of
    the map and given to every group unbatched, since under ``vmap`` a batched tape makes
    ``lax.switch`` evaluate every operation of every instruction (15x slower, measured)."""

    def mapped(*args):
        problems = args[at]
        if problems.tape is None:
            return jax.vmap(function, in_axes=in_axes)(*args)
        tape = tuple(leaf[0] for leaf in problems.tape)

        def one(*inner):
            inner = list(inner)
            inner[at] = dataclasses.replace(inner[at], tape=tape)
            return function(*inner)

        args = list(args)
        args[at] = dataclasses.replace(problems, tape=None)
        return jax.vmap(one, in_axes=in_axes)(*args)

    return mapped


def residual_scale(y, sigma, fallback=None) -> float:
    """The power of two at or below max |y / sigma| (over the finite values), at least the
    smallest normal number; ``fallback`` (for example the residuals at the start) when y is
    zero, and 1 when that is zero too."""
    for values in (np.asarray(y, dtype=np.float64) / np.asarray(sigma, dtype=np.float64), fallback):
        if values is None:
            continue
        values = np.abs(np.asarray(values, dtype=np.float64))
        values = values[np.isfinite(values)]
        largest = float(values.max()) if values.size else 0.0
        if largest > 0:  # at least the smallest normal number: 1 / scale of a subnormal one overflows
            return float(max(2.0 ** np.floor(np.log2(largest)), np.finfo(np.float64).tiny))
    return 1.0


def make_problem(model: Model, dataset: Dataset, loss: str = "linear", f_scale: float = 1.0, lower=None, upper=None, scale=None) -> Problem:
    """The Problem that fits ``model`` to ``dataset`` (response transformed if the model says
    so). ``f_scale`` is in the user's units (of (f - y) / sigma); ``scale`` defaults to
    ``residual_scale`` of the data."""
    y = np.asarray(model.transform_response(dataset.y, dataset.x), dtype=np.float64)
    sigma = np.ones_like(y) if dataset.sigma is None else np.asarray(dataset.sigma, dtype=np.float64)
    if scale is None:
        scale = residual_scale(y, sigma)
    n = len(model.param_names)
    return Problem(  # the data as numpy arrays: JAX takes them as they are (no program per data length)
        x=np.asarray(dataset.x, dtype=np.float64),
        y=y,
        sigma=sigma,
        model=model,
        loss=loss,
        f_scale=jnp.asarray(f_scale / scale, dtype=jnp.float64),
        lower=np.full(n, -np.inf) if lower is None else jnp.asarray(lower, dtype=jnp.float64),  # numpy: no program per parameter count
        upper=np.full(n, np.inf) if upper is None else jnp.asarray(upper, dtype=jnp.float64),
        scale=jnp.asarray(scale, dtype=jnp.float64),
    )


def model_values(params, problem: Problem):
    """The model's values at the problem's rows: from the problem's tape where it has one."""
    if problem.tape is not None:
        return problem.model.run(problem.tape, params, problem.x)
    return problem.model.predict(params, problem.x)


def residuals(params, problem: Problem):
    """The scaled weighted residuals (f - y) / (sigma scale) that the solvers work with. A
    fixed parameter (lower = upper: ``--fix``, or one a padded fit adds, ``nlfit.models.padded``)
    is a constant of the model: reverse mode gives it a derivative of exactly zero without
    forming its partial derivative (x^7 of a padded polynomial's c7 overflows at x = 1e45, and
    0 * inf is NaN), forward mode a tangent of zero (NaN only where the model's partial
    derivative itself is infinite, as sqrt(x - b) at x = b)."""
    params = jnp.where(fixed(problem), jax.lax.stop_gradient(params), params)
    return (model_values(params, problem) - problem.y) * weights(problem)


def weights(problem: Problem):
    """1 / (sigma scale), the factor of each residual. Multiplied, not divided: XLA:CPU fuses
    a product into every pass that reads the residuals or a Jacobian column (the sums of J^T J
    and J^T r in one loop over the points), where a division, an expensive operation it does
    not repeat in each consumer, made it store the columns first: the fused J^T J of 10^7
    rational points took 134-181 ms with the division, 15-17 ms with the product (XLA's
    classic emitters, 2 cores). The value is the same: 1 / (1 * 2^k) and the product by it
    are exact for unweighted data, and sigma = inf (padded rows) gives the weight 0."""
    return 1.0 / (problem.sigma * problem.scale)


def fixed(problem: Problem):
    """(n,) True for the parameters held at one value (lower = upper)."""
    return problem.lower == problem.upper


def rho(z, name: str, xp=None):
    """(rho(z), rho'(z), rho''(z)) of a robust loss (``xp``: the array module, jax.numpy by default)."""
    jnp = _jnp if xp is None else xp
    if name == "linear":
        return z, jnp.ones_like(z), jnp.zeros_like(z)
    if name == "soft_l1":
        t = 1.0 + z
        return 2.0 * (jnp.sqrt(t) - 1.0), t**-0.5, -0.5 * t**-1.5
    if name == "huber":
        inside = z <= 1.0
        root = jnp.sqrt(jnp.where(inside, 1.0, z))
        return jnp.where(inside, z, 2.0 * root - 1.0), jnp.where(inside, 1.0, 1.0 / root), jnp.where(inside, 0.0, -0.5 / root**3)
    if name == "cauchy":
        t = 1.0 + z
        return jnp.log1p(z), 1.0 / t, -1.0 / t**2
    if name == "arctan":
        t = 1.0 + z * z
        return jnp.arctan(z), 1.0 / t, -2.0 * z / t**2
    raise ValueError(f"unknown loss {name}")


def cost_terms(r, problem: Problem):
    """Each point's share of the loss: 1/2 r^2, or 1/2 C^2 rho((r/C)^2) for a robust loss."""
    if problem.loss == "linear":
        return 0.5 * r * r
    scale = problem.f_scale
    return 0.5 * scale * scale * rho((r / scale) ** 2, problem.loss)[0]


def robust_scaling(r, problem: Problem):
    """scipy's rescaling for a robust loss: r~ = r rho' / s and J~ = s J with
    s = sqrt(rho' + 2 rho'' z), so that J~^T r~ is the gradient of the robust cost and J~^T J~
    its Gauss-Newton Hessian. Returns (r~, s); (r, 1) for the linear loss."""
    if problem.loss == "linear":
        return r, jnp.ones_like(r)
    z = (r / problem.f_scale) ** 2
    _, first, second = rho(z, problem.loss)
    s = jnp.sqrt(jnp.maximum(first + 2.0 * second * z, jnp.finfo(jnp.float64).eps))
    return r * first / s, s


def robust_scaling_numpy(r, loss: str, f_scale):
    """``robust_scaling``'s r~ = r rho' / s for G fits in numpy: r (G, m), f_scale (G,)."""
    if loss == "linear":
        return r
    scale = np.asarray(f_scale)[:, None]
    z = (r / scale) ** 2
    _, first, second = rho(z, loss, np)
    return r * first / np.sqrt(np.maximum(first + 2.0 * second * z, np.finfo(np.float64).eps))


def objective(params, problem: Problem):
    """The value minimized at ``params``: 1/2 sum r^2, or the robust cost (``problem.loss``
    names the loss; ``FitResult.loss`` is the value at the fit)."""
    r = residuals(params, problem)
    return jnp.sum(cost_terms(r, problem))


def project(params, problem: Problem):
    """The point of the box [lower, upper] nearest to ``params``."""
    return jnp.clip(params, problem.lower, problem.upper)


def free_mask(params, grad, problem: Problem):
    """1 for parameters the step may move, 0 for fixed ones and for those held at a bound by
    the gradient (at the lower bound with g > 0, at the upper bound with g < 0)."""
    at_lower = (params <= problem.lower) & (grad > 0)
    at_upper = (params >= problem.upper) & (grad < 0)
    return jnp.where(at_lower | at_upper | fixed(problem), 0.0, 1.0)
