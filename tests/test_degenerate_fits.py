"""A fit that runs off to a limit where its model degenerates is loud, and multistart leaves it.

Issue 24, item 7: a*sin(b*x) with b -> 0 and a*b fixed, a/(x-b) + c with b -> infinity, and
R's SSasympOff with lrc -> -infinity all become a straight line; such a fit was reported as a
clean success. Now its parameters are named as not determined (``nlfit.diagnostics``), the
multistart counts it as not plausible, and the starts it tries include frequencies from the
data's spectrum and pole positions from the data (``nlfit.start.guided_starts``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nlfit.cli.app import app
from nlfit.models.expression import FormulaModel

runner = CliRunner()

NOT_DETERMINED = "parameters not determined"

# R's datasets::CO2, Plant == "Qn1"; the model of SSasympOff. The reference is the fit from a
# start in the right basin (R's nls(uptake ~ SSasympOff(conc, Asym, lrc, c0)) gives
# Asym 38.14, lrc -4.381, c0 51.22, the same to its printed digits).
CO2_QN1 = "conc,uptake\n" + "".join(f"{c},{u}\n" for c, u in zip([95, 175, 250, 350, 500, 675, 1000], [16.0, 30.4, 34.8, 37.2, 35.3, 39.2, 39.7], strict=True))
CO2_MODEL = "Asym*(1-exp(-exp(lrc)*(conc-c0)))"
CO2_REFERENCE = {"Asym": 38.13978001384688, "lrc": -4.380646235933781, "c0": 51.223276501558615}


def _fit(path, model, *options):
    done = runner.invoke(app, ["fit", str(path), "-m", model, "-f", "json", *options])
    assert done.exit_code in (0, 1), done.output
    return done, json.loads(done.stdout)


@pytest.fixture(scope="module")
def sine(tmp_path_factory):
    """y = sin(3x) + noise, 300 points on [0, 2 pi]."""
    x = np.linspace(0.0, 2 * np.pi, 300)
    y = np.sin(3 * x) + 0.05 * np.random.default_rng(0).standard_normal(x.size)
    path = tmp_path_factory.mktemp("sine") / "sine.csv"
    path.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y, strict=True)))
    return path


@pytest.fixture(scope="module")
def pole(tmp_path_factory):
    """y = 1/(x - 0.95) + noise at x = 0, 0.1, ..., 1.9."""
    x = np.round(np.arange(20) * 0.1, 10)
    y = 1.0 / (x - 0.95) + 0.1 * np.random.default_rng(0).standard_normal(x.size)
    path = tmp_path_factory.mktemp("pole") / "pole.csv"
    path.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y, strict=True)))
    return path


def test_sine_multistart_starts_from_the_spectrum(sine):
    _, truth = _fit(sine, "a*sin(b*x)+c", "--p0", "a=1,b=3,c=0", "--starts", "1")
    done, result = _fit(sine, "a*sin(b*x)+c", "--p0", "a=1,b=1,c=0")
    assert done.exit_code == 0 and result["success"]
    assert result["stats"]["rss"] <= truth["stats"]["rss"] * (1 + 1e-9)  # before: 140 against 0.78 (b -> 0, a straight line)
    assert abs(result["params"]["b"]["value"] - 3.0) < 5 * result["params"]["b"]["stderr"]


def test_sine_single_start_at_the_straight_line_limit_is_loud(sine):
    done, result = _fit(sine, "a*sin(b*x)+c", "--p0", "a=1,b=0.1,c=0", "--starts", "1")
    assert abs(result["params"]["b"]["value"]) < 0.01  # it does run to the limit b -> 0 ...
    warned = [w for w in (x["message"] for x in result["warnings"]) if w.startswith(NOT_DETERMINED)]
    assert warned and "a = " in warned[0] and "b = " in warned[0]  # ... and says so
    assert NOT_DETERMINED in done.stderr


def test_pole_multistart_starts_next_to_the_largest_deviation(pole):
    _, truth = _fit(pole, "a/(x-b)+c", "--p0", "a=1,b=0.93,c=0", "--starts", "1")
    done, result = _fit(pole, "a/(x-b)+c", "--p0", "a=1,b=0.5,c=0")
    assert result["stats"]["rss"] <= truth["stats"]["rss"] * (1 + 1e-9)  # before: 907 against 0.13 (b -> infinity)
    assert abs(result["params"]["b"]["value"] - 0.95) < 0.01
    assert not any(w.startswith(NOT_DETERMINED) for w in (x["message"] for x in result["warnings"]))


def test_pole_single_start_at_the_straight_line_limit_is_loud(pole):
    _, result = _fit(pole, "a/(x-b)+c", "--p0", "a=1,b=3,c=0", "--starts", "1")
    assert abs(result["params"]["b"]["value"]) > 10
    assert any(w.startswith(NOT_DETERMINED) for w in (x["message"] for x in result["warnings"]))


def test_a_start_on_the_pole_is_loud_in_every_format(pole):
    # b = 0.5 is a data point: the residuals are not finite there (before: the report
    # crashed formatting the infinite rss, and nothing was written)
    for output in ("json", "table"):
        done = runner.invoke(app, ["fit", str(pole), "-m", "a/(x-b)+c", "--p0", "a=1,b=0.5,c=0", "--starts", "1", "-f", output])
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.exception
        assert "nonfinite" in done.stdout + done.stderr  # the status: in the JSON, or in the report on stderr


def test_co2_without_a_start_is_right_or_loud_for_every_seed(tmp_path):
    path = tmp_path / "co2.csv"
    path.write_text(CO2_QN1)
    right = 0
    for seed in range(10):
        done, result = _fit(path, CO2_MODEL, "--seed", str(seed))
        values = {k: v["value"] for k, v in result["params"].items()}
        correct = all(abs(values[k] - v) <= 1e-6 * abs(v) for k, v in CO2_REFERENCE.items())
        loud = done.exit_code == 1 or not result["success"] or any(w.startswith(NOT_DETERMINED) for w in (x["message"] for x in result["warnings"]))
        assert correct or loud, (seed, values, result["warnings"])
        right += correct
        for minimum in result["starts"]["minima"]:  # the straight-line limit (lrc -> -infinity) is never plausible
            if minimum["params"]["lrc"] < -15 and abs(minimum["params"]["Asym"]) > 1e6:
                assert not minimum["plausible"], (seed, minimum)
    assert right >= 5


def test_the_structure_that_guides_the_starts_is_read_from_the_formula():
    assert FormulaModel.parse("a*sin(b*x)+c").frequencies == ((1, 1.0),)
    assert FormulaModel.parse("a*cos(2*pi*f*x+p)").frequencies == ((1, 2 * np.pi),)
    assert FormulaModel.parse("a*sin(-w*x)").frequencies == ((1, -1.0),)
    assert FormulaModel.parse("a/(x-b)+c").poles == ((1, 1.0),)
    assert FormulaModel.parse("a/(x+b)**2").poles == ((1, -1.0),)
    assert FormulaModel.parse("a*exp(-b*x)").frequencies == FormulaModel.parse("a*exp(-b*x)").poles == ()
    assert FormulaModel.parse("a*sin(b*c*x)").frequencies == ()  # two parameters: no single frequency
