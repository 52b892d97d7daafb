"""Linear algebra shared by the directions: eigen forms, damped steps, trust-region steps.

All work is done in *scaled* variables z = D p, where D is a positive diagonal (Moré 1978:
D_j = running maximum of the norm of Jacobian column j). In them the quadratic model is

    m(z) = g~^T z + 1/2 z^T B~ z,   g~ = D^-1 g,  B~ = D^-1 B D^-1,

with B = J^T J (Gauss-Newton, Levenberg-Marquardt) or the exact Hessian H (Newton).

*Eigen form.* Every solver below works from B~ = Q diag(e) Q^T and c = Q^T g~:

- Gauss-Newton / LM: from the thin SVD J~ = U S V^T, so e = S^2, c = S (U^T r), Q = V.
  J^T J is never formed, so the step is as accurate as a QR/SVD least-squares solve
  (its error grows with cond(J), not cond(J)^2). Singular values below
  eps * max(m, n) * S_max are treated as zero (pseudo-inverse).
- Newton: from ``eigh`` of the scaled Hessian; e may be negative.

*Damped step* for a damping lambda >= 0: z = -Q c / (e + lambda). At lambda = 0 this is
the Gauss-Newton (or Newton) step, the minimum-norm one when B~ is singular.

*Trust-region step* (the exact subproblem, Moré & Sorensen 1983; Nocedal & Wright,
Numerical Optimization, 2nd ed., ch. 4.3): minimize m(z) subject to ||z|| <= radius.
The solution is the damped step whose lambda >= max(0, -e_min) makes ||z(lambda)|| equal to
the radius (or lambda = 0 when the full step already fits). lambda is found by Newton's
method on psi(lambda) = 1/||z(lambda)|| - 1/radius, which is concave and increasing, so
the iteration started left of the root converges monotonically. In the hard case (g~ has
no component along the eigenvector of e_min) the step is completed along that
eigenvector to reach the boundary.

*Dogleg* (Powell 1970): the path from the Cauchy point -(|g~|^2 / g~^T B~ g~) g~ to the
Gauss-Newton step, cut at the radius.

*Cauchy step*: the minimizer of m along -g~ inside the radius.
"""

from __future__ import annotations

from typing import NamedTuple

from nlfit._jax import jax, jnp

_EPS = float(jnp.finfo(jnp.float64).eps)


class EigenForm(NamedTuple):
    eigvals: jax.Array  # e, curvature along each basis vector
    coeffs: jax.Array  # c = Q^T g~
    basis: jax.Array  # Q, columns are the basis vectors (n x k)


def eigen_form_from_jacobian(scaled_jac, residuals) -> EigenForm:
    """Eigen form of B~ = J~^T J~ and g~ = J~^T r from the thin SVD of J~."""
    u, s, vt = jnp.linalg.svd(scaled_jac, full_matrices=False)
    cutoff = _EPS * max(scaled_jac.shape) * jnp.max(s)
    s = jnp.where(s > cutoff, s, 0.0)
    return EigenForm(eigvals=s * s, coeffs=s * (u.T @ residuals), basis=vt.T)


def eigen_form_from_gram(scaled_gram, scaled_grad) -> EigenForm:
    """Eigen form of B~ = J~^T J~ given as a matrix (the normal equations, for large m).

    Eigenvalues below eps * n * e_max are treated as zero, as the SVD form does with its
    singular values (there the cut is relative to S_max, here to S_max^2).
    """
    form = eigen_form_from_hessian(scaled_gram, scaled_grad)
    cutoff = _EPS * scaled_gram.shape[0] * jnp.max(form.eigvals)
    keep = form.eigvals > cutoff
    return EigenForm(jnp.where(keep, form.eigvals, 0.0), jnp.where(keep, form.coeffs, 0.0), form.basis)


def eigen_form_from_hessian(scaled_hess, scaled_grad) -> EigenForm:
    eigvals, basis = jnp.linalg.eigh(0.5 * (scaled_hess + scaled_hess.T))
    return EigenForm(eigvals=eigvals, coeffs=basis.T @ scaled_grad, basis=basis)


def _safe_coefficients(form: EigenForm, damping):
    """-c / (e + damping), with components of (numerically) zero curvature dropped."""
    denominators = form.eigvals + damping
    tiny = _EPS * form.eigvals.shape[0] * jnp.maximum(jnp.max(jnp.abs(form.eigvals)), jnp.finfo(jnp.float64).tiny)
    ok = jnp.abs(denominators) > tiny
    return jnp.where(ok, -form.coeffs / jnp.where(ok, denominators, 1.0), 0.0)


def damped_step(form: EigenForm, damping):
    """z = -(B~ + damping I)^+ g~ in scaled variables."""
    return form.basis @ _safe_coefficients(form, damping)


def modified_newton_step(form: EigenForm, relative_floor: float = 1e-8):
    """-Q diag(1 / max(|e|, floor)) c: a descent direction when B~ is indefinite.

    Eigenvalues are replaced by their absolute values, floored at ``relative_floor`` times
    the largest (Nocedal & Wright ch. 3.4, 'modified Newton' by eigenvalue modification).
    """
    floor = relative_floor * jnp.maximum(jnp.max(jnp.abs(form.eigvals)), jnp.finfo(jnp.float64).tiny)
    modified = jnp.maximum(jnp.abs(form.eigvals), floor)
    return form.basis @ (-form.coeffs / modified)


def trust_region_step(form: EigenForm, radius, max_iterations: int = 60, rtol: float = 1e-10):
    """Exact solution of min m(z), ||z|| <= radius. Returns (z, lambda)."""
    eigvals, coeffs = form.eigvals, form.coeffs
    scale = jnp.maximum(jnp.max(jnp.abs(eigvals)), jnp.finfo(jnp.float64).tiny)
    smallest = jnp.argmin(eigvals)
    lower = jnp.maximum(0.0, -eigvals[smallest])
    coeff_norm = jnp.linalg.norm(coeffs)
    on_pole = (lower > 0) & (jnp.abs(coeffs[smallest]) > 1e-12 * coeff_norm)

    partial = _safe_coefficients(form, lower)  # components along e_min dropped when lower = -e_min
    partial_norm = jnp.linalg.norm(partial)
    interior = (lower == 0) & (partial_norm <= radius)
    hard_case = (lower > 0) & ~on_pole & (partial_norm <= radius)

    def psi_and_slope(damping):
        y = _safe_coefficients(form, damping)
        norm_y = jnp.linalg.norm(y)
        denominators = eigvals + damping
        safe = jnp.where(jnp.abs(denominators) > 0, denominators, 1.0)
        # d||y||/dlambda = -sum(y_i^2 / (e_i + lambda)) / ||y||
        dnorm = -jnp.sum(y * y / safe) / jnp.maximum(norm_y, jnp.finfo(jnp.float64).tiny)
        psi = 1.0 / jnp.maximum(norm_y, jnp.finfo(jnp.float64).tiny) - 1.0 / radius
        slope = -dnorm / jnp.maximum(norm_y * norm_y, jnp.finfo(jnp.float64).tiny)
        return psi, slope, norm_y

    def cond(carry):
        damping, iteration, done = carry
        return (~done) & (iteration < max_iterations)

    def body(carry):
        damping, iteration, _ = carry
        psi, slope, norm_y = psi_and_slope(damping)
        new = damping - psi / jnp.where(slope > 0, slope, jnp.inf)
        new = jnp.maximum(new, lower)
        done = (jnp.abs(norm_y - radius) <= rtol * radius) | (new == damping)
        return jnp.where(done, damping, new), iteration + 1, done

    start = lower + jnp.where(on_pole, 1e-14 * scale, 0.0)
    damping, _, _ = jax.lax.while_loop(cond, body, (start, 0, interior | hard_case))
    damping = jnp.where(interior, 0.0, jnp.where(hard_case, lower, damping))

    y = _safe_coefficients(form, damping)
    # Hard case: add tau * (eigenvector of e_min) to reach the boundary.
    tau = jnp.sqrt(jnp.maximum(radius * radius - jnp.dot(y, y), 0.0))
    y = y.at[smallest].add(jnp.where(hard_case, tau, 0.0))
    return form.basis @ y, damping


def dogleg_step(form: EigenForm, radius):
    """Powell's dogleg in scaled variables. Returns z."""
    gn_coefficients = _safe_coefficients(form, 0.0)
    gn_norm = jnp.linalg.norm(gn_coefficients)
    grad_norm_sq = jnp.dot(form.coeffs, form.coeffs)
    curvature = jnp.dot(form.eigvals * form.coeffs, form.coeffs)
    cauchy_length = grad_norm_sq / jnp.where(curvature > 0, curvature, jnp.inf)
    cauchy = -cauchy_length * form.coeffs
    cauchy_norm = jnp.linalg.norm(cauchy)
    grad_norm = jnp.sqrt(grad_norm_sq)
    along_gradient = -radius * form.coeffs / jnp.maximum(grad_norm, jnp.finfo(jnp.float64).tiny)
    # Between the Cauchy point and the GN step: the tau in [0, 1] with ||cauchy + tau d|| = radius.
    leg = gn_coefficients - cauchy
    a = jnp.dot(leg, leg)
    b = 2.0 * jnp.dot(cauchy, leg)
    c = cauchy_norm * cauchy_norm - radius * radius
    tau = (-b + jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))) / jnp.maximum(2.0 * a, jnp.finfo(jnp.float64).tiny)
    on_leg = cauchy + jnp.clip(tau, 0.0, 1.0) * leg
    y = jnp.where(
        gn_norm <= radius,
        gn_coefficients,
        jnp.where((cauchy_norm >= radius) | (curvature <= 0), along_gradient, on_leg),
    )
    return form.basis @ y


def cauchy_step(grad, curvature, radius):
    """Minimizer of g^T s + 1/2 s^T B s along -g with ||s|| <= radius; curvature = g^T B g."""
    grad_norm = jnp.linalg.norm(grad)
    boundary = radius / jnp.maximum(grad_norm, jnp.finfo(jnp.float64).tiny)
    length = jnp.where(curvature > 0, jnp.minimum(grad_norm * grad_norm / jnp.where(curvature > 0, curvature, 1.0), boundary), boundary)
    return -length * grad


# Small normal equations by closed-form Cholesky (factorization "cholesky", LM on batches).
#
# For n <= SMALL_PARAMETERS the factor is written out entry by entry: every entry is a scalar
# expression of the matrix's entries, so under ``vmap`` a batch of G problems becomes n(n+1)/2
# vector operations of length G that XLA fuses, instead of G calls of a general routine
# (eigh, SVD) on n x n matrices. The matrices here are scaled Gram matrices J~^T J~ (positive
# semidefinite) plus a damping; a pivot that is not positive makes the factor NaN, and one
# below RELATIVE_PIVOT of its diagonal entry (singular to working precision) makes ``ok``
# False; the callers then use ``_regular``'s damping instead.

SMALL_PARAMETERS = 10
# A pivot below this fraction of its diagonal entry is rounding: the columns of J~ are
# dependent to working precision (cond(J) beyond about 1e6.5), and the factor is refused.
RELATIVE_PIVOT = 1e3 * _EPS


def _cholesky(matrix):
    """(L as a list of rows of scalars, ok): L L^T = matrix, for a small static n."""
    n = matrix.shape[-1]
    tiny = jnp.finfo(jnp.float64).tiny
    factor = [[None] * n for _ in range(n)]
    ok = jnp.asarray(True)
    for j in range(n):
        pivot = matrix[j, j] - sum((factor[j][k] * factor[j][k] for k in range(j)), 0.0)
        ok = ok & (pivot > tiny) & (pivot > RELATIVE_PIVOT * matrix[j, j])
        diagonal = jnp.sqrt(jnp.where(pivot > tiny, pivot, jnp.nan))
        factor[j][j] = diagonal
        for i in range(j + 1, n):
            factor[i][j] = (matrix[i, j] - sum((factor[i][k] * factor[j][k] for k in range(j)), 0.0)) / diagonal
    return factor, ok


def _forward(factor, rhs):
    """L^-1 rhs for the lower triangle ``factor``."""
    out = []
    for i in range(len(factor)):
        out.append((rhs[i] - sum((factor[i][k] * out[k] for k in range(i)), 0.0)) / factor[i][i])
    return out


def _backward(factor, rhs):
    """L^-T rhs."""
    n = len(factor)
    out = [None] * n
    for i in reversed(range(n)):
        out[i] = (rhs[i] - sum((factor[k][i] * out[k] for k in range(i + 1, n)), 0.0)) / factor[i][i]
    return out


def _shifted_solve(matrix, grad, damping):
    """z = -(A + damping I)^-1 g and q = L^-1 z with L the Cholesky factor of A + damping I,
    and whether the factor exists."""
    n = matrix.shape[-1]
    factor, ok = _cholesky(matrix + damping * jnp.eye(n))
    step = jnp.stack(_backward(factor, _forward(factor, [-grad[i] for i in range(n)])))
    q = jnp.stack(_forward(factor, [step[i] for i in range(n)]))
    return step, q, ok


def _regular(matrix):
    """A with a unit diagonal entry where its row is zero (a parameter that may not move: its
    gradient entry is zero too, so its step is exactly zero), and the damping used where A
    is singular to working precision: sqrt(eps) times its largest diagonal entry. Along a
    null direction of A, g has only rounding (eps |g|); divided by that damping it stays
    sqrt(eps) of the step, so the parameters do not drift along it (the SVD path drops such
    directions; a damping of eps A would let rounding make a step of full size there)."""
    diagonal = jnp.diagonal(matrix)
    empty = diagonal <= 0
    matrix = matrix + jnp.diag(jnp.where(empty, 1.0, 0.0))
    return matrix, jnp.sqrt(_EPS) * jnp.max(jnp.where(empty, 0.0, diagonal))


def normal_damped_step(matrix, grad, damping):
    """z = -(A + damping I)^-1 g by Cholesky (A = J~^T J~, n small); where A + damping I is
    singular to working precision, with ``_regular``'s damping instead."""
    matrix, shift = _regular(matrix)
    step, _, ok = _shifted_solve(matrix, grad, damping)
    fallback, _, _ = _shifted_solve(matrix, grad, jnp.maximum(damping, shift))
    return jnp.where(ok, step, fallback)


def normal_trust_region_step(matrix, grad, radius, max_iterations: int = 30, rtol: float = 1e-10):
    """The exact trust-region step of the Gauss-Newton model (A positive semidefinite, n
    small): Moré's (1983) Newton iteration on 1/||z(lambda)|| - 1/radius with Cholesky
    factors, lambda <- lambda + (||z|| / ||q||)^2 (||z|| - radius) / radius, q = L^-1 z. It
    starts at lambda = 0 (where A is singular, at ``_regular``'s damping), left of the root,
    so it rises monotonically. Returns (z, lambda)."""
    matrix, shift = _regular(matrix)
    step, q, ok = _shifted_solve(matrix, grad, 0.0)
    shifted_step, shifted_q, _ = _shifted_solve(matrix, grad, shift)
    start = jnp.where(ok, 0.0, shift)
    step, q = jnp.where(ok, step, shifted_step), jnp.where(ok, q, shifted_q)
    norm = jnp.linalg.norm(step)
    interior = norm <= radius

    def cond(carry):
        _, _, _, iteration, done = carry
        return (~done) & (iteration < max_iterations)

    def body(carry):
        damping, step, q, iteration, _ = carry
        norm = jnp.linalg.norm(step)
        q_norm = jnp.maximum(jnp.linalg.norm(q), jnp.finfo(jnp.float64).tiny)
        new = damping + (norm / q_norm) ** 2 * (norm - radius) / radius
        new = jnp.maximum(new, start)
        new_step, new_q, ok = _shifted_solve(matrix, grad, new)
        usable = ok & jnp.all(jnp.isfinite(new_step))
        done = (jnp.abs(norm - radius) <= rtol * radius) | (new == damping) | ~usable
        keep = lambda a, b: jnp.where(usable, a, b)  # noqa: E731
        return keep(new, damping), keep(new_step, step), keep(new_q, q), iteration + 1, done

    damping, step, _, _, _ = jax.lax.while_loop(cond, body, (start, step, q, 0, interior | ~jnp.all(jnp.isfinite(step))))
    return step, damping
