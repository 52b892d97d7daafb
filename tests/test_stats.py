"""Covariance, standard errors, intervals, weights and prediction bands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import NIST_DIR, NIST_NAMES, runge_data
from scipy.optimize import curve_fit
from typer.testing import CliRunner

from nlfit import fit, read_dataset
from nlfit.cli.app import app
from nlfit.io.dataset import Dataset


def lre_each(estimate, certified):
    estimate, certified = np.asarray(estimate, float), np.asarray(certified, float)
    errors = np.abs(estimate - certified) / np.abs(certified)
    return float(min(11.0, -np.log10(np.max(errors)))) if np.max(errors) > 0 else 11.0


@pytest.mark.parametrize("name", NIST_NAMES)
def test_standard_errors_and_residual_sd_match_nist(name):
    data = read_dataset(str(NIST_DIR / f"{name}.dat"))
    result = fit(data, data.nist.formula, p0=data.nist.starts[2])
    assert result.success
    assert lre_each(result.stderr, data.nist.certified_sd) >= 4.0
    assert lre_each([result.stats["sigma"]], [data.nist.certified_rsd]) >= 6.0


def _weighted_runge():
    data = runge_data()
    sigma = 0.3 + 0.4 * np.abs(data.x)
    return Dataset(x=data.x, y=data.y, x_names=("x",), y_name="y", sigma=sigma)


@pytest.mark.parametrize("absolute", [False, True])
def test_covariance_matches_curve_fit(absolute):
    data = _weighted_runge()
    result = fit(data, "rational", absolute_sigma=absolute)
    popt, pcov = curve_fit(
        lambda x, c0, c1, c2: 1.0 / (c0 + c1 * x + c2 * x * x),
        data.x,
        data.y,
        p0=[1.0, 0.0, 10.0],
        sigma=data.sigma,
        absolute_sigma=absolute,
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(result.params, popt, rtol=1e-7)
    np.testing.assert_allclose(result.covariance, pcov, rtol=1e-6)
    assert result.stats["chi2"] == pytest.approx(float(np.sum(((1.0 / (popt[0] + popt[1] * data.x + popt[2] * data.x**2) - data.y) / data.sigma) ** 2)))


def test_unweighted_covariance_matches_curve_fit(runge):
    result = fit(runge, "rational")
    popt, pcov = curve_fit(lambda x, c0, c1, c2: 1.0 / (c0 + c1 * x + c2 * x * x), runge.x, runge.y, p0=[1.0, 0.0, 10.0], xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(result.covariance, pcov, rtol=1e-6)


def test_intervals_t_values_and_information_criteria(runge):
    from scipy import stats

    result = fit(runge, "rational", conf_level=0.9)
    n, p = runge.n_points, 3
    quantile = stats.t.ppf(0.95, n - p)
    np.testing.assert_allclose(result.intervals[:, 1] - result.params, quantile * result.stderr, rtol=1e-12)
    np.testing.assert_allclose(result.tvalues, result.params / result.stderr)
    rss = result.stats["rss"]
    loglik = -n / 2 * (math.log(2 * math.pi * rss / n) + 1)
    assert result.stats["loglik"] == pytest.approx(loglik)
    assert result.stats["aic"] == pytest.approx(2 * (p + 1) - 2 * loglik)
    assert result.stats["bic"] == pytest.approx((p + 1) * math.log(n) - 2 * loglik)
    tss = np.sum((runge.y - runge.y.mean()) ** 2)
    assert result.stats["r2"] == pytest.approx(1 - rss / tss)
    assert result.stats["r2_adj"] == pytest.approx(1 - (rss / (n - p)) / (tss / (n - 1)))


def test_rank_deficient_model_warns_and_names_the_parameters():
    x = np.linspace(0, 1, 20)
    data = Dataset(x=x, y=3.0 * x + 0.01 * np.sin(7 * x), x_names=("x",), y_name="y")
    result = fit(data, "a*b*x", p0=[1.0, 2.0])
    assert result.stderr is None and result.covariance is None
    assert any("a, b" in w and "not identifiable" in w for w in (x.message for x in result.warnings))
    np.testing.assert_allclose(result.params[0] * result.params[1], np.dot(x, data.y) / np.dot(x, x), rtol=1e-9)  # the identifiable product
    done = CliRunner().invoke(
        app,
        ["fit", "-", "-m", "a*b*x", "--p0", "1,2", "-f", "json"],
        input="x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x, data.y, strict=True)),
    )
    assert done.exit_code in (0, 1)
    assert "not identifiable" in done.stderr and "a, b" in done.stderr
    assert json.loads(done.stdout)["params"]["a"]["stderr"] is None


def test_strong_correlation_is_warned():
    data = read_dataset(str(NIST_DIR / "Misra1a.dat"))
    result = fit(data, data.nist.formula, p0=data.nist.starts[2])
    assert any("strongly correlated" in w for w in (x.message for x in result.warnings))


def test_predict_bands_match_finite_difference_delta_method(tmp_path, runge_csv):
    from scipy import stats

    saved = tmp_path / "fit.json"
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "-f", "json", "-q", "-o", str(saved)])
    assert done.exit_code == 0
    payload = json.loads(saved.read_text())
    out = CliRunner().invoke(app, ["predict", str(saved), "--range=-1:1:9"])
    assert out.exit_code == 0, out.stderr
    rows = np.array([[float(v) for v in line.split(",")] for line in out.stdout.splitlines()[1:]])
    assert out.stdout.splitlines()[0] == "x,y,conf_lo,conf_hi,pred_lo,pred_hi"
    x = rows[:, 0]
    params = np.array([payload["params"][k]["value"] for k in ("c0", "c1", "c2")])
    covariance = np.array(payload["covariance"])

    def model(p):
        return 1.0 / (p[0] + p[1] * x + p[2] * x * x)

    steps = 1e-6 * (1 + np.abs(params))
    gradient = np.column_stack([(model(params + h * e) - model(params - h * e)) / (2 * h) for h, e in zip(steps, np.eye(3), strict=True)])
    variance = np.einsum("ij,jk,ik->i", gradient, covariance, gradient)
    q = stats.t.ppf(0.975, payload["stats"]["dof"])
    s2 = payload["stats"]["sigma"] ** 2
    np.testing.assert_allclose(rows[:, 1], model(params), rtol=1e-12)
    np.testing.assert_allclose(rows[:, 3] - rows[:, 1], q * np.sqrt(variance), rtol=1e-6)
    np.testing.assert_allclose(rows[:, 5] - rows[:, 1], q * np.sqrt(variance + s2), rtol=1e-6)


def test_predict_rebuilds_chebyshev_domain_and_formula_models(tmp_path):
    data = runge_data(n=50, noise=0.05, seed=2)
    shifted = Dataset(x=4.0 * data.x + 1.0, y=data.y, x_names=("x",), y_name="y")
    from nlfit.predict import predict

    for spec in ("chebyshev:6", "a/(1 + b*(x-1)**2/16)"):
        result = fit(shifted, spec)
        payload = json.loads(json.dumps(result.to_json()))
        new_x = np.array([-3.0, 0.0, 2.5])
        expected = np.asarray(result.model.predict(result.params, new_x))
        np.testing.assert_allclose(predict(payload, new_x)["y"], expected, rtol=1e-12)


def test_sigma_column_from_the_cli(tmp_path):
    data = _weighted_runge()
    path = tmp_path / "w.csv"
    path.write_text("x,y,s\n" + "".join(f"{a!r},{b!r},{c!r}\n" for a, b, c in zip(data.x.tolist(), data.y.tolist(), data.sigma.tolist(), strict=True)))
    done = CliRunner().invoke(app, ["fit", str(path), "-m", "rational", "--sigma", "s", "--absolute-sigma", "-f", "json", "-q"])
    payload = json.loads(done.stdout)
    assert payload["stats"]["chi2"] is not None and payload["absolute_sigma"] is True
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,s\n0,1,1\n1,2,0\n")
    done = CliRunner().invoke(app, ["fit", str(bad), "-m", "polynomial:1", "--sigma", "s"])
    assert done.exit_code == 2 and "sigma must be positive" in done.stderr
