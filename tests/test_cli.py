"""The command line: real commands, JSON on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import NIST_DIR
from typer.testing import CliRunner

from nlfit.cli.app import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_generate_is_reproducible_with_seed():
    first = invoke("generate", "runge", "--seed", "4", "--n", "20")
    second = invoke("generate", "runge", "--seed", "4", "--n", "20")
    assert first.exit_code == 0
    assert first.stdout == second.stdout
    lines = first.stdout.splitlines()
    assert lines[0] == "x,y" and len(lines) == 21
    assert lines[1].startswith("-1.0,")


def test_fit_json_contract(runge_csv):
    result = invoke("fit", runge_csv, "--model", "rational", "--format", "json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    for key in ("success", "status", "message", "model", "method", "globalization", "params", "stats", "counts", "history"):
        assert key in payload
    assert payload["success"] is True
    assert list(payload["params"]) == ["c0", "c1", "c2"]
    assert set(payload["params"]["c0"]) >= {"value", "stderr"}
    assert set(payload["stats"]) >= {"rss", "n", "dof"}
    assert payload["stats"]["n"] == 200 and payload["stats"]["dof"] == 197
    assert set(payload["counts"]) == {"iterations", "nfev", "njev"}
    row = payload["history"][-1]
    assert set(row) >= {"iteration", "loss", "grad_norm", "step_norm", "accepted"}
    assert "loss history" in result.stderr


def test_fit_reads_stdin_and_csv_format(runge_csv):
    result = invoke("fit", "-", "--model", "polynomial:2", "--format", "csv", input=runge_csv.read_text())
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "name,value,stderr,ci_low,ci_high"
    assert [line.split(",")[0] for line in lines[1:]] == ["c0", "c1", "c2"]


def test_quiet_silences_stderr(runge_csv):
    result = invoke("fit", runge_csv, "--model", "rational", "--quiet", "--format", "json")
    assert result.exit_code == 0
    assert result.stderr == ""


def test_config_file_and_flags_override(tmp_path, runge_csv):
    config = tmp_path / "fit.toml"
    config.write_text('model = "rational"\nmethod = "gn"\nmax-iter = 3\n')
    from_config = json.loads(invoke("fit", runge_csv, "--config", config, "--format", "json", "-q").stdout)
    assert from_config["method"] == "gn" and from_config["counts"]["iterations"] <= 3
    overridden = json.loads(invoke("fit", runge_csv, "--config", config, "--method", "lm", "--max-iter", "100", "-q", "-f", "json").stdout)
    assert overridden["method"] == "lm" and overridden["success"]


def test_not_converged_exits_1_and_still_writes_the_result(runge_csv):
    result = invoke("fit", runge_csv, "--model", "rational", "--max-iter", "2", "--format", "json", "-q")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["success"] is False and payload["status"] == "max-iter"


def test_thurber_from_nist_file_start_1():
    result = invoke("fit", NIST_DIR / "Thurber.dat", "--model", "rational:3/3", "--start", "1", "-f", "json", "-q")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["success"]


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_error_missing_file(tmp_path):
    _assert_one_line_error(invoke("fit", tmp_path / "nope.csv", "--model", "rational"), "not found", "nope.csv")


def test_error_empty_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _assert_one_line_error(invoke("fit", empty, "--model", "rational"), "empty")


def test_error_cell_not_a_number(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n0,1\n1,2\n2,abc\n3,4\n")
    _assert_one_line_error(invoke("fit", bad, "--model", "polynomial:1"), "row 3", "'y'", "abc")


def test_error_missing_cell(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n0,1\n,2\n")
    _assert_one_line_error(invoke("fit", bad, "--model", "polynomial:1", "--missing", "error"), "row 2", "'x'", "missing")


def test_error_unknown_column(runge_csv):
    _assert_one_line_error(invoke("fit", runge_csv, "--model", "rational", "--y", "zz"), "unknown column 'zz'")


def test_error_unknown_model(runge_csv):
    _assert_one_line_error(invoke("fit", runge_csv, "--model", "splines"), "unknown model 'splines'")


def test_error_wrong_number_of_p0(runge_csv):
    _assert_one_line_error(invoke("fit", runge_csv, "--model", "rational", "--p0", "1,2"), "--p0 has 2 value(s)", "3 parameters")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--method", "bfgs"], "unknown --method"),
        (["--globalization", "wolfe"], "unknown --globalization"),
        (["--jac", "symbolic"], "--jac must be one of"),
        (["--ftol", "-1"], "--ftol must be"),
        (["--p0", "c9=1"], "unknown parameter"),
        (["--format", "xml"], "--format must be one of"),
    ],
)
def test_error_bad_options(runge_csv, args, fragment):
    _assert_one_line_error(invoke("fit", runge_csv, "--model", "rational", *args), fragment)


def test_real_subprocess_pipeline(tmp_path):
    """nlfit generate | nlfit fit - : stdout is JSON with no ANSI codes, report on stderr."""
    env = {**os.environ, "NLFIT_CACHE_DIR": str(tmp_path / "cache")}
    command = f"{sys.executable} -m nlfit generate runge --noise 0.5 --seed 0 | {sys.executable} -m nlfit fit - --model rational --method lm"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout
    payload = json.loads(done.stdout)
    assert payload["success"] and payload["method"] == "lm"
    assert "parameters" in done.stderr
