"""--bootstrap N: the refits of resampled data as one batched solve, against a scipy loop over
the same resamples (the draws are numpy.random.default_rng(seed).integers(0, m, (N, m)))."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from nlfit import fit
from nlfit.bootstrap import resample_rows, samples, summary
from nlfit.io.dataset import Dataset
from nlfit.options import FitOptions

WTLOSS = Path(__file__).resolve().parent / "data" / "r" / "profile" / "wtloss.csv"
FORMULA = "b0 + b1*2^(-Days/th)"


def model(p, x):
    return p[0] + p[1] * 2.0 ** (-x / p[2])


def wtloss():
    frame = pd.read_csv(WTLOSS)
    return Dataset(x=frame["Days"].to_numpy(float), y=frame["Weight"].to_numpy(float), x_names=("Days",), y_name="Weight")


def scipy_refits(x, rows_of, start):
    out = []
    for y in rows_of:
        refit = least_squares(lambda p, y=y: model(p, x) - y, start, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
        out.append(refit.x)
    return np.array(out)


def test_residual_and_case_bootstrap_refits_equal_a_scipy_loop_over_the_same_resamples():
    data = wtloss()
    result = fit(data, FORMULA, p0={"b0": 90, "b1": 95, "th": 120})
    options = FitOptions.of(result.options)
    count, seed = 150, 7
    picks = resample_rows(len(data.y), count, seed)
    fitted = model(result.params, data.x)
    centred = (data.y - fitted) - np.mean(data.y - fitted)
    draws, converged = samples(data, result.model, result.params, options, count, "residual", seed)
    assert converged.all()
    np.testing.assert_allclose(draws, scipy_refits(data.x, fitted + centred[picks], result.params), rtol=1e-6)
    draws, converged = samples(data, result.model, result.params, options, count, "cases", seed)
    reference = np.array(
        [least_squares(lambda p, r=rows: model(p, data.x[r]) - data.y[r], result.params, method="lm", xtol=1e-15, ftol=1e-15).x for rows in picks]
    )
    assert converged.all()
    np.testing.assert_allclose(draws, reference, rtol=1e-6)
    found = summary(["b0", "b1", "th"], draws, converged, 0.9, "cases", seed)
    np.testing.assert_allclose(found["params"]["th"]["ci"], np.quantile(reference[:, 2], [0.05, 0.95]), rtol=1e-6)
    assert found["n"] == count and found["failed"] == 0


def test_cli_bootstrap_intervals_are_reproducible_with_the_seed_and_reported(tmp_path):
    command = [sys.executable, "-m", "nlfit", "fit", str(WTLOSS), "-m", FORMULA, "--y", "Weight", "--p0", "b0=90,b1=95,th=120",
               "--bootstrap", "300", "--intervals", "bootstrap", "--seed", "3", "-f", "json", "-qq"]  # fmt: skip
    first, second = (json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout) for _ in range(2))
    assert first["ci_method"] == "bootstrap" and first["bootstrap"]["n"] == 300 and first["bootstrap"]["seed"] == 3
    assert first["params"]["th"]["ci"] == first["bootstrap"]["params"]["th"]["ci"]
    np.testing.assert_allclose(first["bootstrap"]["params"]["th"]["ci"], second["bootstrap"]["params"]["th"]["ci"], rtol=1e-9)
    lo, hi = first["params"]["th"]["ci"]
    assert lo < first["params"]["th"]["value"] < hi
    refused = subprocess.run([*command[:-3], "--bootstrap-kind", "jackknife"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--bootstrap-kind must be" in refused.stderr


def test_bca_intervals_equal_efrons_formula_with_a_scipy_jackknife(tmp_path):
    from scipy.stats import norm
    from typer.testing import CliRunner

    from nlfit.cli.app import app

    done = CliRunner().invoke(app, ["fit", str(WTLOSS), "-m", FORMULA, "--y", "Weight", "--p0", "b0=90,b1=95,th=120", "--bootstrap", "400",
                                    "--intervals", "bca", "--seed", "1", "-f", "json", "-qq"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["ci_method"] == "bca"
    data = wtloss()
    estimate = np.array([payload["params"][k]["value"] for k in ("b0", "b1", "th")])
    keep = np.ones(data.n_points, dtype=bool)
    jack = []
    for i in range(data.n_points):  # the fit without row i, by scipy
        keep[:] = True
        keep[i] = False
        x, y = data.x[keep], data.y[keep]
        jack.append(least_squares(lambda p, x=x, y=y: model(p, x) - y, estimate, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15).x)
    jack = np.array(jack)
    sample = np.array(payload["bootstrap"]["sample"])
    for i, name in enumerate(("b0", "b1", "th")):
        z0 = norm.ppf(np.mean(sample[:, i] < estimate[i]))
        d = jack[:, i].mean() - jack[:, i]
        a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
        z = z0 + norm.ppf([0.025, 0.975])
        expected = np.quantile(sample[:, i], norm.cdf(z0 + z / (1 - a * z)))
        entry = payload["bootstrap"]["params"][name]
        np.testing.assert_allclose(entry["bca"], expected, rtol=1e-8)
        assert payload["params"][name]["ci"] == entry["bca"] and entry["bca"] != entry["ci"]
