"""Options reach every path (grouped fits, check-jac, predict, TOML configs, NIST files) and
odd inputs get one-line errors: each test was a bug found in review, reproducible before its fix."""

from __future__ import annotations

import json

import numpy as np
from conftest import NIST_DIR
from typer.testing import CliRunner

from nlfit.cli.app import app

runner = CliRunner()


def test_fix_and_bounds_reach_grouped_fits(tmp_path):
    many = tmp_path / "many.csv"
    many.write_text(runner.invoke(app, ["generate", "exp-decay", "--groups", "3", "--n", "20", "--seed", "2"]).stdout)
    done = runner.invoke(app, ["fit", str(many), "--group-by", "group", "-m", "a*exp(-b*x)", "--p0", "a=1,b=1", "--fix", "b=0.7", "-f", "json", "-q"])
    assert done.exit_code == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(row["params"]["b"]["value"] == 0.7 and row["stats"]["dof"] == 19 for row in rows)  # 20 points, 1 estimated
    done = runner.invoke(app, ["fit", str(many), "--group-by", "group", "-m", "a*exp(-b*x)", "--p0", "a=1,b=0.5", "--bounds", "b=0:0.8", "-f", "json", "-q"])
    assert all(json.loads(line)["params"]["b"]["value"] <= 0.8 for line in done.stdout.splitlines())
    bad = runner.invoke(app, ["fit", str(many), "--group-by", "group", "-m", "a*exp(-b*x)", "--p0", "a=1,b=1", "--engine", "bogus"])
    assert bad.exit_code == 2 and "--engine must be local or dask" in bad.stderr


def test_a_collapsed_trust_region_with_a_steep_gradient_is_not_convergence(runge_csv):
    # d/db underflows to ~1e-44: no step helps b, and the trust region collapses
    done = runner.invoke(app, ["fit", str(runge_csv), "-m", "a*(1-exp(-b*(x+2)*100))", "--p0", "a=5,b=1", "--starts", "1", "-f", "json", "-q"])
    payload = json.loads(done.stdout)
    assert done.exit_code == 1 and payload["success"] is False and payload["status"] == "stalled"


def test_non_nist_dat_file_is_an_input_error(tmp_path, runge_csv):
    fake = tmp_path / "r.dat"
    fake.write_text("NIST/ITL StRD\nModel: y = b1*x\n" + runge_csv.read_text())  # looks like NIST, is not
    done = runner.invoke(app, ["fit", str(fake), "-m", "rational"])
    assert done.exit_code == 2 and "not a NIST StRD" in done.stderr
    plain = tmp_path / "g.dat"  # a data file that is not NIST's (gnuplot's .dat) is read as data
    plain.write_text(runge_csv.read_text())
    assert runner.invoke(app, ["fit", str(plain), "-m", "polynomial:2", "--starts", "1", "-q"]).exit_code == 0


def test_predict_on_a_binary_file_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    done = runner.invoke(app, ["predict", str(bad), "--at", "1"])
    assert done.exit_code == 2 and "UTF-8" in done.stderr
    assert runner.invoke(app, ["predict", str(bad), "--range=0:1:3:9"]).exit_code == 2


def test_plot_to_a_missing_folder_fails_before_fitting(runge_csv, tmp_path):
    done = runner.invoke(app, ["fit", str(runge_csv), "-m", "rational", "--plot", str(tmp_path / "nope" / "x.png")])
    assert done.exit_code == 2 and done.stdout == "" and "does not exist" in done.stderr


def test_check_jac_json_has_no_nan_or_infinity(runge_csv):
    done = runner.invoke(app, ["check-jac", str(runge_csv), "-m", "a+0*b*x", "--p0", "1,1", "-f", "json"])

    def refuse(constant):
        raise ValueError(constant)

    payload = json.loads(done.stdout, parse_constant=refuse)
    assert payload["cond"] is None  # infinite: J is rank-deficient


def test_toml_lists_and_partial_p0_on_a_nist_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('x = ["x1", "x2"]\nmodel = "log(y) = b1 - b2*x1*exp(-b3*x2)"\nmethod = ["lm"]\n')
    done = runner.invoke(app, ["fit", str(NIST_DIR / "Nelson.dat"), "--config", str(config), "--start", "2", "-f", "json", "-q"])
    assert done.exit_code == 0, done.stderr
    # only b1 named: b2 comes from NIST's start 1 (not from 1), and the fit converges
    done = runner.invoke(app, ["fit", str(NIST_DIR / "Misra1a.dat"), "--p0", "b1=250", "-f", "json", "-q"])
    payload = json.loads(done.stdout)
    assert done.exit_code == 0 and np.isclose(payload["params"]["b1"]["value"], 238.94212918, rtol=1e-6)
