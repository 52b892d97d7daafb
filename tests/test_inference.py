"""--derive (delta method) and the residual tests (nlfit.stats.residual_tests) against direct
computations with numpy and scipy.stats."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nlfit.stats import residual_tests

BOD = Path(__file__).resolve().parent / "data" / "r" / "profile" / "BOD.csv"


def test_derived_half_life_has_the_delta_method_stderr_and_its_bootstrap_interval(tmp_path):
    command = [sys.executable, "-m", "nlfit", "fit", str(BOD), "-m", "A*(1-exp(-exp(lrc)*Time))", "--y", "demand", "--p0", "A=20,lrc=-1",
               "--derive", "half=log(2)/exp(lrc)", "--derive", "total=2*A", "--bootstrap", "200", "-f", "json", "-qq"]  # fmt: skip
    payload = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    lrc, se_lrc = payload["params"]["lrc"]["value"], payload["params"]["lrc"]["stderr"]
    half = payload["derived"]["half"]
    assert half["value"] == pytest.approx(math.log(2) * math.exp(-lrc), rel=1e-12)
    assert half["stderr"] == pytest.approx(math.log(2) * math.exp(-lrc) * se_lrc, rel=1e-9)  # |d half / d lrc| * se(lrc)
    t = payload["stats"]["t_quantile"]
    assert half["ci"] == pytest.approx([half["value"] - t * half["stderr"], half["value"] + t * half["stderr"]], rel=1e-12)
    assert payload["derived"]["total"]["stderr"] == pytest.approx(2 * payload["params"]["A"]["stderr"], rel=1e-12)
    low, high = half["bootstrap_ci"]
    assert low < half["value"] < high
    # predict's bootstrap band: at each x, the percentile interval of the saved refits' curves
    from typer.testing import CliRunner

    from nlfit.cli.app import app

    sample = np.array(payload["bootstrap"]["sample"])
    assert sample.shape == (payload["bootstrap"]["converged"], 2)
    saved = tmp_path / "boot.json"
    saved.write_text(json.dumps(payload))
    done = CliRunner().invoke(app, ["predict", str(saved), "--at", "1,3,6"])
    assert done.exit_code == 0, done.stderr
    band = pd.read_csv(io.StringIO(done.stdout))
    at = np.array([1.0, 3.0, 6.0])
    curves = sample[:, :1] * (1 - np.exp(-np.exp(sample[:, 1:]) * at))
    np.testing.assert_allclose(band["boot_lo"], np.quantile(curves, 0.025, axis=0), rtol=1e-10)
    np.testing.assert_allclose(band["boot_hi"], np.quantile(curves, 0.975, axis=0), rtol=1e-10)
    assert np.all(band["boot_lo"] < band["y"]) and np.all(band["y"] < band["boot_hi"]) and list(band.columns)[-2:] == ["boot_lo", "boot_hi"]


def test_derive_refuses_unknown_names_in_one_line():
    done = subprocess.run([sys.executable, "-m", "nlfit", "fit", str(BOD), "-m", "A*(1-exp(-exp(lrc)*Time))", "--y", "demand", "--derive", "k=exp(rate)"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "rate is not a parameter" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_residual_tests_equal_scipy_and_direct_computations():
    rng = np.random.default_rng(4)
    x = np.repeat(np.linspace(0.0, 4.0, 9), 3)
    residuals = rng.normal(0.0, 1.0, x.size) + 0.8 * (x - 2.0) ** 2 - 1.0  # a curvature the model missed
    found = residual_tests(residuals, x, n_params=2)
    w, p = stats.shapiro(residuals)
    assert found["shapiro"]["W"] == pytest.approx(w, rel=1e-12) and found["shapiro"]["p"] == pytest.approx(p, rel=1e-12)
    signs = np.sign(residuals[np.argsort(x, kind="stable")])
    runs = 1 + int(np.sum(signs[1:] != signs[:-1]))
    plus, minus = int(np.sum(signs > 0)), int(np.sum(signs < 0))
    n = plus + minus
    expected = 2 * plus * minus / n + 1
    variance = 2 * plus * minus * (2 * plus * minus - n) / (n**2 * (n - 1))
    assert found["runs"]["runs"] == runs and found["runs"]["expected"] == pytest.approx(expected)
    assert found["runs"]["p"] == pytest.approx(2 * stats.norm.sf(abs(runs - expected) / math.sqrt(variance)), rel=1e-12)
    frame = pd.DataFrame({"x": x, "r": residuals})
    pure = float(((frame["r"] - frame.groupby("x")["r"].transform("mean")) ** 2).sum())
    misfit = float(np.sum(residuals**2)) - pure
    f_value = (misfit / (9 - 2)) / (pure / (27 - 9))
    assert found["replicates"]["F"] == pytest.approx(f_value, rel=1e-12) and found["replicates"]["df"] == [7, 18]
    assert found["replicates"]["p"] == pytest.approx(stats.f.sf(f_value, 7, 18), rel=1e-12) and found["replicates"]["reject"]


def test_a_rejecting_residual_test_is_a_report_line_and_in_the_json(tmp_path):
    x = np.repeat(np.linspace(0.0, 4.0, 9), 3)
    y = 1.0 + 2.0 * x + 0.8 * (x - 2.0) ** 2 + np.random.default_rng(1).normal(0.0, 0.1, x.size)
    path = tmp_path / "curved.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False)
    command = [sys.executable, "-m", "nlfit", "fit", str(path), "-m", "polynomial:1", "-f", "json"]
    done = subprocess.run([*command, "--residual-tests"], capture_output=True, text=True)
    payload = json.loads(done.stdout)
    assert payload["residual_tests"]["replicates"]["reject"] and payload["residual_tests"]["runs"]["reject"]
    assert "residual test: the model misses the means of the replicates (lack-of-fit F test" in done.stderr and "(runs test" in done.stderr
    plain = subprocess.run([*command, "-qq"], capture_output=True, text=True)
    assert "residual_tests" not in json.loads(plain.stdout) and plain.stderr == ""  # asked for only


def test_weights_expression_equals_curve_fit_with_the_matching_sigma(tmp_path):
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(2)
    x = np.linspace(1.0, 10.0, 25)
    y = 5.0 * np.exp(-0.3 * x) * (1.0 + rng.normal(0.0, 0.05, x.size))
    path = tmp_path / "relative.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False, float_format="%.17g")
    command = [sys.executable, "-m", "nlfit", "fit", str(path), "-m", "a*exp(-b*x)", "-f", "json", "-qq"]
    payload = json.loads(subprocess.run([*command, "--weights", "1/y^2"], capture_output=True, text=True, check=True).stdout)
    params, covariance = curve_fit(lambda x, a, b: a * np.exp(-b * x), x, y, p0=[1.0, 0.1], sigma=np.abs(y))  # w = 1/y^2 <=> sigma = |y|
    np.testing.assert_allclose([payload["params"][k]["value"] for k in ("a", "b")], params, rtol=1e-6)
    np.testing.assert_allclose([payload["params"][k]["stderr"] for k in ("a", "b")], np.sqrt(np.diag(covariance)), rtol=1e-5)
    for weights, message in (("1/(y-1)", "every weight must be a finite number above 0"), ("1/z", "z is not a column")):
        done = subprocess.run([*command, "--weights", weights], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_fitted_weights_equal_a_reweighting_loop_of_curve_fit(tmp_path):
    """--weights fitted:1/y^2: y is the curve; the fixed point of curve_fit with sigma = |curve of the last fit|."""
    from scipy.optimize import curve_fit
    from typer.testing import CliRunner

    from nlfit.cli.app import app

    rng = np.random.default_rng(5)
    x = np.linspace(1.0, 10.0, 30)
    y = 5.0 * np.exp(-0.3 * x) * (1.0 + rng.normal(0.0, 0.08, x.size))
    path = tmp_path / "relative.csv"
    pd.DataFrame({"x": x, "y": y, "g": np.arange(x.size) % 2}).to_csv(path, index=False, float_format="%.17g")

    def curve(x, a, b):
        return a * np.exp(-b * x)

    params, _ = curve_fit(curve, x, y, p0=[1.0, 0.1])
    for _ in range(100):
        before = params
        params, covariance = curve_fit(curve, x, y, p0=before, sigma=np.abs(curve(x, *before)))
        if np.max(np.abs(params - before) / np.abs(before)) < 1e-12:
            break
    done = CliRunner().invoke(app, ["fit", str(path), "-m", "a*exp(-b*x)", "--weights", "fitted:1/y^2", "-f", "json", "-qq"])
    assert done.exit_code == 0, done.stderr
    payload = json.loads(done.stdout)
    np.testing.assert_allclose([payload["params"][k]["value"] for k in ("a", "b")], params, rtol=1e-7)
    np.testing.assert_allclose([payload["params"][k]["stderr"] for k in ("a", "b")], np.sqrt(np.diag(covariance)), rtol=1e-5)
    assert payload["weights"]["settled"] and payload["weights"]["refits"] >= 2 and payload["weights"]["expression"] == "1/y^2"
    data = CliRunner().invoke(app, ["fit", str(path), "-m", "a*exp(-b*x)", "--weights", "1/y^2", "-f", "json", "-qq"])
    assert json.loads(data.stdout)["params"]["a"]["value"] != pytest.approx(params[0], rel=1e-7)  # weights from the data differ
    grouped = CliRunner().invoke(app, ["fit", str(path), "-m", "a*exp(-b*x)", "--weights", "fitted:1/y^2", "--group-by", "g"])
    assert grouped.exit_code == 2 and "not with --group-by" in grouped.stderr and len(grouped.stderr.strip().splitlines()) == 1
    zero = CliRunner().invoke(app, ["fit", str(path), "-m", "a*exp(-b*x)", "--weights", "fitted:1/(y-1)", "-qq"])
    assert zero.exit_code == 2 and "from the fitted curve" in zero.stderr and len(zero.stderr.strip().splitlines()) == 1


def test_predict_y_gives_the_x_of_each_value_with_its_delta_method_interval(tmp_path):
    puromycin = Path(__file__).resolve().parent / "data" / "r" / "Puromycin.csv"
    saved = tmp_path / "micmen.json"
    subprocess.run([sys.executable, "-m", "nlfit", "fit", str(puromycin), "-m", "micmen", "--x", "conc", "--y", "rate", "-o", str(saved), "-qq"], check=True)
    payload = json.loads(saved.read_text())
    vm, k = payload["params"]["Vm"]["value"], payload["params"]["K"]["value"]
    covariance = np.array(payload["covariance"])
    done = subprocess.run([sys.executable, "-m", "nlfit", "predict", str(saved), "--y", "100,150,500"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(pd.io.common.StringIO(done.stdout))
    assert list(table.columns) == ["rate", "conc", "stderr", "conc_lo", "conc_hi"] and list(table["rate"]) == [100.0, 150.0]
    for v, x, se in zip(table["rate"], table["conc"], table["stderr"], strict=True):
        assert x == pytest.approx(k * v / (vm - v), rel=1e-10)  # Vm x / (K + x) = v
        gradient = np.array([-k * v / (vm - v) ** 2, v / (vm - v)])  # d x / d (Vm, K)
        assert se == pytest.approx(math.sqrt(gradient @ covariance @ gradient), rel=1e-6)
    assert "does not reach y = 500" in done.stderr
    none = subprocess.run([sys.executable, "-m", "nlfit", "predict", str(saved), "--y", "500"], capture_output=True, text=True)
    assert none.returncode == 1 and "does not reach" in none.stderr
