"""Polynomial in the monomial basis: f(x) = c0 + c1 x + ... + cD x^D (Horner's rule)."""

from __future__ import annotations

from dataclasses import dataclass

from nlfit._jax import jnp
from nlfit.models.base import Model


@dataclass(frozen=True)
class Polynomial(Model):
    degree: int
    spec: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"c{i}" for i in range(self.degree + 1))

    @property
    def is_linear(self) -> bool:
        return True

    def predict(self, params, x):
        value = jnp.full(jnp.shape(x), params[self.degree])
        for coefficient in params[self.degree - 1 :: -1] if self.degree > 0 else []:
            value = value * x + coefficient
        return value
