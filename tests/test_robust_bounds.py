"""Robust losses, bounds and fixed parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import runge_data
from scipy.optimize import least_squares
from typer.testing import CliRunner

from nlfit import fit
from nlfit.cli.app import app
from nlfit.io.dataset import Dataset


def _outlier_runge():
    data = runge_data(n=200, noise=0.05, seed=11)
    rng = np.random.default_rng(12)
    y = data.y.copy()
    bad = rng.choice(200, size=10, replace=False)  # 5% gross outliers
    y[bad] += rng.choice([-1.0, 1.0], size=10) * rng.uniform(3.0, 6.0, size=10)
    return Dataset(x=data.x, y=y, x_names=("x",), y_name="y")


def _residuals(c, x, y):
    return 1.0 / (c[0] + c[1] * x + c[2] * x * x) - y


def _jacobian(c, x, y):
    f2 = (1.0 / (c[0] + c[1] * x + c[2] * x * x)) ** 2
    return np.column_stack([-f2, -f2 * x, -f2 * x * x])


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
@pytest.mark.parametrize("method", ["lm", "gn", "newton"])
def test_robust_losses_match_scipy(loss, method):
    data = _outlier_runge()
    ours = fit(data, "rational", p0=[1.0, 0.0, 10.0], loss=loss, f_scale=0.1, method=method)
    assert ours.success, ours.message
    reference = least_squares(
        _residuals, [1.0, 0.0, 10.0], jac=_jacobian, args=(data.x, data.y), loss=loss, f_scale=0.1, method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    np.testing.assert_allclose(ours.params, reference.x, rtol=1e-6)
    assert ours.loss == pytest.approx(reference.cost, rel=1e-10)
    plain = fit(data, "rational", p0=[1.0, 0.0, 10.0])
    truth = np.array([1.0, 0.0, 10.0])
    assert np.linalg.norm(ours.params - truth) < np.linalg.norm(plain.params - truth)  # outliers matter less


def test_robust_gradient_descent_uses_the_robust_loss():
    data = _outlier_runge()
    result = fit(data, "rational", p0=[1.0, 0.0, 10.0], loss="cauchy", f_scale=0.1, method="gd", globalization="trust-region", max_iter=20000)
    reference = fit(data, "rational", p0=[1.0, 0.0, 10.0], loss="cauchy", f_scale=0.1)
    np.testing.assert_allclose(result.params, reference.params, rtol=1e-3)


def test_robust_standard_errors_are_the_sandwich():
    data = _outlier_runge()
    result = fit(data, "rational", p0=[1.0, 0.0, 10.0], loss="huber", f_scale=0.1)
    x, y, c = data.x, data.y, result.params
    r = _residuals(c, x, y)
    jac = _jacobian(c, x, y)
    z = (r / 0.1) ** 2
    first = np.where(z <= 1, 1.0, z**-0.5)
    second = np.where(z <= 1, 0.0, -0.5 * z**-1.5)
    a = (jac * (first + 2 * second * z)[:, None]).T @ jac
    b = (jac * (first * r)[:, None]).T @ (jac * (first * r)[:, None])
    expected = np.linalg.inv(a) @ b @ np.linalg.inv(a) * len(x) / (len(x) - 3)
    np.testing.assert_allclose(result.covariance, expected, rtol=1e-6)


@pytest.mark.parametrize("method", ["lm", "gn"])
def test_bounded_fit_ends_on_the_boundary_and_matches_scipy(method):
    data = runge_data(n=200, noise=0.5, seed=0)
    free = fit(data, "rational")
    assert free.params[2] > 5.0  # the unconstrained optimum lies outside the box below
    result = fit(data, "rational", p0=[1.0, 0.0, 4.0], bounds={"c2": (0.0, 5.0), "c0": (0.0, np.inf)}, method=method)
    assert result.success
    assert result.params[2] == 5.0 and result.at_bound[2] == "upper"
    assert np.all(result.params >= [0.0, -np.inf, 0.0]) and np.all(result.params <= [np.inf, np.inf, 5.0])
    reference = least_squares(
        _residuals,
        [1.0, 0.0, 4.0],
        jac=_jacobian,
        args=(data.x, data.y),
        bounds=([0.0, -np.inf, 0.0], [np.inf, np.inf, 5.0]),
        method="trf",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(result.params, reference.x, rtol=1e-6, atol=1e-9)
    payload = result.to_json()
    assert payload["params"]["c2"]["at_bound"] == "upper" and payload["params"]["c2"]["stderr"] is None
    assert any("c2 ended at its upper bound" in w for w in (x.message for x in result.warnings))


def test_every_method_stays_inside_the_bounds():
    data = runge_data(n=100, noise=0.5, seed=0)
    for method in ("gd", "newton", "gn", "lm"):
        for globalization in ("none", "line-search", "trust-region"):
            result = fit(data, "rational", p0=[1.0, 0.0, 4.0], bounds={"c2": (0.0, 5.0)}, method=method, globalization=globalization, max_iter=300)
            assert 0.0 <= result.params[2] <= 5.0, (method, globalization)


def test_fix_equals_the_formula_with_the_number_written_in():
    x = np.linspace(0.0, 4.0, 40)
    rng = np.random.default_rng(2)
    data = Dataset(x=x, y=1.7 * (1 - np.exp(-0.6 * x)) + rng.normal(0, 0.02, x.size), x_names=("x",), y_name="y")
    fixed = fit(data, "b1*(1-exp(-b2*x))", p0={"b1": 1.0, "b2": 1.0}, fix={"b2": 0.5})
    written = fit(data, "b1*(1-exp(-0.5*x))", p0={"b1": 1.0})
    assert fixed.params[1] == 0.5 and fixed.fixed[1]
    np.testing.assert_allclose(fixed.params[0], written.params[0], rtol=1e-10)
    np.testing.assert_allclose(fixed.stderr[0], written.stderr[0], rtol=1e-8)
    assert fixed.to_json()["params"]["b2"]["fixed"] is True and fixed.stderr is not None and np.isnan(fixed.stderr[1])


def test_cli_flags_and_config(tmp_path, runge_csv):
    config = tmp_path / "c.toml"
    config.write_text('model = "rational"\nloss = "soft_l1"\nf-scale = 0.2\n[bounds]\nc2 = [0, 5]\n[fix]\nc1 = 0.0\n')
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "--config", str(config), "-f", "json", "-q"])
    assert done.exit_code == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["loss"] == "soft_l1" and payload["f_scale"] == 0.2
    assert payload["params"]["c1"]["fixed"] and payload["params"]["c1"]["value"] == 0.0
    assert payload["params"]["c2"]["value"] <= 5.0
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "--bounds", "c2=0:5", "--fix", "c1=0", "-f", "json", "-q"])
    assert json.loads(done.stdout)["params"]["c2"]["at_bound"] == "upper"
    for bad, fragment in (
        (["--bounds", "c9=0:1"], "unknown parameter"),
        (["--bounds", "c2=5:1"], "above the upper bound"),
        (["--bounds", "c2=0-1"], "low:high"),
        (["--loss", "tukey"], "--loss must be one of"),
        (["--p0", "1,0,10", "--bounds", "c2=0:5"], "outside its bounds"),
    ):
        done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", *bad])
        assert done.exit_code == 2 and fragment in done.stderr, (bad, done.stderr)


def test_batched_fits_carry_loss_bounds_and_fix():
    from nlfit.batch import fit_groups

    data = _outlier_runge()
    grouped = Dataset(x=np.tile(data.x, 2), y=np.tile(data.y, 2), x_names=("x",), y_name="y", groups=np.repeat(["a", "b"], data.x.size))
    options = dict(p0=[1.0, 0.0, 9.0], loss="cauchy", f_scale=0.1, bounds={"c2": (0.0, 9.9)}, fix={"c1": 0.0})
    batch = fit_groups(grouped, "rational", **options)
    single = fit(data, "rational", **options)
    for g in range(2):
        np.testing.assert_allclose(batch.params[g], single.params, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(batch.stderr[g, 0], single.stderr[0], rtol=1e-6)
    assert np.isnan(batch.stderr[0, 1])  # fixed
    assert batch.params[0, 1] == 0.0 and batch.params[0, 2] <= 9.9
