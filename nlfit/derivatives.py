"""Jacobian, gradient and Hessian of the residuals, by AD (JAX) or finite differences.

Modes for the Jacobian J = dr/dparams (m residuals, n parameters):

``fwd``
    forward mode, one JVP per parameter (``jax.jacfwd``): cost ~ n residual passes.
``rev``
    reverse mode, one VJP per residual (``jax.jacrev``): cost ~ m backward passes.
``auto``
    forward when m >= n (the usual tall least-squares Jacobian), reverse otherwise. As the
    lecture puts it: one input and many outputs favours forward mode, many inputs and one
    output favours reverse mode.
``fd``
    forward differences with the step of Walker & Pernice (1998),
    h_j = 1e-8 (1 + |p_j|), for comparison: error ~ 1e-8 relative, versus round-off only
    for AD.

The gradient of the loss 1/2 ||r||^2 is g = J^T r. Gradient descent gets it by one reverse
pass (``jax.vjp``) without forming J. Newton's Hessian is the exact one,
H = J^T J + sum_i r_i (d^2 r_i / dp^2), from ``jax.hessian`` of the loss.
"""

from __future__ import annotations

from functools import partial

from nlfit._jax import jax, jnp
from nlfit.errors import OptionError
from nlfit.problem import Problem, cost_terms, loss, residuals, robust_scaling

JAC_MODES = ("auto", "fwd", "rev", "fd")
FD_RELATIVE_STEP = 1e-8


def resolve_mode(mode: str, n_residuals: int, n_params: int) -> str:
    if mode not in JAC_MODES:
        raise OptionError(f"--jac must be one of {', '.join(JAC_MODES)}; got '{mode}'")
    if mode == "auto":
        return "fwd" if n_residuals >= n_params else "rev"
    return mode


def jacobian(params, problem: Problem, mode: str):
    """Residuals and Jacobian at ``params``: (r of shape (m,), J of shape (m, n))."""
    r = residuals(params, problem)
    if mode == "fwd":
        jac = jax.jacfwd(residuals)(params, problem)
    elif mode == "rev":
        jac = jax.jacrev(residuals)(params, problem)
    elif mode == "fd":
        jac = forward_difference_jacobian(params, problem, r)
    else:
        raise OptionError(f"unresolved Jacobian mode '{mode}'")
    return r, jac


@partial(jax.jit, static_argnames=("mode",))
def jacobian_jit(params, problem: Problem, mode: str):
    """``jacobian`` compiled once per problem shape (the persistent cache keeps it across runs)."""
    return jacobian(params, problem, mode)


def forward_difference_jacobian(params, problem: Problem, r=None, relative_step: float = FD_RELATIVE_STEP):
    """Columns (r(p + h_j e_j) - r(p)) / h_j with the Walker-Pernice step h_j = h (1 + |p_j|)."""
    if r is None:
        r = residuals(params, problem)
    steps = relative_step * (1.0 + jnp.abs(params))
    # The step actually taken is what the floating-point sum moved by (Dennis & Schnabel).
    shifted = params + steps
    steps = shifted - params
    basis = jnp.diag(steps)
    columns = jax.vmap(lambda delta: residuals(params + delta, problem))(basis)
    return ((columns - r[None, :]) / steps[:, None]).T


def central_difference_jacobian(params, problem: Problem, relative_step: float = 6e-6):
    """Central differences, h_j = h (1 + |p_j|) with h ~ eps^(1/3): error ~ 1e-10 relative."""
    steps = relative_step * (1.0 + jnp.abs(params))
    basis = jnp.diag(steps)
    plus = jax.vmap(lambda delta: residuals(params + delta, problem))(basis)
    minus = jax.vmap(lambda delta: residuals(params - delta, problem))(basis)
    return ((plus - minus) / (2.0 * steps[:, None])).T


def value_and_grad(params, problem: Problem):
    """Residuals, loss and its gradient by one reverse pass (no Jacobian is formed); with a
    robust loss the gradient is J^T (rho' r)."""
    r, pullback = jax.vjp(lambda p: residuals(p, problem), params)
    model_r, scale = robust_scaling(r, problem)
    (grad,) = pullback(model_r * scale)  # r~ s = rho'(z) r
    return r, jnp.sum(cost_terms(r, problem)), grad


def jvp(params, problem: Problem, direction):
    """J @ direction by one forward pass."""
    return jax.jvp(lambda p: residuals(p, problem), (params,), (direction,))[1]


def hessian(params, problem: Problem):
    """The exact Hessian of the loss, J^T J + sum_i r_i Hess(r_i)."""
    return jax.hessian(loss)(params, problem)


def compare(params, problem: Problem) -> dict:
    """The Jacobian at ``params`` by every method, with differences against forward mode.

    Returns {"jacobians": {mode: J}, "differences": {mode: {"abs": [...], "rel": [...]}},
    "cond": cond(J)}: per parameter (column), the largest absolute difference from forward
    mode and that difference relative to the column's largest entry.
    """
    import numpy as np

    jacobians = {
        "fwd": np.asarray(jax.jacfwd(residuals)(params, problem)),
        "rev": np.asarray(jax.jacrev(residuals)(params, problem)),
        "fd": np.asarray(forward_difference_jacobian(params, problem)),
        "central": np.asarray(central_difference_jacobian(params, problem)),
    }
    reference = jacobians["fwd"]
    scale = np.max(np.abs(reference), axis=0)
    differences = {}
    for mode in ("rev", "fd", "central"):
        gap = np.max(np.abs(jacobians[mode] - reference), axis=0)
        differences[mode] = {"abs": gap, "rel": np.where(scale > 0, gap / np.where(scale > 0, scale, 1.0), gap)}
    singular = np.linalg.svd(reference, compute_uv=False)
    cond = float(singular[0] / singular[-1]) if singular.size and singular[-1] > 0 else float("inf")
    return {"jacobians": jacobians, "differences": differences, "cond": cond}


def gram(params, problem: Problem, mode: str):
    """Residuals r, the Gram matrix G = J^T J and the gradient g = J^T r, without keeping J
    (for a robust loss, of the rescaled J~ and r~; r itself is returned unscaled).

    Each column J e_j comes from one JVP (forward mode; forward differences for ``fd``) and
    only its products with r and the other columns are summed, so the m x n Jacobian is
    never stored: the memory is O(m) and XLA fuses the sums into passes over the data. This
    is the form the solvers use for large m, where forming J (and its SVD) costs several
    times the passes the normal equations need.
    """
    n = params.shape[0]
    if mode == "fd":
        r = residuals(params, problem)
        steps = FD_RELATIVE_STEP * (1.0 + jnp.abs(params))
        steps = (params + steps) - params
        columns = [(residuals(params.at[j].add(steps[j]), problem) - r) / steps[j] for j in range(n)]
    else:
        r, linear = jax.linearize(lambda p: residuals(p, problem), params)
        columns = [linear(jnp.zeros(n).at[j].set(1.0)) for j in range(n)]
    model_r, scale = robust_scaling(r, problem)
    if problem.loss != "linear":
        columns = [column * scale for column in columns]
    entries = {(i, j): jnp.dot(columns[i], columns[j]) for i in range(n) for j in range(i, n)}
    matrix = jnp.stack([jnp.stack([entries[min(i, j), max(i, j)] for j in range(n)]) for i in range(n)])
    return r, matrix, jnp.stack([jnp.dot(column, model_r) for column in columns])


gram_jit = jax.jit(gram, static_argnames=("mode",))
