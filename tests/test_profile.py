"""Profile-likelihood intervals (--intervals profile) against R's confint() of nls fits.

R's values: tests/data/r/profile/make_profile.R (R 4.2.2). R interpolates a spline through a
coarse profile; ``confint_exact`` are the exact crossings of the same profile statistic,
solved in R. nlfit finds the crossing itself (secant steps on the statistic), so it is
compared with R's ``confint`` to 1e-3 of the interval's width (the issue's bar) and with the
exact crossings to 1e-5 of the width."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nlfit import fit
from nlfit.io.dataset import Dataset
from nlfit.options import FitOptions
from nlfit.profile import intervals

PROFILE_DIR = Path(__file__).resolve().parent / "data" / "r" / "profile"
CASES = {entry["id"]: entry for entry in json.loads((PROFILE_DIR / "profile.json").read_text())}
NAMED = {"dnase1_sslogis": "logistic", "puromycin_treated_ssmicmen": "micmen", "loblolly301_ssasymp": "asymp", "chick2_sslogis": "logistic"}


def number(value):
    return None if value is None else float(value)


def case_data(entry) -> Dataset:
    frame = pd.read_csv(PROFILE_DIR / entry["data"], dtype=str)
    if entry["subset"]:
        frame = frame[frame[entry["subset"]["column"]] == entry["subset"]["value"]]
    x = frame[entry["x"][0]].astype(float).to_numpy()
    return Dataset(x=x, y=frame[entry["y"]].astype(float).to_numpy(), x_names=tuple(entry["x"]), y_name=entry["y"])


def profile_of(identifier, level=0.95):
    entry = CASES[identifier]
    data = case_data(entry)
    model = NAMED.get(identifier, entry["formula"])
    p0 = None if identifier in NAMED else {name: float(value) for name, value in entry["params"].items()}
    result = fit(data, model, p0=p0, conf_level=level)
    assert result.success, result.message
    np.testing.assert_allclose(result.params, [float(v) for v in entry["params"].values()], rtol=1e-6)
    options = FitOptions.of(result.options)
    found = intervals(data, result.model, result.params, result.stderr, result.stats["rss"], result.stats["dof"], options, level)
    return entry, found


# R's spline through its profile is off its own exact crossing by 1.4e-3 of the width on BOD
# (A: 14.0845 against 14.0494); there nlfit is held to the exact crossing alone
SPLINE_OFF = {"bod_lrc": 2e-3}


@pytest.mark.parametrize("identifier", ["wtloss_mass", "dnase1_sslogis", "bod_lrc", "puromycin_treated_ssmicmen", "loblolly301_ssasymp", "chick2_sslogis"])
def test_profile_interval_equals_r_confint(identifier):
    entry, found = profile_of(identifier)
    for name, limits in entry["confint"].items():
        r_interval, exact = [number(v) for v in limits], [number(v) for v in entry["confint_exact"][name]]
        width = r_interval[1] - r_interval[0]
        assert found[name]["open"] == []
        np.testing.assert_allclose(found[name]["ci"], r_interval, atol=SPLINE_OFF.get(identifier, 1e-3) * width, rtol=0)
        np.testing.assert_allclose(found[name]["ci"], exact, atol=1e-5 * width, rtol=0)


def test_profile_at_90_percent_equals_r_exact_crossings():
    entry, found = profile_of("bod_lrc", level=0.90)
    for name, limits in entry["confint_exact_90"].items():
        exact = [number(v) for v in limits]
        np.testing.assert_allclose(found[name]["ci"], exact, atol=1e-5 * (exact[1] - exact[0]), rtol=0)


def test_an_open_side_is_null_as_r_reports_na():
    """Orange tree 1, first six ages, SSasympOrig: the profile of Asym levels off below the
    threshold above the estimate (R: NA), and so does lrc's below."""
    entry, found = profile_of("orange1_first6_ssasymporig_open")
    assert found["Asym"]["ci"][1] is None and found["Asym"]["open"] == ["upper"]
    assert found["lrc"]["ci"][0] is None and found["lrc"]["open"] == ["lower"]
    exact = number(entry["confint_exact"]["Asym"][0])
    wald = [number(v) for v in entry["wald"]["Asym"]]
    np.testing.assert_allclose(found["Asym"]["ci"][0], exact, atol=1e-6 * (wald[1] - wald[0]), rtol=0)  # R's spline says 136.1; the crossing is 131.5


def test_cli_reports_profile_intervals_with_ci_method_and_a_warning_for_an_open_side(tmp_path):
    entry = CASES["orange1_first6_ssasymporig_open"]
    out = subprocess.run(
        [sys.executable, "-m", "nlfit", "fit", str(PROFILE_DIR / entry["data"]), "-m", "asymporig", "--x", "age", "--y", "circumference",
         "--intervals", "profile", "-f", "json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["ci_method"] == "profile"
    assert payload["params"]["Asym"]["ci"][1] is None and payload["params"]["lrc"]["ci"][0] is None
    assert "Asym does not reach the 95% level on its upper side" in out.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "nlfit", "fit", str(PROFILE_DIR / entry["data"]), "-m", "asymporig", "--intervals", "bootstrapped"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--intervals must be" in refused.stderr
