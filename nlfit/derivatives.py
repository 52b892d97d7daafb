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

For many points J is not kept: ``qr_linearize`` forms the R factor of J (and Q^T r) block by
block, a streaming TSQR (Demmel, Grigori, Hoemmen & Langou 2012): each block of QR_BLOCK
rows is stacked under the R of the blocks before it and triangularized again, so the memory
is O(QR_BLOCK x n) and the factor is backward stable (its accuracy follows cond(J), unlike
the Gram matrix J^T J of ``gram``, whose accuracy follows cond(J)^2).
"""

from __future__ import annotations

import numpy as np

from nlfit._jax import jax, jnp
from nlfit.errors import OptionError
from nlfit.options import JAC_MODES
from nlfit.problem import Problem, cost_terms, fixed, objective, residuals, robust_scaling, vmap_groups
from nlfit.programs import Program, compiled, program

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


@program(static_argnames=("mode",))
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
    held = fixed(problem)
    basis = jnp.diag(jnp.where(held, 0.0, steps))  # a fixed parameter is not moved, and its column is zero
    columns = jax.vmap(lambda delta: residuals(params + delta, problem))(basis)
    return jnp.where(held[None, :], 0.0, ((columns - r[None, :]) / steps[:, None]).T)


def central_difference_jacobian(params, problem: Problem, relative_step: float = 6e-6):
    """Central differences, h_j = h (1 + |p_j|) with h ~ eps^(1/3): error ~ 1e-10 relative."""
    steps = relative_step * (1.0 + jnp.abs(params))
    held = fixed(problem)
    basis = jnp.diag(jnp.where(held, 0.0, steps))
    plus = jax.vmap(lambda delta: residuals(params + delta, problem))(basis)
    minus = jax.vmap(lambda delta: residuals(params - delta, problem))(basis)
    return jnp.where(held[None, :], 0.0, ((plus - minus) / (2.0 * steps[:, None])).T)


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
    return jax.hessian(objective)(params, problem)


def _four_jacobians(params, problem: Problem) -> dict:
    return {
        "fwd": jax.jacfwd(residuals)(params, problem),
        "rev": jax.jacrev(residuals)(params, problem),
        "fd": forward_difference_jacobian(params, problem),
        "central": central_difference_jacobian(params, problem),
    }


def compare(params, problem: Problem, rows: int | None = None, columns=None) -> dict:
    """The Jacobian at ``params`` by every method, with differences against forward mode.

    Returns {"jacobians": {mode: J}, "differences": {mode: {"abs": [...], "rel": [...]}},
    "cond": cond(J)}: per parameter (column), the largest absolute difference from forward
    mode and that difference relative to the column's largest entry.

    A problem with a tape (a formula as data, padded to its buckets: ``nlfit.models.padded``)
    runs as one compiled program that every formula of its bucket shares, and ``rows`` and
    ``columns`` pick the real rows and the model's own parameters out of the padded ones;
    any other model runs operation by operation.
    """
    import numpy as np

    if problem.tape is not None:
        found = compiled(_four_jacobians, (), int(np.size(problem.y)), optimize=True)(params, problem)
    else:
        found = _four_jacobians(params, problem)
    keep = (slice(rows), slice(None) if columns is None else np.asarray(columns))
    jacobians = {mode: np.asarray(value)[keep] for mode, value in found.items()}
    reference = jacobians["fwd"]
    with np.errstate(all="ignore"):
        scale = np.max(np.abs(reference), axis=0)
        differences = {}
        for mode in ("rev", "fd", "central"):
            gap = np.max(np.abs(jacobians[mode] - reference), axis=0)
            differences[mode] = {"abs": gap, "rel": np.where(scale > 0, gap / np.where(scale > 0, scale, 1.0), gap)}
    # Non-finite entries are what check-jac exists to find: where (row, column) they are, per mode.
    nonfinite = {mode: np.argwhere(~np.isfinite(j)) for mode, j in jacobians.items()}
    if np.all(np.isfinite(reference)):
        singular = np.linalg.svd(reference, compute_uv=False)
        cond = float(singular[0] / singular[-1]) if singular.size and singular[-1] > 0 else float("inf")
    else:
        cond = float("nan")  # no condition number for a Jacobian with inf or NaN entries
    return {"jacobians": jacobians, "differences": differences, "cond": cond, "nonfinite": nonfinite}


def gram(params, problem: Problem, mode: str, with_residuals: bool = True, current=None):
    """Residuals r, the Gram matrix G = J^T J and the gradient g = J^T r, without keeping J
    (for a robust loss, of the rescaled J~ and r~; r itself is returned unscaled). With
    ``with_residuals`` False (the linear loss), r^T r in place of r: every output is then a sum of
    the one pass, and no vector of m values is written.

    Each column J e_j comes from one JVP (forward mode; forward differences for ``fd``) and
    only its products with r and the other columns are summed, so the m x n Jacobian is
    never stored: the memory is O(m) and XLA fuses the sums into passes over the data. This
    is the form the solvers use for large m, where forming J (and its SVD) costs several
    times the passes the normal equations need.

    ``current`` (with ``with_residuals`` False): also sum (c - r)(c + r), c the residuals at
    ``current``, in the same pass, returned last: twice the decrease of the loss from
    ``current`` to ``params``, taken elementwise (``globalization.decrease``), so that a trial
    point's decrease and its linearization cost one pass over the data, not two.
    """
    n = params.shape[0]
    if mode == "fd":
        r = residuals(params, problem)
        steps = FD_RELATIVE_STEP * (1.0 + jnp.abs(params))
        steps = (params + steps) - params
        columns = [(residuals(params.at[j].add(steps[j]), problem) - r) / steps[j] for j in range(n)]
    else:  # one JVP per column, each recomputing what it needs inside the pass that sums it
        # (``jax.linearize`` stores the model's intermediate values instead: 85 ms against
        # 15 ms for 10^7 rational points)
        r = residuals(params, problem)
        columns = [jax.jvp(lambda p: residuals(p, problem), (params,), (jnp.zeros(n).at[j].set(1.0),))[1] for j in range(n)]
    model_r, scale = robust_scaling(r, problem)
    if problem.loss != "linear":
        columns = [column * scale for column in columns]
    more = [] if with_residuals else [r * r]
    if current is not None:
        before = residuals(current, problem)
        more.append((before - r) * (before + r))
    matrix, grad, *rest = normal_sums(columns, model_r, more)
    return (r if with_residuals else rest[0], matrix, grad, *rest[1:])


def normal_sums(columns, r, more=()):
    """J^T J and J^T r from J's columns (a list of n vectors), and the sums of ``more``
    vectors, all in one pass over the points (``_sums``)."""
    n = len(columns)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    sums = _sums([columns[i] * columns[j] for i, j in pairs] + [column * r for column in columns] + list(more))
    entries = dict(zip(pairs, sums, strict=False))
    matrix = jnp.stack([jnp.stack([entries[min(i, j), max(i, j)] for j in range(n)]) for i in range(n)])
    return matrix, jnp.stack(sums[len(pairs) : len(pairs) + n]), *sums[len(pairs) + n :]


def _sums(terms):
    """The sums of several vectors of one shape, as one variadic reduction: XLA emits a single
    loop over the points for all of them (separate dot products are separate loops, each
    reading its columns again; under ``vmap`` over many small problems that took 1.4x as long)."""
    zeros = tuple(jnp.zeros((), dtype=term.dtype) for term in terms)
    return list(jax.lax.reduce(tuple(terms), zeros, lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)), (terms[0].ndim - 1,)))


gram_jit = Program(gram, ("mode", "with_residuals"))


QR_BLOCK = 4096


def _blocks(problem: Problem, block: int):
    """x, y, sigma cut into (blocks, block, ...) pieces; the last block is padded with copies of
    the last point at sigma = inf, which contribute exactly nothing."""
    m = problem.y.shape[0]
    count = -(-m // block)
    pad = count * block - m

    def cut(values, fill=None):
        values = jnp.asarray(values)
        if pad:
            tail = jnp.repeat(values[-1:], pad, axis=0) if fill is None else jnp.full((pad, *values.shape[1:]), fill, dtype=values.dtype)
            values = jnp.concatenate([values, tail], axis=0)
        return values.reshape(count, block, *values.shape[1:])

    return cut(problem.x), cut(problem.y), cut(problem.sigma, jnp.inf), m


def qr_linearize(params, problem: Problem, mode: str, block: int = QR_BLOCK):
    """Residuals r (m,), the n x n factor R of J (R^T R = J^T J), Q^T r and the gradient J^T r
    (for a robust loss, of the rescaled J~ and r~; r itself is returned unscaled), without
    ever holding more than ``block`` rows of J.

    Each block's rows [J_b | r_b] are stacked under the running [R | Q^T r] and reduced by a
    Householder QR (only its R is kept: the last column carries Q^T r along)."""
    import dataclasses

    n = params.shape[0]
    xs, ys, sigmas, m = _blocks(problem, block)
    jac_mode = "fwd" if mode == "fd" else mode  # finite differences per block would cost n passes too

    def body(carry, piece):
        factor, grad = carry
        x, y, sigma = piece
        part = dataclasses.replace(problem, x=x, y=y, sigma=sigma)
        r, jac = jacobian(params, part, jac_mode)
        model_r, scaling = robust_scaling(r, part)
        jac = jac * scaling[:, None]
        stacked = jnp.concatenate([factor, jnp.concatenate([jac, model_r[:, None]], axis=1)], axis=0)
        factor = jnp.linalg.qr(stacked, mode="r")[: n + 1]
        return (factor, grad + jac.T @ model_r), r

    start = (jnp.zeros((n + 1, n + 1)), jnp.zeros(n))
    (factor, grad), pieces = jax.lax.scan(body, start, (xs, ys, sigmas))
    return pieces.reshape(-1)[:m], factor[:n, :n], factor[:n, n], grad


qr_linearize_jit = Program(qr_linearize, ("mode", "block"))


def influence_gram(params, problem: Problem, block: int = QR_BLOCK):
    """B = J^T diag((rho'(z) r)^2) J, block by block: the middle of the sandwich covariance
    of a robust loss (a sum of squares that is never inverted, so its Gram form is accurate)."""
    import dataclasses

    from nlfit.problem import rho

    xs, ys, sigmas, _ = _blocks(problem, block)
    n = params.shape[0]

    def body(total, piece):
        x, y, sigma = piece
        part = dataclasses.replace(problem, x=x, y=y, sigma=sigma)
        r, jac = jacobian(params, part, "fwd")
        first = rho((r / part.f_scale) ** 2, problem.loss)[1]
        influence = jac * (first * r)[:, None]
        return total + influence.T @ influence, None

    total, _ = jax.lax.scan(body, jnp.zeros((n, n)), (xs, ys, sigmas))
    return total


def _jacobian_batch(params, problems: Problem, mode: str):
    return vmap_groups(lambda p, problem: jacobian(p, problem, mode), 0, 1)(params, problems)


def jacobian_batch(params, problems: Problem, mode: str):
    """``jacobian`` of G problems at once (leaves with a leading G axis)."""
    return compiled(_jacobian_batch, ("mode",), int(np.prod(np.shape(problems.y))), optimize=problems.tape is not None)(params, problems, mode)


@program(static_argnames=("mode",))
def qr_linearize_batch(params, problems: Problem, mode: str):
    """``qr_linearize`` of G problems at once."""
    return vmap_groups(lambda p, problem: qr_linearize(p, problem, mode), 0, 1)(params, problems)


@program
def residuals_batch(params, problems: Problem):
    """The residuals (G, L) of G problems at once."""
    return vmap_groups(residuals, 0, 1)(params, problems)


@program
def influence_gram_batch(params, problems: Problem):
    """``influence_gram`` of G problems at once."""
    return vmap_groups(influence_gram, 0, 1)(params, problems)
