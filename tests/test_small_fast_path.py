"""The batches' fast path: Levenberg-Marquardt steps from J^T J by a closed-form Cholesky
(factorization "cholesky", chosen by auto for grouped LM fits of few parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from nlfit._jax import jax, jnp
from nlfit.batch import fit_groups
from nlfit.fitting import choose_factorization
from nlfit.io.dataset import Dataset
from nlfit.solvers import subproblems


def _gram(rng, n, rank=None, zero=None):
    jac = rng.normal(size=(40, n)) * np.logspace(0, 3, n)
    if rank is not None:
        jac[:, rank:] = jac[:, :1] * np.arange(2, n - rank + 2)  # dependent columns
    if zero is not None:
        jac[:, zero] = 0.0  # a parameter held (fixed or at a bound): its column is zero
    residuals = rng.normal(size=40)
    scale = np.linalg.norm(jac, axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # the solver's variables: columns scaled to norm 1
    jac = jac / scale
    return jac.T @ jac, jac.T @ residuals


# The steps as the solver runs them, compiled (run op by op, each case compiled ~75 small programs).
eigen_form_from_gram, damped_step, trust_region_step = (
    jax.jit(f) for f in (subproblems.eigen_form_from_gram, subproblems.damped_step, subproblems.trust_region_step)
)
normal_damped_step, normal_trust_region_step = jax.jit(subproblems.normal_damped_step), jax.jit(subproblems.normal_trust_region_step)

CASES = [("regular", 1)] + [(case, n) for case in ("regular", "rank-deficient", "held") for n in (3, 5, 10)]


@pytest.mark.parametrize(("case", "n"), CASES)
def test_closed_form_steps_equal_the_eigendecomposition(case, n):
    rng = np.random.default_rng(n)
    gram, grad = _gram(rng, n, rank=n - 1 if case == "rank-deficient" else None, zero=n - 1 if case == "held" else None)
    form = eigen_form_from_gram(jnp.asarray(gram), jnp.asarray(grad))
    norm = np.linalg.norm(np.asarray(damped_step(form, 1e-3 * np.trace(gram))))
    for damping in (1e-6 * np.trace(gram), 1e-2 * np.trace(gram), 10 * np.trace(gram)):
        ours = np.asarray(normal_damped_step(jnp.asarray(gram), jnp.asarray(grad), damping))
        theirs = np.asarray(damped_step(form, damping))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9 * np.linalg.norm(theirs))
    for radius in (0.01 * norm, 0.5 * norm, 1e6 * norm):
        ours, damping = (np.asarray(v) for v in normal_trust_region_step(jnp.asarray(gram), jnp.asarray(grad), radius))
        theirs, their_damping = (np.asarray(v) for v in trust_region_step(form, radius))
        assert np.linalg.norm(ours) <= radius * (1 + 1e-8)
        if case == "regular":
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8 * np.linalg.norm(theirs))
            assert damping == pytest.approx(float(their_damping), rel=1e-5, abs=1e-12 * np.trace(gram))
        # the model's decrease is the one the exact subproblem reaches, whatever the rank (a
        # singular matrix is damped by sqrt(eps) of its largest diagonal entry: that much less)
        model = lambda s: grad @ s + 0.5 * s @ gram @ s  # noqa: E731
        assert model(ours) <= model(theirs) + 1e-7 * abs(model(theirs))
        if case == "held":
            assert ours[-1] == 0.0


def test_the_steps_vectorize():
    rng = np.random.default_rng(0)
    pairs = [_gram(rng, 4) for _ in range(6)]
    grams, grads = (jnp.asarray(np.stack(v)) for v in zip(*pairs, strict=True))
    batched, _ = jax.jit(jax.vmap(subproblems.normal_trust_region_step, (0, 0, None)))(grams, grads, 0.1)
    for g in range(6):
        alone, _ = normal_trust_region_step(grams[g], grads[g], 0.1)
        np.testing.assert_allclose(np.asarray(batched[g]), np.asarray(alone), rtol=1e-12, atol=1e-15)


def test_auto_chooses_it_for_grouped_lm_fits_of_few_parameters():
    assert choose_factorization("auto", 100, 50, 3, "lm") == "cholesky"
    assert choose_factorization("auto", 100, 1, 3, "lm") == "svd"  # a single fit
    assert choose_factorization("auto", 100, 50, 11, "lm") == "svd"  # too many parameters
    assert choose_factorization("auto", 100, 50, 3, "gn") == "svd"
    assert choose_factorization("svd", 100, 50, 3, "lm") == "svd"  # asked for


def _gaussians(groups, rng):
    grid = np.arange(5.0)
    u, v = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    truth = np.column_stack(
        [rng.uniform(80, 120, groups), rng.uniform(1.5, 2.5, groups), rng.uniform(1.5, 2.5, groups), rng.uniform(0.8, 1.2, groups), rng.uniform(8, 12, groups)]
    )
    clean = truth[:, :1] * np.exp(-((u - truth[:, 1:2]) ** 2 + (v - truth[:, 2:3]) ** 2) / (2 * truth[:, 3:4] ** 2)) + truth[:, 4:5]
    y = clean + rng.normal(0, 1, clean.shape) * np.sqrt(clean)
    x = np.column_stack([np.tile(u, groups), np.tile(v, groups)])
    data = Dataset(x=x, y=y.ravel(), x_names=("u", "v"), y_name="z", groups=np.repeat(np.arange(groups), u.size).astype(str))
    return data, "a*exp(-((u-u0)^2 + (v-v0)^2)/(2*s^2)) + b", truth * rng.uniform(0.9, 1.1, truth.shape)


def _rationals(groups, rng):
    x = np.linspace(-1.0, 1.0, 100)
    truth = np.column_stack([rng.uniform(0.5, 1.5, groups), rng.uniform(-0.3, 0.3, groups), rng.uniform(5, 15, groups)])
    y = 1.0 / (truth[:, :1] + truth[:, 1:2] * x + truth[:, 2:3] * x * x) + rng.normal(0, 0.01, (groups, x.size))
    data = Dataset(x=np.tile(x, groups), y=y.ravel(), x_names=("x",), y_name="y", groups=np.repeat(np.arange(groups), x.size).astype(str))
    return data, "1/(c0 + c1*x + c2*x^2)", np.tile([1.0, 0.0, 10.0], (groups, 1))


@pytest.mark.parametrize("problem", [_rationals, _gaussians])
def test_grouped_fits_equal_the_general_path(problem):
    data, formula, starts = problem(40, np.random.default_rng(3))
    tight = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12, starts=1)
    fast = fit_groups(data, formula, group_starts=starts, factorization="auto", **tight)
    general = fit_groups(data, formula, group_starts=starts, factorization="svd", **tight)
    assert {r.status.label for r in fast.results} <= {"gtol", "ftol", "xtol"}
    assert [r.status.success for r in fast.results] == [r.status.success for r in general.results]
    np.testing.assert_allclose(fast.params, general.params, rtol=1e-8)
    np.testing.assert_allclose(fast.stderr, general.stderr, rtol=1e-6)


def test_dependent_columns_do_not_drift_along_their_null_direction():
    """a*x + b*x: J^T J is singular in every group; like the SVD path, the fast path moves
    only a + b, so a and b stay equal, and every group converges."""
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 3.0, 30)
    ys = [(1 + g % 5) * np.exp(-(0.5 + 0.1 * (g % 7)) * x) + 0.2 + rng.normal(0, 0.01, x.size) for g in range(20)]
    data = Dataset(x=np.tile(x, 20), y=np.concatenate(ys), x_names=("x",), y_name="y", groups=np.repeat([f"g{g:02d}" for g in range(20)], x.size))
    fast = fit_groups(data, "a*x + b*x", p0=[1.0, 1.0], starts=1)
    general = fit_groups(data, "a*x + b*x", p0=[1.0, 1.0], starts=1, factorization="svd")
    assert all(r.status.success for r in general.results)
    assert all(r.status.success for r in fast.results), [r.status.label for r in fast.results]
    np.testing.assert_allclose(fast.params[:, 0], fast.params[:, 1], rtol=1e-6)
    np.testing.assert_allclose(fast.params.sum(axis=1), general.params.sum(axis=1), rtol=1e-8)
