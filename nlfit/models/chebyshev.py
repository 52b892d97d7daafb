"""Chebyshev series f(x) = sum_k c_k T_k(t), t = (2x - (lo + hi)) / (hi - lo).

x is mapped affinely from the data's range [lo, hi] onto [-1, 1], as numpy.polynomial's
``Chebyshev.fit`` does, so the coefficients match its ``coef``. T_k comes from the
three-term recurrence T_{k+1} = 2 t T_k - T_{k-1} (the lecture's ``vander_chebyshev``).
"""

from __future__ import annotations

from dataclasses import dataclass

from nlfit._jax import jnp
from nlfit.models.base import Series


@dataclass(frozen=True)
class Chebyshev(Series):
    degree: int
    lo: float = -1.0
    hi: float = 1.0
    spec: str = ""

    def predict(self, params, x):
        t = (2.0 * x - (self.lo + self.hi)) / (self.hi - self.lo)
        previous, current = jnp.ones_like(t), t
        value = params[0] * previous
        if self.degree >= 1:
            value = value + params[1] * current
        for k in range(2, self.degree + 1):
            previous, current = current, 2.0 * t * current - previous
            value = value + params[k] * current
        return value

    def to_json(self) -> dict:
        return {"spec": self.spec, "domain": [self.lo, self.hi]}


@dataclass(frozen=True)
class ChebyshevOnDomain(Series):
    """The Chebyshev series of ``degree`` whose last two parameters are the domain [lo, hi]
    (held fixed): the padded form of ``Chebyshev`` (``nlfit.models.padded``), one program for
    every degree of its bucket and every data range."""

    degree: int
    spec: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return (*super().param_names, "lo", "hi")

    @property
    def linear_params(self) -> tuple[bool, ...]:
        return (True,) * (self.degree + 1) + (False, False)

    def predict(self, params, x):
        return Chebyshev(self.degree, params[-2], params[-1]).predict(params, x)
