"""FitOptions holds every fit option once: the command line's help, the config file's keys,
the JSON echo and the solver's Settings all come from its fields, and it checks itself."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import typer
from conftest import NIST_DIR
from typer.testing import CliRunner

from nlfit.batch import fit_groups
from nlfit.cli.app import app
from nlfit.errors import ModelError, OptionError
from nlfit.fitting import fit
from nlfit.io.dataset import Dataset
from nlfit.io.read import read_dataset
from nlfit.models.registry import model_for
from nlfit.options import DEFAULTS, NAMES, FitOptions, help_text
from nlfit.solvers.loop import Settings
from nlfit.start import choose_start

runner = CliRunner()


def _line(n=12):
    x = np.linspace(0.0, 1.0, n)
    return Dataset(x=x, y=3.0 * x + 1.0 + 0.01 * np.sin(7 * x), x_names=("x",), y_name="y")


def test_every_field_is_a_flag_of_fit_whose_help_is_the_fields():
    command = typer.main.get_command(app).commands["fit"]
    flags = {param.name: param for param in command.params}
    for name in NAMES:
        option = flags[name]  # the typer parameter has the field's name
        assert option.opts[0] == "--" + name.replace("_", "-")
        assert option.help == help_text(name)
        default = getattr(DEFAULTS, name)
        if isinstance(default, (float, int)) and not isinstance(default, bool) and "{default}" in _raw_help(name):
            assert str(default) in option.help or f"{default:g}" in option.help  # the help shows the default in force


def _raw_help(name):
    return next(f for f in dataclasses.fields(FitOptions) if f.name == name).metadata["help"]


def test_settings_are_made_from_the_options_and_have_no_defaults_of_their_own():
    options = FitOptions(ftol=1e-9, max_iter=7, step=0.5, momentum=0.25, method="gd", globalization="none")
    assert options.settings() == Settings(ftol=1e-9, xtol=DEFAULTS.xtol, gtol=DEFAULTS.gtol, max_iter=7, step=0.5, momentum=0.25)
    with pytest.raises(TypeError):
        Settings()  # every default lives in FitOptions


def test_none_means_the_default_and_names_are_canonical():
    options = FitOptions.of({"method": "levenberg-marquardt", "ftol": None, "starts": "8"})
    assert options.method == "lm" and options.globalization == "trust-region" and options.ftol == DEFAULTS.ftol and options.starts == 8
    assert FitOptions.of(method="gn").globalization == "line-search"  # each method's own default
    assert options.replace(method="gn", globalization=None).globalization == "line-search"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"ftol": -1.0}, r"^--ftol must be a number >= 0; got -1\.0$"),
        ({"max_iter": 0}, r"^--max-iter must be an integer from 1 to 1000000000; got 0$"),
        ({"max_iter": True}, r"^--max-iter must be an integer"),
        ({"conf_level": 1.0}, r"^--conf-level must be a number between 0 and 1"),
        ({"loss": "l1"}, r"^--loss must be one of linear, soft_l1, huber, cauchy, arctan"),
        ({"jac": "symbolic"}, r"^--jac must be one of auto, fwd, rev, fd"),
        ({"factorization": "lu"}, r"^--factorization must be one of auto, svd, qr, gram"),
        ({"starts": 0}, r"^--starts must be \"auto\" or an integer from 1 to 10000; got 0$"),
        ({"momentum": 0.5}, r"^--momentum applies to --method gd with --globalization none$"),
        ({"batch_size": 4, "method": "gd"}, r"^--batch-size \(stochastic gradient descent\) applies to"),
        ({"method": "bfgs"}, r"^unknown --method 'bfgs'"),
        ({"bounds": "b1=2"}, r"^--bounds b1: expected low:high"),
        ({"fix": "0.5"}, r"^--fix must be name=value pairs"),
        ({"tolerance": 1e-3}, r"^unknown fit option\(s\): tolerance$"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_flag(given, message):
    with pytest.raises(OptionError, match=message):
        FitOptions.of(given)


def test_the_json_echo_is_every_option_and_reads_back():
    options = FitOptions.of(method="gn", bounds="a=0:inf,b=-1:1", fix={"c": 0.5}, seed=7, starts=3)
    echo = options.to_json()
    assert list(echo) == list(NAMES)
    assert echo["bounds"] == {"a": "0:inf", "b": "-1:1"}  # text: JSON has no infinity
    assert json.loads(json.dumps(echo, allow_nan=False)) == echo
    assert FitOptions.of(echo) == options
    assert math.isinf(FitOptions.of(echo).bounds["a"][1])


def test_a_result_echoes_the_options_from_config_and_flags(tmp_path, runge_csv):
    config = tmp_path / "fit.toml"
    config.write_text('max-iter = 300\nloss = "soft_l1"\n')
    done = runner.invoke(app, ["fit", str(runge_csv), "-m", "rational", "--config", str(config), "--seed", "5", "--starts", "2", "-f", "json", "-q"])
    assert done.exit_code == 0, done.stderr
    echo = json.loads(done.stdout)["options"]
    assert echo["max_iter"] == 300 and echo["loss"] == "soft_l1" and echo["seed"] == 5 and echo["starts"] == 2
    assert {k: v for k, v in echo.items() if k not in ("max_iter", "loss", "seed", "starts")} == {
        k: v for k, v in DEFAULTS.to_json().items() if k not in ("max_iter", "loss", "seed", "starts")
    }


def test_single_and_grouped_fits_share_the_defaults():
    data = _line()
    single = fit(data, "a*x+b")
    grouped = fit_groups(dataclasses.replace(data, groups=np.array(["g"] * data.n_points, dtype=object)), "a*x+b")
    assert single.options == grouped.results[0].options == DEFAULTS.to_json()
    np.testing.assert_allclose(single.params, grouped.params[0], rtol=1e-10)


def test_one_start_chooser_for_every_command():
    nist = read_dataset(str(NIST_DIR / "Misra1a.dat"))
    model = model_for(nist.formula, nist)
    assert choose_start(model, nist) == (pytest.approx(list(nist.nist.starts[1])), True)
    start, given = choose_start(model, nist, {"b2": 0.5}, file_start=2)
    assert given and list(start) == [nist.nist.starts[2][0], 0.5]  # the file's start 2, b2 replaced
    with pytest.raises(OptionError, match="--start must be 1 or 2"):
        choose_start(model, nist, None, file_start=3)
    line = _line()
    start, given = choose_start(model_for("a*x+b", line), line)
    assert not given and list(start) == [1.0, 1.0]  # a formula's default: every parameter 1
    with pytest.raises(ModelError, match="has 1 value"):
        choose_start(model_for("a*x+b", line), line, [1.0])
    # check-jac and fit both start a NIST file at its start 1, completed by name
    done = runner.invoke(app, ["check-jac", str(NIST_DIR / "Misra1a.dat"), "--p0", "b2=0.0002", "-f", "json"])
    assert json.loads(done.stdout)["params"] == {"b1": nist.nist.starts[1][0], "b2": 0.0002}
