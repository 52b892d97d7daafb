"""Padded parameter vectors (``nlfit.models.padded``): the built-in series and rational
models of one degree bucket share one compiled program, and a fit computed padded reports
what the fit computed with its own parameters reports."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from nlfit import fit
from nlfit._jax import jax
from nlfit.io.dataset import Dataset
from nlfit.models import padded


def _runge(seed: int, lo: float = -1.0, hi: float = 1.0, n: int = 60) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.linspace(lo, hi, n)
    t = (2 * x - (lo + hi)) / (hi - lo)
    return Dataset(x=x, y=1 / (1 + 10 * t**2) + rng.normal(0.0, 0.02, n), x_names=("x",), y_name="y")


def _compiles(work) -> dict:
    events = collections.Counter()

    def listen(event, duration, **_):
        events[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        work()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return {name: count for name, count in events.items() if "trace" in name or "compile" in name}


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
    assert _compiles(lambda: results.extend(fit(_runge(1 + i), spec) for i, spec in enumerate(others))) == {}
    assert all(result.success for result in results)
    for spec, result in zip(others, results, strict=True):
        assert len(result.params) == len(fit(_runge(9), spec).param_names)


def test_a_chebyshev_series_on_another_data_range_compiles_nothing():
    fit(_runge(0), "chebyshev:5")
    found = []
    assert _compiles(lambda: found.append(fit(_runge(1, lo=3.0, hi=17.0), "chebyshev:5"))) == {}
    assert found[0].success and found[0].model.to_json()["domain"] == [3.0, 17.0]


@pytest.mark.parametrize("spec", ["polynomial:5", "chebyshev:6", "rational:2/2", "rational:3/1"])
def test_a_padded_fit_reports_what_the_unpadded_fit_reports(monkeypatch, spec):
    data = _runge(4)
    computed = fit(data, spec)
    assert padded.for_model(computed.model) is not None
    monkeypatch.setattr(padded, "for_model", lambda model: None)
    own = fit(data, spec)
    assert computed.param_names == own.param_names
    assert computed.success and own.success  # which stopping test fired first may differ in the last bits
    # the same minimum: a linear (or well-conditioned rational) problem, solved to round-off
    np.testing.assert_allclose(computed.params, own.params, rtol=1e-9, atol=1e-12 * np.max(np.abs(own.params)))
    np.testing.assert_allclose(computed.stderr, own.stderr, rtol=1e-7)
    np.testing.assert_allclose(computed.covariance, own.covariance, rtol=1e-6, atol=1e-12 * np.max(np.abs(own.covariance)))
    for name in ("n", "dof"):
        assert computed.stats[name] == own.stats[name]
    for name in ("rss", "aic", "bic", "r2", "loglik"):
        assert computed.stats[name] == pytest.approx(own.stats[name], rel=1e-9)
    document = computed.to_json()
    assert list(document["params"]) == list(own.param_names)
    assert not any(padded.HIDDEN in text for text in repr(document).split("'"))


def test_a_user_fixed_parameter_and_padding_together():
    data = _runge(5)
    result = fit(data, "polynomial:5", fix={"c1": 0.0})
    assert result.success and result.params[1] == 0.0 and np.isnan(result.stderr[1])
    assert result.stats["dof"] == 60 - 5
