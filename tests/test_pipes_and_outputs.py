"""Pipelines, atomic output, closed pipes, plots, check-jac, generators."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from typer.testing import CliRunner

from nlfit.cli.app import app

NLFIT = f"{sys.executable} -m nlfit"


def _env(tmp_path):
    return {**os.environ, "NLFIT_CACHE_DIR": str(tmp_path / "cache")}


def test_pipeline_generate_fit_json_load(tmp_path):
    command = f'{NLFIT} generate runge --seed 1 | {NLFIT} fit - --model rational | {sys.executable} -c "import json,sys; json.load(sys.stdin)"'
    done = subprocess.run(command, shell=True, capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    plain = subprocess.run(
        f"{NLFIT} generate runge --seed 1 | {NLFIT} fit - --model rational", shell=True, capture_output=True, env=_env(tmp_path), timeout=300
    )
    assert plain.returncode == 0
    assert b"\x1b[" not in plain.stdout
    json.loads(plain.stdout)


def test_failing_run_leaves_existing_output_unchanged(tmp_path, runge_csv):
    target = tmp_path / "result.json"
    target.write_text('{"earlier": "result"}\n')
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "--p0", "1,2", "-o", str(target)])
    assert done.exit_code == 2
    assert target.read_text() == '{"earlier": "result"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary left behind


def test_killed_run_leaves_existing_output_unchanged(tmp_path):
    data = tmp_path / "big.csv"
    subprocess.run(f"{NLFIT} generate runge --n 20000 --seed 3 -o {data}", shell=True, check=True, env=_env(tmp_path), timeout=120)
    target = tmp_path / "result.json"
    target.write_text("previous result\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "nlfit", "fit", str(data), "-m", "rational", "--method", "gd", "-g", "none", "--max-iter", "100000000",
         "--starts", "1", "-q", "--progress", "-o", str(target)],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    for line in process.stderr:  # synchronise on the first progress line: the fit is iterating
        if line.startswith("nlfit: progress:"):
            break
    assert process.poll() is None, "the fit ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert target.read_text() == "previous result\n"


def test_output_to_a_device_writes_through_and_keeps_it(tmp_path, runge_csv):
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "-q", "-o", os.devnull])
    assert done.exit_code == 0
    assert not os.path.isfile(os.devnull)  # still the device, not replaced by a file


@pytest.mark.parametrize("producer", ["generate runge --n 200000 --seed 0", "fit {csv} -m rational -f json"])
def test_closed_pipe_ends_quietly(tmp_path, runge_csv, producer):
    command = f"{NLFIT} {producer.format(csv=runge_csv)} | head -c 10; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0
    assert len(done.stdout) == 10


def test_plot_single_fit_and_method_comparison(tmp_path, runge_csv):
    single, compare = tmp_path / "fit.png", tmp_path / "compare.png"
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "-q", "-f", "json", "--plot", str(single)])
    assert done.exit_code == 0, done.stderr
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "--method", "newton,gn,lm", "-q", "-f", "json", "--plot", str(compare)])
    assert done.exit_code == 0, done.stderr
    for path in (single, compare):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plot_without_matplotlib_is_one_line(monkeypatch, runge_csv, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "--plot", str(tmp_path / "x.png")])
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.strip() == "nlfit: error: --plot needs matplotlib: pip install 'nlfit[plot]'"


def _lecture_forward_mode(x):
    """The lecture's hand-coded forward mode df(x, dx) for y = cos(y^pi) log(y), twice."""
    y, dy = x, 1.0
    for _ in range(2):
        a, da = y**np.pi, np.pi * y ** (np.pi - 1) * dy
        b, db = np.cos(a), -np.sin(a) * da
        c, dc = np.log(y), dy / y
        y, dy = b * c, db * c + b * dc
    return y, dy


def test_check_jac_on_the_lecture_nested_function(tmp_path):
    point = tmp_path / "point.csv"
    point.write_text("x,y\n0,0\n")
    formula = "cos((cos(b^pi)*log(b))^pi)*log(cos(b^pi)*log(b)) + 0*x"
    done = CliRunner().invoke(app, ["check-jac", str(point), "-m", formula, "--p0", "b=1.9", "-f", "json"])
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)["differences"]
    assert report["rev"]["b"]["rel"] < 1e-14  # reverse mode = forward mode
    # Forward differences with h = 1e-8 (1 + |x|): truncation h f''/(2 f') = 6.0e-7 for this function
    assert 1e-8 < report["fd"]["b"]["rel"] < 1e-6
    assert report["central"]["b"]["rel"] < report["fd"]["b"]["rel"]
    from nlfit import derivatives
    from nlfit._jax import jnp
    from nlfit.io.dataset import Dataset
    from nlfit.models.expression import FormulaModel
    from nlfit.problem import make_problem

    model = FormulaModel.parse(formula)
    problem = make_problem(model, Dataset(x=np.zeros(1), y=np.zeros(1), x_names=("x",), y_name="y"))
    _, jac = derivatives.jacobian(jnp.array([1.9]), problem, "fwd")
    value, slope = _lecture_forward_mode(1.9)
    assert float(jac[0, 0]) == pytest.approx(slope, rel=1e-13)


def test_check_jac_table_names_every_parameter(runge_csv):
    done = CliRunner().invoke(app, ["check-jac", str(runge_csv), "-m", "rational"])
    assert done.exit_code == 0
    for fragment in ("c0", "c1", "c2", "condition number of J"):
        assert fragment in done.stdout


@pytest.mark.parametrize("kind", ["exp-decay", "gaussian", "sine"])
def test_generators_recover_their_parameters(kind):
    from nlfit import fit, read_dataset
    from nlfit.cli.generate import GENERATORS

    formula, defaults, _, _, _ = GENERATORS[kind]
    done = CliRunner().invoke(app, ["generate", kind, "--seed", "5", "--n", "400", "--noise", "0.01"])
    assert done.exit_code == 0
    data = read_dataset("-", stdin=__import__("io").StringIO(done.stdout))
    start = {k: v * 1.1 + 0.05 for k, v in defaults.items()}
    result = fit(data, formula, p0=start)
    assert result.success
    for i, name in enumerate(result.param_names):
        assert abs(result.params[i] - defaults[name]) < 5 * result.stderr[i] + 1e-3


def test_generate_expr_with_params_and_errors():
    done = CliRunner().invoke(app, ["generate", "expr", "a*x^2 + b", "--params", "a=1,b=-0.5", "--x-min", "0", "--x-max", "2", "--n", "3", "--noise", "0"])
    assert done.stdout.splitlines() == ["x,y", "0.0,-0.5", "1.0,0.5", "2.0,3.5"]
    bad = CliRunner().invoke(app, ["generate", "expr", "a*x", "--params", "z=1"])
    assert bad.exit_code == 2 and "unknown parameter" in bad.stderr
    assert CliRunner().invoke(app, ["generate", "runge", "--format", "parquet"]).exit_code == 2


def test_help_has_examples_for_every_command():
    for command in ("fit", "generate", "predict", "check-jac"):
        done = CliRunner().invoke(app, [command, "--help"])
        assert done.exit_code == 0 and "Example" in done.stdout


def test_commands_without_fitting_do_not_import_jax(tmp_path):
    code = (
        "import sys; from nlfit.cli.app import app\n"
        "for args in (['--help'], ['models'], ['methods'], ['generate', 'runge', '--n', '3']):\n"
        "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
