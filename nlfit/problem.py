"""Dataset + Model -> Problem: weighted residuals r(params) and loss = 1/2 ||r||^2 in JAX.

    r_i(params) = (f(params, x_i) - y_i) / sigma_i

with sigma_i = 1 for an unweighted fit, so the loss is the C^{-1}-weighted norm of the
lecture with a diagonal C. ``y`` is the fitted response: the response column, or its
transform for a formula such as ``log(y) = ...``.

A Problem is a JAX pytree: x, y and sigma are traced arrays and the model is static, so a
compiled solver step is reused for every dataset of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nlfit._jax import jax, jnp
from nlfit.io.dataset import Dataset
from nlfit.models.base import Model


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Problem:
    x: jax.Array
    y: jax.Array
    sigma: jax.Array
    model: Model = field(metadata={"static": True})

    @property
    def n_residuals(self) -> int:
        return int(self.y.shape[-1])

    @property
    def n_params(self) -> int:
        return len(self.model.param_names)


def make_problem(model: Model, dataset: Dataset) -> Problem:
    """The Problem that fits ``model`` to ``dataset`` (response transformed if the model says so)."""
    y = np.asarray(model.transform_response(dataset.y, dataset.x), dtype=np.float64)
    sigma = np.ones_like(y) if dataset.sigma is None else np.asarray(dataset.sigma, dtype=np.float64)
    return Problem(x=jnp.asarray(dataset.x, dtype=jnp.float64), y=jnp.asarray(y), sigma=jnp.asarray(sigma), model=model)


def residuals(params, problem: Problem):
    return (problem.model.predict(params, problem.x) - problem.y) / problem.sigma


def loss(params, problem: Problem):
    r = residuals(params, problem)
    return 0.5 * jnp.dot(r, r)
