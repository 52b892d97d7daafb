"""Rational models.

``rational``: the reciprocal quadratic f(x) = 1 / (c0 + c1 x + c2 x^2) (the seed lecture's model).

``rational:P/Q``: f(x) = (a0 + a1 x + ... + aP x^P) / (1 + b1 x + ... + bQ x^Q), NIST's
normalization (the constant of the denominator is 1).

Both get a default start from the linearized problem: multiplying through by the
denominator gives equations that are linear in the parameters,

    lecture:  y (c0 + c1 x + c2 x^2) = 1
    P/Q:      a0 + ... + aP x^P - y (b1 x + ... + bQ x^Q) = y

solved in the least-squares sense (an SVD-based lstsq). On the lecture's Runge data this
start lies in the basin of the nonlinear optimum, so no p0 is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlfit._jax import jnp
from nlfit.models.base import Model


def _powers(x, degree, start=0):
    return np.column_stack([x**k for k in range(start, degree + 1)]) if degree >= start else np.zeros((len(x), 0))


def _linearized(x, y, columns, rhs, fallback: int):
    """Least-squares solution of the linearized equations, solved in t = x / s with s a power
    of two near max |x| (so x = 1e300 does not overflow x^2), then mapped back: a column
    built from t^k gets its coefficient divided by s^k. ``columns(t)`` -> (design, powers).
    A system that still is not finite gives the start 1 for every parameter (no crash, and
    no LAPACK message on the terminal)."""
    largest = float(np.max(np.abs(x))) if np.size(x) else 1.0
    scale = 2.0 ** np.round(np.log2(largest)) if np.isfinite(largest) and largest > 0 else 1.0
    with np.errstate(all="ignore"):
        design, powers = columns(np.asarray(x) / scale)
        target = rhs
        if np.all(np.isfinite(design)) and np.all(np.isfinite(target)):
            try:
                solution, *_ = np.linalg.lstsq(design, target, rcond=None)
                solution = solution / scale ** np.asarray(powers, dtype=float)
                if np.all(np.isfinite(solution)):
                    return solution
            except np.linalg.LinAlgError:
                pass
    return np.ones(fallback)


def _linearized_groups(x, y, real, columns, rhs, fallback: int):
    """``_linearized`` of B groups at once: x, y and the real-row mask (B, L); ``columns(t, y)``
    -> (design (B, L, n), powers), ``rhs(y)`` -> (B, L). One SVD of each design, all in one
    call (lstsq's solution: singular values below eps max(rows, n) of the largest dropped),
    instead of a Python call per group (100,000 groups: 9 s). None where x has several
    columns, or where LAPACK fails on one of them (the caller then goes group by group)."""
    if np.ndim(x) != 2:
        return None
    real = np.asarray(real, dtype=bool)
    with np.errstate(all="ignore"):
        largest = np.max(np.where(real, np.abs(x), 0.0), axis=1)
        usable = np.isfinite(largest) & (largest > 0)
        scale = np.where(usable, 2.0 ** np.round(np.log2(np.where(usable, largest, 1.0))), 1.0)
        design, powers = columns(np.asarray(x) / scale[:, None], y)
        design, target = np.where(real[..., None], design, 0.0), np.where(real, rhs(y), 0.0)
        finite = np.all(np.isfinite(design), axis=(1, 2)) & np.all(np.isfinite(target), axis=1)
        design, target = np.where(finite[:, None, None], design, 0.0), np.where(finite[:, None], target, 0.0)
        try:
            left, singular, right = np.linalg.svd(design, full_matrices=False)
        except np.linalg.LinAlgError:
            return None
        rows = np.maximum(np.count_nonzero(real, axis=1), design.shape[2])
        kept = singular > np.finfo(np.float64).eps * rows[:, None] * singular[:, :1]
        coefficients = np.where(kept, np.einsum("blk,bl->bk", left, target) / np.where(kept, singular, 1.0), 0.0)
        solution = np.einsum("bkn,bk->bn", right, coefficients) / scale[:, None] ** np.asarray(powers, dtype=float)
        good = finite & np.all(np.isfinite(solution), axis=1)
    return np.where(good[:, None], solution, np.ones(fallback))


def _powers_groups(t, degree, start=0):
    return np.stack([t**k for k in range(start, degree + 1)], axis=-1) if degree >= start else np.zeros((*np.shape(t), 0))


@dataclass(frozen=True)
class ReciprocalQuadratic(Model):
    spec: str = "rational"

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("c0", "c1", "c2")

    def predict(self, params, x):
        return 1.0 / (params[0] + params[1] * x + params[2] * x * x)

    def denominators(self, params, x):
        return [params[0] + params[1] * x + params[2] * x * x]

    def default_p0(self, x, y):
        return _linearized(x, y, lambda t: (_powers(t, 2) * y[:, None], [0, 1, 2]), np.ones_like(y), 3)

    def default_p0_groups(self, x, y, real):
        """``default_p0`` of B groups (B, L) at once (``_linearized_groups``)."""
        if type(self).default_p0 is not ReciprocalQuadratic.default_p0:  # a subclass with a start of its own
            return None
        return _linearized_groups(x, y, real, lambda t, y: (_powers_groups(t, 2) * y[..., None], [0, 1, 2]), np.ones_like, 3)


@dataclass(frozen=True)
class RationalPQ(Model):
    numerator_degree: int
    denominator_degree: int
    spec: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"a{i}" for i in range(self.numerator_degree + 1)) + tuple(f"b{i}" for i in range(1, self.denominator_degree + 1))

    @property
    def is_linear(self) -> bool:
        return self.denominator_degree == 0

    @property
    def linear_params(self) -> tuple[bool, ...]:
        return (True,) * (self.numerator_degree + 1) + (False,) * self.denominator_degree

    def predict(self, params, x):
        p = self.numerator_degree
        numerator = jnp.full(jnp.shape(x), params[p])
        for k in range(p - 1, -1, -1):
            numerator = numerator * x + params[k]
        denominators = self.denominators(params, x)
        return numerator / denominators[0] if denominators else numerator

    def denominators(self, params, x):
        p, q = self.numerator_degree, self.denominator_degree
        denominator = jnp.zeros(jnp.shape(x))
        for k in range(p + q, p, -1):
            denominator = (denominator + params[k]) * x
        return [1.0 + denominator] if q else []

    def default_p0(self, x, y):
        p, q = self.numerator_degree, self.denominator_degree

        def columns(t):
            design = np.hstack([_powers(t, p), -_powers(t, q, 1) * y[:, None]])
            return design, [*range(p + 1), *range(1, q + 1)]

        return _linearized(x, y, columns, y, p + q + 1)

    def default_p0_groups(self, x, y, real):
        """``default_p0`` of B groups (B, L) at once (``_linearized_groups``)."""
        if type(self).default_p0 is not RationalPQ.default_p0:  # a subclass with a start of its own
            return None
        p, q = self.numerator_degree, self.denominator_degree

        def columns(t, y):
            design = np.concatenate([_powers_groups(t, p), -_powers_groups(t, q, 1) * y[..., None]], axis=-1)
            return design, [*range(p + 1), *range(1, q + 1)]

        return _linearized_groups(x, y, real, columns, lambda y: y, p + q + 1)
