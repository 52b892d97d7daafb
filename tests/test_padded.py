"""Padded parameter vectors (``nlfit.models.padded``): the built-in series and rational
models of one degree bucket share one compiled program, and a fit computed padded reports
what the fit computed with its own parameters reports."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compile_events

from nlfit import fit
from nlfit.io.dataset import Dataset
from nlfit.models import padded


def _runge(seed: int, lo: float = -1.0, hi: float = 1.0, n: int = 60, noise: float = 0.02) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.linspace(lo, hi, n)
    t = (2 * x - (lo + hi)) / (hi - lo)
    return Dataset(x=x, y=1 / (1 + 10 * t**2) + rng.normal(0.0, noise, n), x_names=("x",), y_name="y")


@pytest.mark.parametrize(
    "first, others",
    [
        ("polynomial:4", ["polynomial:5", "polynomial:7"]),  # 5 to 8 coefficients: computed as 8
        ("chebyshev:2", ["chebyshev:4", "chebyshev:5"]),  # 3 to 6 coefficients and the domain: 8
        ("rational:1/1", ["rational:2/2", "rational:3/4"]),  # up to 4 numerator, 4 denominator coefficients
    ],
)
def test_a_new_degree_inside_a_bucket_compiles_nothing(first, others):
    fit(_runge(0), first)
    results = []
    assert compile_events(lambda: results.extend(fit(_runge(1 + i), spec) for i, spec in enumerate(others))) == {}
    assert all(result.success for result in results)
    for spec, result in zip(others, results, strict=True):
        assert len(result.params) == len(fit(_runge(9), spec).param_names)


def test_a_chebyshev_series_on_another_data_range_compiles_nothing():
    fit(_runge(0), "chebyshev:5")
    found = []
    assert compile_events(lambda: found.append(fit(_runge(1, lo=3.0, hi=17.0), "chebyshev:5"))) == {}
    assert found[0].success and found[0].model.to_json()["domain"] == [3.0, 17.0]


@pytest.mark.parametrize(
    "spec, lo, hi, options",
    [
        ("polynomial:5", -1.0, 1.0, {}),
        ("chebyshev:6", -1.0, 1.0, {}),
        ("rational:2/2", -1.0, 1.0, {}),
        ("rational:3/1", -1.0, 1.0, {}),
        # the domain a Chebyshev series carries as fixed parameters sets neither the first
        # trust radius nor the xtol test (nlfit.solvers.loop.scaled_params): a robust loss,
        # whose fit depends on the path, reaches the same minimum
        # (with the domain in ||D p||, these two ended at losses 0.5 % and 0.8 % higher)
        ("chebyshev:6", -1.0, 1.0, {"loss": "cauchy", "f_scale": 0.05, "seed": 1}),
        ("chebyshev:6", 5000.0, 5200.0, {"loss": "cauchy", "f_scale": 0.05, "seed": 3}),
    ],
)
def test_a_padded_fit_reports_what_the_unpadded_fit_reports(monkeypatch, spec, lo, hi, options):
    options = dict(options)
    seed = options.pop("seed", None)
    data = _runge(4, lo, hi) if seed is None else _runge(seed, lo, hi, n=80, noise=0.5)
    computed = fit(data, spec, **options)
    assert padded.for_model(computed.model) is not None
    monkeypatch.setattr(padded, "for_model", lambda model: None)
    own = fit(data, spec, **options)
    assert computed.param_names == own.param_names
    assert computed.success and own.success  # which stopping test fired first may differ in the last bits
    # the same minimum: with the plain loss a linear (or well-conditioned rational) problem,
    # polished to round-off; a robust fit is not polished and stops where the loss no longer
    # falls by ftol (1e-10), its parameters then agree to about sqrt(ftol) of their size
    size = np.max(np.abs(own.params))
    if options:
        np.testing.assert_allclose(computed.params, own.params, rtol=0, atol=1e-6 * size)
        np.testing.assert_allclose(computed.stderr, own.stderr, rtol=1e-4)
    else:
        np.testing.assert_allclose(computed.params, own.params, rtol=1e-9, atol=1e-12 * size)
        np.testing.assert_allclose(computed.stderr, own.stderr, rtol=1e-7)
        np.testing.assert_allclose(computed.covariance, own.covariance, rtol=1e-6, atol=1e-12 * np.max(np.abs(own.covariance)))
    for name in ("n", "dof"):
        assert computed.stats[name] == own.stats[name]
    for name in ("loss", "rss", "aic", "bic", "r2", "loglik"):
        assert computed.stats[name] == pytest.approx(own.stats[name], rel=1e-9 if name == "loss" or not options else 1e-6)
    document = computed.to_json()
    assert list(document["params"]) == list(own.param_names)
    assert not any(padded.HIDDEN in text for text in repr(document).split("'"))


def test_a_user_fixed_parameter_and_padding_together():
    data = _runge(5)
    result = fit(data, "polynomial:5", fix={"c1": 0.0})
    assert result.success and result.params[1] == 0.0 and np.isnan(result.stderr[1])
    assert result.stats["dof"] == 60 - 5


@pytest.mark.parametrize("jac", ["fwd", "rev", "fd"])
def test_the_padded_columns_do_not_overflow(jac):
    # x^7, the column of a padded polynomial's c7, overflows at x = 1e45: a padded (fixed)
    # parameter's derivatives are zero without being computed (nlfit.problem.residuals)
    x = np.linspace(1e103, 3e103, 30)
    data = Dataset(x=x, y=2.0 + 3e-103 * x + np.random.default_rng(0).normal(0.0, 0.01, 30), x_names=("x",), y_name="y")
    result = fit(data, "polynomial:1", jac=jac)
    assert result.success and result.stats["r2"] > 0.999
    np.testing.assert_allclose(result.params * [1.0, 1e103], [2.0, 3.0], rtol=1e-2)


def test_a_step_that_is_not_finite_stops_the_fit_as_nonfinite():
    # b fixed at 0 in sqrt(x - b) with x = 0 among the data: the gradient is finite (reverse
    # mode gives the fixed b a zero derivative) but Newton's exact Hessian is not; its step was
    # rejected with a NaN trust radius, 2000 times, and the fit ended at max-iter
    x = np.linspace(0.0, 5.0, 40)
    data = Dataset(x=x, y=2 * np.sqrt(x) + 1 + np.random.default_rng(3).normal(0.0, 0.02, 40), x_names=("x",), y_name="y")
    result = fit(data, "a*sqrt(x - b) + c", fix={"b": 0.0}, method="newton", jac="rev", starts=1)
    assert result.status.label == "nonfinite" and not result.success and result.counts["iterations"] <= 1
