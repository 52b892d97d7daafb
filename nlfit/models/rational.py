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
