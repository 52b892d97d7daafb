"""A new direction is one class: a toy "scaled gradient" defined in this file only runs
through all three globalizations of the real solver, with no change to any file of nlfit.

The direction: p = -D^-2 g (the gradient in the metric of the column norms D), taken to the
minimum of the Gauss-Newton model along it (t = g.p / ||J p||^2); for a trust region, cut to
the radius in the D-scaled norm. Its predicted decrease is the base class's Gauss-Newton
model. On a straight line with exact data it must reach the line's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from nlfit._jax import jax, jnp
from nlfit.fitting import solve_groups
from nlfit.io.dataset import Dataset
from nlfit.models.registry import model_for
from nlfit.options import FitOptions
from nlfit.prepare import SolverConfig
from nlfit.problem import make_problem
from nlfit.solvers.directions import Direction
from nlfit.solvers.globalization import make_globalization
from nlfit.solvers.status import Status


@dataclass(frozen=True)
class ScaledGradient(Direction):
    name = "scaled-gradient"

    def full_step(self, problem, params, local, scale, damping, key):
        along = -local.grad / scale**2
        curvature = jnp.sum((local.jac @ along) ** 2)
        return along * jnp.where(curvature > 0, -jnp.dot(local.grad, along) / curvature, 0.0)

    def trust_region_step(self, problem, params, local, scale, radius):
        step = self.full_step(problem, params, local, scale, 0.0, None)
        size = jnp.linalg.norm(scale * step)
        return step * jnp.minimum(1.0, radius / jnp.where(size > 0, size, 1.0)), jnp.zeros(())


@pytest.mark.parametrize("globalization", ["none", "line-search", "trust-region"])
def test_a_direction_defined_outside_nlfit_runs_through_every_globalization(globalization):
    x = np.linspace(0.0, 1.0, 20)
    data = Dataset(x=x, y=2.0 * x + 1.0, x_names=("x",), y_name="y")
    model = model_for("a*x+b", data)
    problem = make_problem(model, data)
    problems = jax.tree.map(lambda leaf: np.asarray(leaf)[None], problem)
    config = SolverConfig(
        direction=ScaledGradient(), globalization=make_globalization(globalization), factorization="svd", jac_mode="fwd",
        settings=FitOptions(ftol=1e-12, xtol=1e-12, gtol=1e-10, max_iter=5000).settings(), seed=0, count=1,
        linear=np.zeros(2, dtype=bool), free=np.ones(2, dtype=bool),
    )  # fmt: skip
    solved = solve_groups(problems, np.array([[0.0, 0.0]]), np.array([x.size]), config, record=True)
    status = Status(int(solved.statuses[0]))
    assert status.success, status.label
    np.testing.assert_allclose(np.asarray(solved.state.params)[0], [2.0, 1.0], rtol=1e-6)
    losses = [row["loss"] for row in solved.histories[0]]
    assert losses[-1] < 1e-12 * losses[0]
