"""Polynomial in the monomial basis: f(x) = c0 + c1 x + ... + cD x^D (Horner's rule)."""

from __future__ import annotations

from dataclasses import dataclass

from nlfit._jax import jnp
from nlfit.models.base import Series


@dataclass(frozen=True)
class Polynomial(Series):
    degree: int
    spec: str = ""

    def predict(self, params, x):
        value = jnp.full(jnp.shape(x), params[self.degree])
        for coefficient in params[self.degree - 1 :: -1] if self.degree > 0 else []:
            value = value * x + coefficient
        return value
