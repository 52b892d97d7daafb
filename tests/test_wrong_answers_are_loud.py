"""A wrong answer is never reported as a success.

Multistart by default, loud diagnostics, formula variables, scale invariance, stable
statistics at every size, and one result path for single, multistart and grouped fits.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from scipy.optimize import least_squares
from typer.testing import CliRunner

from nlfit import fit
from nlfit.batch import fit_groups
from nlfit.cli.app import app
from nlfit.io.dataset import Dataset
from nlfit.io.read import read_dataset
from nlfit.options import LOSSES

runner = CliRunner()

# R's datasets Puromycin (state == "treated") and BOD.
PUROMYCIN = "conc,rate\n" + "".join(
    f"{c},{r}\n"
    for c, r in zip(
        [0.02, 0.02, 0.06, 0.06, 0.11, 0.11, 0.22, 0.22, 0.56, 0.56, 1.10, 1.10], [76, 47, 97, 107, 123, 139, 159, 152, 191, 201, 207, 200], strict=True
    )
)
BOD = "Time,demand\n1,8.3\n2,10.3\n3,19.0\n4,16.0\n5,15.6\n7,19.8\n"
MICHAELIS_MENTEN = "Vm*conc/(K+conc)"
BOD_MODEL = "A*(1-exp(-exp(lrc)*Time))"


def _reference(residuals, start):
    """scipy's lm from a start in the right basin, tolerances 1e-15: the least-squares optimum
    and its standard errors (R's nls reports the same)."""
    fitted = least_squares(residuals, start, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    dof = fitted.fun.size - fitted.x.size
    covariance = np.linalg.inv(fitted.jac.T @ fitted.jac) * (fitted.fun @ fitted.fun) / dof
    return fitted.x, np.sqrt(np.diag(covariance))


def _fit_cli(tmp_path, text, *args):
    path = tmp_path / "data.csv"
    path.write_text(text)
    done = runner.invoke(app, ["fit", str(path), *args, "-f", "json", "-q"])
    return done, (json.loads(done.stdout) if done.stdout.strip() else None)


def test_puromycin_without_a_start_reaches_r_values(tmp_path):
    done, payload = _fit_cli(tmp_path, PUROMYCIN, "-m", MICHAELIS_MENTEN)
    assert done.exit_code == 0 and payload["success"], done.stderr
    conc, rate = np.loadtxt(io.StringIO(PUROMYCIN), delimiter=",", skiprows=1, unpack=True)
    values, errors = _reference(lambda p: p[0] * conc / (p[1] + conc) - rate, [200.0, 0.1])
    ours = [payload["params"][k]["value"] for k in ("Vm", "K")]
    np.testing.assert_allclose(ours, values, rtol=1e-5)
    np.testing.assert_allclose([payload["params"][k]["stderr"] for k in ("Vm", "K")], errors, rtol=1e-5)
    # R: Vm 212.7 +- 6.947, K 0.06412 +- 0.008281
    assert round(ours[0], 2) == 212.68 and round(ours[1], 5) == 0.06412
    assert round(payload["params"]["Vm"]["stderr"], 3) == 6.947 and round(payload["params"]["K"]["stderr"], 6) == 0.008281
    assert payload["data"]["x"] == ["conc"] and payload["data"]["y"] == "rate"  # the column in the formula is the predictor


def test_bod_without_a_start_reaches_r_values(tmp_path):
    done, payload = _fit_cli(tmp_path, BOD, "-m", BOD_MODEL)
    assert done.exit_code == 0 and payload["success"], done.stderr
    time, demand = np.loadtxt(io.StringIO(BOD), delimiter=",", skiprows=1, unpack=True)
    values, errors = _reference(lambda p: p[0] * (1 - np.exp(-np.exp(p[1]) * time)) - demand, [20.0, -0.5])
    np.testing.assert_allclose([payload["params"][k]["value"] for k in ("A", "lrc")], values, rtol=1e-5)
    np.testing.assert_allclose([payload["params"][k]["stderr"] for k in ("A", "lrc")], errors, rtol=1e-5)
    assert round(payload["params"]["A"]["value"], 3) == 19.143 and round(payload["params"]["lrc"]["value"], 4) == -0.6328  # R


def test_one_start_that_ends_wrong_is_loud(tmp_path):
    """The old behaviour (--starts 1) still ends in the wrong place, but no longer quietly."""
    done, payload = _fit_cli(tmp_path, PUROMYCIN, "-m", MICHAELIS_MENTEN, "--starts", "1")
    assert done.exit_code == 1 and payload["success"] is False and payload["status"] == "suspect" and payload["termination"] == "ftol"
    assert any("worse than a constant" in w and "can be one" in w for w in (x["message"] for x in payload["warnings"]))
    assert any("pole inside the data range" in w for w in (x["message"] for x in payload["warnings"]))
    done, payload = _fit_cli(tmp_path, BOD, "-m", BOD_MODEL, "--starts", "1")
    assert done.exit_code == 1 and payload["status"] == "suspect"
    assert any(w.startswith("plateau: the model does not change with lrc") for w in (x["message"] for x in payload["warnings"]))


def test_the_starts_object_describes_the_multistart(tmp_path):
    done, payload = _fit_cli(tmp_path, PUROMYCIN, "-m", MICHAELIS_MENTEN, "--seed", "3")
    starts = payload["starts"]
    assert starts["tried"] >= 8 and 1 <= starts["converged"] <= starts["tried"]
    best = starts["minima"][0]
    assert set(best) == {"loss", "params", "count", "starts", "plausible"} and starts["screening_choice"] is None
    assert best["loss"] == pytest.approx(payload["stats"]["loss"], rel=1e-9) and starts["chosen"] in best["starts"]
    assert sorted(m["loss"] for m in starts["minima"]) == [m["loss"] for m in starts["minima"]]
    assert sum(m["count"] for m in starts["minima"]) == starts["converged"]
    again, repeated = _fit_cli(tmp_path, PUROMYCIN, "-m", MICHAELIS_MENTEN, "--seed", "3")
    assert repeated["starts"] == starts  # reproducible with --seed
    single = _fit_cli(tmp_path, PUROMYCIN, "-m", MICHAELIS_MENTEN, "--starts", "1")[1]
    assert single["starts"] is None
    linear = _fit_cli(tmp_path, PUROMYCIN, "-m", "polynomial:2", "--x", "conc")[1]
    assert linear["starts"] is None  # a linear model needs one start


def test_fits_the_data_cannot_tell_apart_are_a_warning():
    """Two equal bumps fitted with one: two different curves with (almost) the same loss."""
    x = np.linspace(-8, 8, 201)
    y = np.exp(-((x + 3) ** 2)) + np.exp(-((x - 3) ** 2)) + np.random.default_rng(0).normal(0, 0.05, x.size)
    result = fit(Dataset(x=x, y=y, x_names=("x",), y_name="y"), "a*exp(-(x-m)^2)", p0={"a": 1.0, "m": 2.0})
    plausible = [m for m in result.starts["minima"] if m["plausible"]]
    assert [round(m["params"]["m"]) for m in plausible] == [-3, 3] and result.params[1] == pytest.approx(-3.0, abs=0.01)
    assert any(w.startswith("the data do not single out one fit") and "(chosen)" in w for w in (x.message for x in result.warnings))
    # a clear winner gives no such warning, though the other starts end elsewhere
    clear = fit(Dataset(x=x, y=y + np.exp(-((x + 3) ** 2)), x_names=("x",), y_name="y"), "a*exp(-(x-m)^2)", p0={"a": 1.0, "m": 2.0})
    assert len(clear.starts["minima"]) > 1 and not any("single out" in w for w in (x.message for x in clear.warnings))


def test_warnings_go_to_stderr_once_even_when_quiet(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(PUROMYCIN)
    args = ["fit", str(path), "-m", MICHAELIS_MENTEN, "--starts", "1", "-f", "json"]
    loud = runner.invoke(app, args)
    quiet = runner.invoke(app, [*args, "-q"])
    silent = runner.invoke(app, [*args, "-qq"])
    warnings = json.loads(quiet.stdout)["warnings"]
    lines = [line for line in quiet.stderr.splitlines()]
    assert lines == [f"nlfit: warning: {w['message']}" for w in warnings]  # one line each, nothing else
    assert sum(line.startswith("nlfit: warning:") for line in loud.stderr.splitlines()) == len(warnings)  # printed once
    assert "loss history" in loud.stderr and "variables (data columns): conc   parameters: Vm, K" in loud.stderr
    assert silent.stderr == "" and silent.exit_code == quiet.exit_code == 1


def _polynomial_data(points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, points)
    truth = [1.0, -0.5, 0.2, -0.03, 0.002, -1e-4, 3e-6, -4e-8]
    y = np.polynomial.polynomial.polyval(x, truth) + rng.normal(0.0, 0.1, points)
    return Dataset(x=x, y=y, x_names=("x",), y_name="y")


@pytest.mark.parametrize("factorization", ["auto", "svd", "qr", "gram"])
def test_polynomial_standard_errors_at_scale_whatever_the_factorization(factorization):
    """Degree 7 on x in [0, 10] at 10^5 points: cond(J) ~ 1e10, so J^T J alone loses every digit."""
    data = _polynomial_data(100_000)
    result = fit(data, "polynomial:7", factorization=factorization)
    vander = np.polynomial.polynomial.polyvander(data.x, 7)
    u, s, vt = np.linalg.svd(vander, full_matrices=False)
    params = vt.T @ ((u.T @ data.y) / s)
    residuals = vander @ params - data.y
    errors = np.sqrt(np.sum((vt.T / s) ** 2, axis=1) * (residuals @ residuals) / (data.n_points - 8))
    np.testing.assert_allclose(result.stderr, errors, rtol=1e-6)
    np.testing.assert_allclose(result.params, params, rtol=1e-6)
    assert result.success and not any("rank-deficient" in w for w in (x.message for x in result.warnings))


def test_degree_eight_at_scale_has_no_false_rank_warning():
    result = fit(_polynomial_data(100_000, seed=1), "polynomial:8")
    assert result.stderr is not None and np.all(np.isfinite(result.stderr)) and not any("rank-deficient" in w for w in (x.message for x in result.warnings))


def _grouped_data(seed=7):
    rng = np.random.default_rng(seed)
    rows = []
    for g, (a, b) in enumerate([(2.0, 0.7), (1.5, 0.4), (3.0, 1.1)]):
        x = np.linspace(0.0, 5.0, 30 + 5 * g)
        sigma = 0.02 + 0.02 * rng.uniform(size=x.size)
        y = a * np.exp(-b * x) + rng.normal(0.0, 1.0, x.size) * sigma
        y[3] += 0.5  # an outlier for the robust losses
        rows += [(f"g{g}", xi, yi, si) for xi, yi, si in zip(x, y, sigma, strict=True)]
    text = "group,x,y,s\n" + "".join(f"{k},{float(x)!r},{float(y)!r},{float(s)!r}\n" for k, x, y, s in rows)
    return read_dataset("-", stdin=io.StringIO(text), sigma_column="s", group_column="group"), rows


@pytest.mark.parametrize("loss", LOSSES)
def test_grouped_fit_equals_separate_single_fits(loss):
    # both sigma conventions in one test: they share the loss's compiled programs, which two
    # tests on two xdist workers would each compile (about 12 s a loss)
    for absolute_sigma in (False, True):
        _grouped_equals_separate(loss, absolute_sigma)


def _grouped_equals_separate(loss, absolute_sigma):
    data, rows = _grouped_data()
    options = dict(loss=loss, f_scale=2.0, absolute_sigma=absolute_sigma, conf_level=0.9)
    batch = fit_groups(data, "a*exp(-b*x)", **options)
    for key, grouped in zip(batch.keys, batch.results, strict=True):
        member = [r for r in rows if r[0] == key]
        alone = Dataset(
            x=np.array([r[1] for r in member]), y=np.array([r[2] for r in member]), sigma=np.array([r[3] for r in member]), x_names=("x",), y_name="y"
        )
        single = fit(alone, "a*exp(-b*x)", **options)
        assert grouped.status == single.status and grouped.success
        np.testing.assert_allclose(grouped.params, single.params, rtol=1e-9)
        assert grouped.loss == pytest.approx(single.loss, rel=1e-9)
        np.testing.assert_allclose(grouped.stderr, single.stderr, rtol=1e-7)
        np.testing.assert_allclose(grouped.intervals, single.intervals, rtol=1e-7)
        row, payload = grouped.to_json(history=False), single.to_json()
        assert row["stats"]["conf_level"] == payload["stats"]["conf_level"] == 0.9 and row["absolute_sigma"] is payload["absolute_sigma"] is absolute_sigma
        assert set(payload) - set(row) == {"history"} and row["group"] == key


def _diverging(points=40):
    """y = 2 x, fitted as a*x by gradient descent with a step too large: every step makes the
    loss larger (|1 - step * sum x^2| = 1.05), so the best point is the start."""
    x = np.linspace(0.1, 1.0, points)
    step = 2.05 / np.sum(x * x)
    return x, 2.0 * x, step


def _ctrl_c_at_call(n: int):
    """A progress callback that raises KeyboardInterrupt on its n-th call (Ctrl-C mid-fit)."""
    calls = []

    def interrupt(*progress):
        calls.append(progress)
        if len(calls) == n:
            raise KeyboardInterrupt

    return interrupt


def test_interrupted_single_fit_returns_its_best_point():
    x, y, step = _diverging()
    interrupt = _ctrl_c_at_call(3)

    result = fit(
        Dataset(x=x, y=y, x_names=("x",), y_name="y"), "a*x", p0=[1.0], method="gd", globalization="none", step=step, max_iter=100_000, on_iteration=interrupt
    )
    assert result.status.label == "interrupted" and not result.success and result.counts["iterations"] > 1
    assert result.history[-1]["loss"] > result.history[0]["loss"]  # it was getting worse
    assert result.params[0] == 1.0 and result.loss == pytest.approx(result.history[0]["loss"], rel=1e-12)  # the best point: the start


def test_interrupted_grouped_fit_returns_each_groups_best_point():
    x, y, step = _diverging()
    keys = np.repeat(["u", "v"], x.size)
    data = Dataset(x=np.tile(x, 2), y=np.concatenate([y, 1.5 * y]), x_names=("x",), y_name="y", groups=keys)
    interrupt = _ctrl_c_at_call(3)
    batch = fit_groups(data, "a*x", p0=[1.0], method="gd", globalization="none", step=step, max_iter=100_000, on_progress=interrupt)
    for result, target in zip(batch.results, (2.0, 3.0), strict=True):
        assert result.status.label == "interrupted" and result.counts["iterations"] > 1
        assert result.params[0] == 1.0 and result.loss == pytest.approx(0.5 * np.sum((x - target * x) ** 2), rel=1e-12)


def test_a_data_column_in_a_formula_is_a_variable(tmp_path):
    t = np.linspace(0.0, 4.0, 30)
    z = np.sin(3 * t)
    text = "t,z,y\n" + "".join(f"{a!r},{b!r},{c!r}\n" for a, b, c in zip(t.tolist(), z.tolist(), (2.0 * np.exp(-0.5 * t) + z).tolist(), strict=True))
    for extra in ([], ["--x", "t"]):
        done, payload = _fit_cli(tmp_path, text, "-m", "a*exp(-b*t) + z", *extra)
        assert done.exit_code == 0, done.stderr
        assert list(payload["params"]) == ["a", "b"] and payload["data"]["x"] == ["t", "z"]
        assert payload["params"]["a"]["value"] == pytest.approx(2.0, rel=1e-8) and payload["params"]["b"]["value"] == pytest.approx(0.5, rel=1e-8)


def test_an_unused_column_or_no_column_is_a_clear_error(tmp_path):
    text = "t,y\n0,1\n1,0.5\n2,0.3\n3,0.2\n"
    done, _ = _fit_cli(tmp_path, text, "-m", "a*exp(-b*x)", "--x", "t")
    assert done.exit_code == 2 and "--x column 't' is not used by the formula" in done.stderr and len(done.stderr.splitlines()) == 1
    done, _ = _fit_cli(tmp_path, text, "-m", "a*exp(-b*x)")
    assert done.exit_code == 2 and "uses none of the data columns" in done.stderr and "(a, b, x)" in done.stderr
    with pytest.raises(Exception, match="not used by the formula"):
        fit(Dataset(x=np.arange(4.0), y=np.ones(4), x_names=("t",), y_name="y"), "a*exp(-b*x)", p0=[1.0, 1.0])


@pytest.mark.parametrize("factor", [1e-300, 1e30])
@pytest.mark.parametrize("p0", [None, {"Vm": 1.0, "K": 0.03}])
def test_scaled_data_give_the_rescaled_parameters(factor, p0):
    conc, rate = np.loadtxt(io.StringIO(PUROMYCIN), delimiter=",", skiprows=1, unpack=True)
    sigma = 1.0 + 0.1 * np.arange(conc.size)
    plain = fit(Dataset(x=conc, y=rate, sigma=sigma, x_names=("conc",), y_name="rate"), MICHAELIS_MENTEN, p0=p0)
    scaled = fit(Dataset(x=conc, y=rate * factor, sigma=sigma * factor, x_names=("conc",), y_name="rate"), MICHAELIS_MENTEN, p0=p0)
    assert scaled.success and scaled.starts["chosen"] == plain.starts["chosen"] and scaled.warnings == plain.warnings
    np.testing.assert_allclose(scaled.params, plain.params * [factor, 1.0], rtol=1e-8)
    np.testing.assert_allclose(scaled.stderr, plain.stderr * [factor, 1.0], rtol=1e-8)
    assert scaled.stats["r2"] == pytest.approx(plain.stats["r2"], rel=1e-10)
    alone = fit(Dataset(x=conc, y=rate * factor, x_names=("conc",), y_name="rate"), MICHAELIS_MENTEN)  # no sigma
    np.testing.assert_allclose(alone.params, fit(Dataset(x=conc, y=rate, x_names=("conc",), y_name="rate"), MICHAELIS_MENTEN).params * [factor, 1.0], rtol=1e-8)


def test_one_start_far_off_at_a_tiny_scale_is_loud_not_converged():
    """y of size 1e-8 from Vm = 1: the scaling of K froze at its first size and the solver
    stopped as converged where the gradient is large."""
    conc, rate = np.loadtxt(io.StringIO(PUROMYCIN), delimiter=",", skiprows=1, unpack=True)
    result = fit(Dataset(x=conc, y=rate * 1e-10, x_names=("conc",), y_name="rate"), MICHAELIS_MENTEN, p0={"Vm": 1.0, "K": 0.3}, starts=1)
    assert (
        not result.success
        and result.status.label == "suspect"
        and any("gradient at the result is not small" in w for w in (x.message for x in result.warnings))
    )


def test_screening_keeps_the_given_start_when_it_fits_all_the_rows_better():
    """A narrow peak that none of the 2048 screening rows hits: the starts screened on them see
    a flat line and the screening picks another start; on all the rows the given start (next
    to the peak) finds it, and wins."""
    from nlfit.multistart import SCREEN_ROWS

    n = 20_000
    x = np.linspace(0.0, 10.0, n)
    screened = np.rint(np.linspace(0.0, 1.0, SCREEN_ROWS) * (n - 1)).astype(int)
    center = 0.5 * (x[screened[SCREEN_ROWS // 2]] + x[screened[SCREEN_ROWS // 2 + 1]])
    y = 1.0 + 5.0 * np.exp(-(((x - center) / 0.0006) ** 2)) + np.random.default_rng(0).normal(0, 0.05, n)
    assert y[screened].max() < 2.0  # the screening rows do not see the peak
    data = Dataset(x=x, y=y, x_names=("x",), y_name="y")
    p0 = {"c": 1.0, "a": 4.0, "m": center - 0.0002, "s": 0.001}
    one = fit(data, "c + a*exp(-((x-m)/s)^2)", p0=p0, starts=1)
    auto = fit(data, "c + a*exp(-((x-m)/s)^2)", p0=p0)
    assert one.params[1] == pytest.approx(5.0, rel=0.05) and auto.starts["screened_rows"] == SCREEN_ROWS
    assert auto.starts["screening_choice"] != 0 and auto.starts["chosen"] == 0 and auto.starts["chosen_start"] == "given"
    assert auto.loss == pytest.approx(one.loss, rel=1e-9) and auto.params[1] == pytest.approx(one.params[1], rel=1e-6)
    assert not any("single out" in w for w in (x.message for x in auto.warnings))  # the screening rows' minima say nothing here


def test_a_column_named_like_a_constant_is_a_variable(tmp_path):
    text = "x,e,y\n1,0.5,3.5\n2,0.1,4.3\n3,0.9,8.7\n4,0.2,8.6\n5,0.7,12.1\n6,0.3,12.9\n"  # y = 2 x + 3 e
    for extra in ([], ["--x", "x,e"]):
        done, payload = _fit_cli(tmp_path, text, "-m", "a*x + b*e", *extra)
        assert done.exit_code == 0 and payload["data"]["x"] == ["x", "e"], done.stderr
        assert payload["params"]["a"]["value"] == pytest.approx(2.0, rel=1e-10) and payload["params"]["b"]["value"] == pytest.approx(3.0, rel=1e-10)
    done, payload = _fit_cli(tmp_path, text, "-m", "a*pi*x + b*e")  # pi is no column: the constant
    assert payload["params"]["a"]["value"] == pytest.approx(2.0 / np.pi, rel=1e-10) and list(payload["params"]) == ["a", "b"]


@pytest.mark.parametrize("loss", ["huber", "soft_l1", "cauchy", "arctan"])
def test_robust_fits_of_a_straight_line_with_outliers(loss):
    """Robust losses are not convex, even for a model linear in its parameters: several starts,
    scipy's best answer, and no false alarm although R^2 < 0 (the outliers)."""
    x = np.arange(10.0)
    y = x + 1.0
    y[:2] = 1000.0
    data = Dataset(x=x, y=y, x_names=("x",), y_name="y")
    result = fit(data, "a*x + b", loss=loss)
    best = min(
        (
            least_squares(lambda p: p[0] * x + p[1] - y, s, loss=loss, method="trf", ftol=1e-15, xtol=1e-15, gtol=1e-15)
            for s in ([1, 1], [0, 0], [0.5, 5], [-3, 500])
        ),
        key=lambda r: r.cost,
    )
    assert result.success and result.starts["tried"] > 1, result.warnings
    assert result.loss == pytest.approx(best.cost, rel=1e-9)
    assert result.stats["r2"] < 0 and not any(f.fatal for f in result.findings)


def test_a_robust_fit_that_stalls_on_a_line_is_caught():
    """y = 205.2 + 0.5 x: from the default start a single huber fit stalls far from the answer;
    a constant has a lower loss, and the model can be that constant: suspect."""
    x = np.arange(10.0)
    y = 205.2 + 0.5 * x + np.array([0.3, -0.2, 0.1, 0.0, -0.1, 0.2, -0.3, 0.1, 0.0, -0.1])
    data = Dataset(x=x, y=y, x_names=("x",), y_name="y")
    fixed = fit(data, "a*x + b", loss="huber")
    assert fixed.success and fixed.params[0] == pytest.approx(0.5, abs=0.05)
    single = fit(data, "a*x + b", loss="huber", starts=1)
    if not np.isclose(single.loss, fixed.loss, rtol=1e-6):  # the single start stalled: it must say so
        assert not single.success and any(f.fatal for f in single.findings)


def test_constant_data_and_a_fit_that_is_not():
    x = np.linspace(0.0, 4.0, 20)
    data = Dataset(x=x, y=np.full(20, 5.0), x_names=("x",), y_name="y")
    result = fit(data, "a*exp(-b*x)", p0={"a": 1.0, "b": -50.0}, starts=1)
    assert not result.success and any(w.startswith("the data are constant and the fit is not") for w in (x.message for x in result.warnings))
    assert fit(data, "a*exp(-b*x)", p0={"a": 1.0, "b": -50.0}).success  # several starts find a = 5, b = 0


def test_interrupted_multistart_returns_the_best_start():
    """Ctrl-C during a multistart gradient descent: the reported point is the lowest loss over
    every start, here the one whose linear parameter was solved for (the exact answer)."""
    x, y, step = _diverging()
    interrupt = _ctrl_c_at_call(3)

    data = Dataset(x=x, y=y, x_names=("x",), y_name="y")
    result = fit(data, "a*x", p0=[1.0], method="gd", globalization="none", step=step, max_iter=100_000, starts=4, on_iteration=interrupt)
    assert result.status.label == "interrupted" and result.starts["tried"] == 4
    assert result.params[0] == pytest.approx(2.0, rel=1e-12) and result.loss < 1e-20
