"""Hostile input, faults during a fit, resource limits, property-based tests.

Examples per hypothesis test (fixed, so CI runs the same amount every time): the formula
parser 400, the CSV reader 200, parameter recovery 25.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import started
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nlfit import fit
from nlfit.cli.app import app
from nlfit.errors import NlfitError
from nlfit.io.dataset import Dataset
from nlfit.io.read import read_dataset
from nlfit.models.expression import FormulaModel

FORMULA_ALPHABET = st.sampled_from(list("abxy0123456789.+-*/^()_ ,=[]{}'\"\\:;!@#$%&|<>~`e") + ["exp", "log", "__", "import", "lambda", "os"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(FORMULA_ALPHABET, max_size=25).map("".join)))
def test_formula_parser_only_raises_its_own_error_and_runs_nothing(text):
    marker = "/tmp/nlfit-hypothesis-pwned"
    try:
        model = FormulaModel.parse(text, x_names=("x",))
    except NlfitError:
        return
    finally:
        assert not os.path.exists(marker)
    assert model.param_names and all(name.isidentifier() for name in model.param_names)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_csv_reader_gives_a_clean_error_or_a_valid_dataset(raw):
    try:
        data = read_dataset("-", stdin=io.BytesIO(raw))
    except NlfitError as error:
        assert str(error) and "\n" not in str(error).strip()
        return
    assert data.n_points >= 1 and np.all(np.isfinite(data.x)) and np.all(np.isfinite(data.y))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.floats(0.5, 5.0),
    b=st.floats(0.2, 2.0),
    noise=st.floats(0.005, 0.05),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_problems_recover_their_parameters(a, b, noise, seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, 60)
    data = Dataset(x=x, y=a * np.exp(-b * x) + rng.normal(0, noise, x.size), x_names=("x",), y_name="y")
    result = fit(data, "a*exp(-b*x)", p0={"a": 1.0, "b": 1.0})
    assert result.success
    z = np.abs(result.params - [a, b]) / result.stderr
    # |z| < 5 fails with probability ~6e-7 per parameter for a correct fit and standard error
    assert np.all(z < 5.0), z


def test_standard_errors_have_the_expected_coverage():
    """Over 200 simulated data sets about 95% of the 95% intervals hold the truth."""
    from nlfit.batch import fit_groups

    rng = np.random.default_rng(21)
    x = np.linspace(0.0, 5.0, 40)
    groups = 200
    y = 2.0 * np.exp(-0.7 * x) + rng.normal(0, 0.02, (groups, x.size))
    data = Dataset(x=np.tile(x, groups), y=y.ravel(), x_names=("x",), y_name="y", groups=np.repeat(np.arange(groups).astype(str), x.size))
    result = fit_groups(data, "a*exp(-b*x)", p0=[1.0, 1.0])
    from scipy.stats import t

    q = t.ppf(0.975, x.size - 2)
    covered = np.abs(result.params - [2.0, 0.7]) <= q * result.stderr
    rate = covered.mean()
    assert 0.90 <= rate <= 0.99, rate  # binomial spread of 400 intervals at 95% is about +-2%


def _series(x, y):
    return Dataset(x=np.asarray(x, float), y=np.asarray(y, float), x_names=("x",), y_name="y")


def test_nan_at_trial_points_is_rejected_and_the_fit_goes_on():
    x = np.linspace(1.0, 3.0, 30)
    data = _series(x, np.log(x - 0.99))
    # From b = -2 the full Gauss-Newton step lands at b = 5.07, where log(x - b) is NaN everywhere.
    r, jac = np.log(x + 2.0) - data.y, -1.0 / (x + 2.0)
    assert -2.0 - (jac @ r) / (jac @ jac) > x.max()
    searched = fit(data, "log(x - b)", p0={"b": -2.0}, method="gn", globalization="line-search")
    assert searched.history[1]["nfev"] - searched.history[0]["nfev"] >= 2  # the NaN trial was backtracked
    trusted = fit(data, "log(x - b)", p0={"b": -2.0}, method="lm", globalization="trust-region")
    assert any(not row["accepted"] for row in trusted.history)  # steps into the NaN region are rejected
    for result in (searched, trusted):
        assert result.success and result.params[0] == pytest.approx(0.99, rel=1e-8)
        assert all(np.isfinite(row["loss"]) for row in result.history)


def test_overflow_in_the_model_shrinks_the_step():
    x = np.linspace(0.0, 10.0, 40)
    data = _series(x, np.exp(0.3 * x))
    result = fit(data, "exp(b*x)", p0={"b": 60.0}, starts=1)  # exp(600) overflows at the start... of the far points
    assert result.status.label == "nonfinite"  # non-finite at the start: reported, not crashed
    rescued = fit(data, "exp(b*x)", p0={"b": 60.0})  # multistart: the other starts are finite
    assert rescued.success and rescued.params[0] == pytest.approx(0.3, rel=1e-8)
    result = fit(data, "exp(b*x)", p0={"b": 3.0}, globalization="trust-region")
    assert result.success and result.params[0] == pytest.approx(0.3, rel=1e-8)


def test_singular_jacobian_at_the_start():
    x = np.linspace(0.0, 4.0, 30)
    data = _series(x, 2.0 * np.exp(-0.5 * x))
    result = fit(data, "a*exp(-b*x)", p0={"a": 0.0, "b": 1.0})  # d/db = 0 at a = 0
    assert result.success and np.allclose(result.params, [2.0, 0.5], rtol=1e-8)


def test_constant_y_and_a_single_distinct_x():
    flat = fit(_series(np.linspace(0, 1, 10), np.full(10, 3.0)), "polynomial:1")
    assert flat.success and np.allclose(flat.params, [3.0, 0.0], atol=1e-12)
    assert flat.stats["r2"] is None  # no variance to explain
    single = fit(_series(np.full(10, 2.0), np.linspace(0, 1, 10)), "a + b*x", p0=[0.0, 0.0])
    assert single.stderr is None and any("not identifiable" in w for w in (x.message for x in single.warnings))


def test_more_parameters_than_points_is_a_clear_error():
    with pytest.raises(NlfitError, match="3 free parameters but the data have only 2 point"):
        fit(_series([0.0, 1.0], [1.0, 2.0]), "polynomial:2")


def test_values_near_the_ends_of_the_float_range():
    x = np.linspace(1.0, 2.0, 20)
    tiny = fit(_series(x, 1e-300 * x), "a*x", p0=[1e-300])
    assert tiny.success and tiny.params[0] == pytest.approx(1e-300, rel=1e-10)
    huge = fit(_series(x * 1e300, 2.0 * x * 1e300), "a*x", p0=[1.0])  # residuals ~1e300: scaled, their squares do not overflow
    assert huge.success and huge.params[0] == pytest.approx(2.0, rel=1e-12)
    overflow = fit(_series(x, 1e300 * x), "a*x*x*x", p0=[1e300])  # the model overflows for most steps
    assert overflow.status.label in {"nonfinite", "gtol", "ftol", "xtol", "stalled"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("x,x\n1,2\n", "duplicate column names: x"),
        ("x,y\n", "header but no data rows"),
        ("", "empty"),
        ("x,y\n1,2\n3\n", None),
    ],
)
def test_bad_files(tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    done = CliRunner().invoke(app, ["fit", str(path), "-m", "polynomial:1", "--missing", "error"])
    assert done.exit_code == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    if fragment:
        assert fragment in done.stderr


def test_empty_group_key_is_its_own_group():
    from nlfit.batch import fit_groups

    text = "g,x,y\n,0,1\n,1,2\n,2,3\nb,0,1\nb,1,3\nb,2,5\n"
    data = read_dataset("-", stdin=io.StringIO(text), group_column="g")
    result = fit_groups(data, "polynomial:1")
    assert result.keys == ["", "b"]
    np.testing.assert_allclose(result.params, [[1.0, 1.0], [1.0, 2.0]], atol=1e-10)


def _slow_fit_command(tmp_path, *extra):
    data = tmp_path / "data.csv"
    if not data.exists():
        x = np.linspace(-1, 1, 5000)
        data.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), (1 / (1 + 10 * x * x)).tolist(), strict=True)))
    return [sys.executable, "-m", "nlfit", "fit", str(data), "-m", "rational", "--p0", "1,0,1", "--method", "gd", "-g", "none",
            "--step", "1e-6", "--max-iter", "100000000", "--starts", "1", "-f", "json", "-q", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One compilation cache for this module's subprocesses (not the user's)."""
    return {**os.environ, "NLFIT_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def _iterating(command, env, **streams):
    """nlfit with --progress, once it printed its first progress line: the fit is under way."""
    return started([*command, "--progress"], "nlfit: progress:", env, **streams)


def test_sigint_mid_fit_writes_the_best_result_and_exits_130(tmp_path, compile_cache):
    with _iterating(_slow_fit_command(tmp_path), compile_cache, stdout=subprocess.PIPE) as process:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    payload = json.loads(out)
    assert payload["status"] == "interrupted" and payload["success"] is False
    assert payload["counts"]["iterations"] > 0
    assert payload["stats"]["loss"] <= payload["history"][0]["loss"]


def test_sigint_with_output_file_writes_it_atomically(tmp_path, compile_cache):
    target = tmp_path / "result.json"
    with _iterating(_slow_fit_command(tmp_path, "-o", str(target)), compile_cache, stdout=subprocess.DEVNULL) as process:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    assert process.returncode == 130
    assert json.loads(target.read_text())["status"] == "interrupted"


def test_timeout_and_max_iter_are_honoured(tmp_path, compile_cache):
    # The fit alone would run for minutes; the result says it stopped for the time limit.
    done = subprocess.run(_slow_fit_command(tmp_path, "--timeout", "2"), env=compile_cache, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "timeout"
    result = fit(_series(np.linspace(0, 1, 20), np.linspace(0, 1, 20) ** 2), "a*x^b", p0=[1.0, 1.0], method="gd", max_iter=7)
    assert result.counts["iterations"] == 7 and result.status.label == "max-iter"


def test_pathological_formula_is_refused():
    for text in ("(" * 100_000 + "x" + ")" * 100_000, "x" + "+x" * 20_000, "9" * 100_000 + "**" + "9" * 100_000):
        with pytest.raises(NlfitError):
            FormulaModel.parse(text, x_names=("x",))


def test_ten_million_rows(tmp_path):
    """A 10^7-row file is read and fitted in bounded time and memory (J^T J, no m x n Jacobian)."""
    path = tmp_path / "big.csv"
    x = np.linspace(-1.0, 1.0, 10_000_000)
    y = 1.0 / (1.0 + 10.0 * x * x) + np.random.default_rng(0).normal(0, 0.5, x.size)
    try:  # pyarrow (the test extra) writes it in 2 s, numpy's savetxt in about 15
        import pyarrow as pa
        import pyarrow.csv as arrow_csv

        arrow_csv.write_csv(pa.table({"x": x, "y": y}), path)  # shortest round-trip digits: the same values
    except ImportError:
        with open(path, "w") as handle:
            handle.write("x,y\n")
            np.savetxt(handle, np.column_stack([x, y]), delimiter=",", fmt="%.17g")
    del x, y
    code = (
        "import resource, sys, time; from nlfit import fit, read_dataset; t = time.perf_counter();"
        f"r = fit(read_dataset({str(path)!r}), 'rational');"
        "print(r.status.label, round(time.perf_counter() - t, 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    status, seconds, peak_mb = done.stdout.split()
    assert status in {"ftol", "xtol", "gtol"}
    assert float(peak_mb) < 6000, peak_mb  # a few copies of x and y (160 MB each), not an m x n x k blow-up
