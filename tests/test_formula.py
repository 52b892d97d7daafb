"""User formulas. Parsing is a whitelist; hostile text is rejected before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NIST_DIR
from typer.testing import CliRunner

from nlfit import fit, read_dataset
from nlfit.cli.app import app
from nlfit.errors import FormulaError, NlfitError
from nlfit.io.dataset import Dataset
from nlfit.models.expression import FormulaModel


def test_parameters_in_order_of_first_appearance_and_columns_are_variables():
    model = FormulaModel.parse("b1*(1-exp(-b2*x)) + c*x^2 + pi*0", x_names=("x",))
    assert model.param_names == ("b1", "b2", "c")


def test_formula_fit_matches_the_same_builtin_model(runge):
    builtin = fit(runge, "rational", p0=[1.0, 0.0, 10.0])
    formula = fit(runge, "1/(c0 + c1*x + c2*x**2)", p0=[1.0, 0.0, 10.0])
    np.testing.assert_allclose(formula.params, builtin.params, rtol=1e-10)


def test_functions_constants_and_scientific_notation():
    x = np.linspace(0.1, 2.0, 30)
    truth = 2.5e0 * np.sqrt(x) + 1.5e-1 * np.arctan(x) + np.log10(x) * np.cosh(0.1 * x) / np.pi
    data = Dataset(x=x, y=truth, x_names=("x",), y_name="y")
    result = fit(data, "a*sqrt(x) + b*atan(x) + log10(x)*cosh(0.1*x)/pi + 0*abs(e)", p0={"a": 1.0, "b": 1.0})
    np.testing.assert_allclose(result.params, [2.5, 0.15], rtol=1e-9)


def test_several_predictors_and_a_transformed_response():
    data = read_dataset(str(NIST_DIR / "Nelson.dat"))
    assert data.x_names == ("x1", "x2")
    result = fit(data, "log(y) = b1 - b2*x1*exp(-b3*x2)", p0=data.nist.starts[2])
    np.testing.assert_allclose(result.params, data.nist.certified, rtol=1e-6)


def test_nelson_via_the_cli_with_x_columns(tmp_path):
    data = read_dataset(str(NIST_DIR / "Nelson.dat"))
    csv = tmp_path / "nelson.csv"
    csv.write_text("x1,x2,y\n" + "".join(f"{a!r},{b!r},{c!r}\n" for (a, b), c in zip(data.x.tolist(), data.y.tolist(), strict=True)))
    done = CliRunner().invoke(
        app,
        [
            "fit",
            str(csv),
            "--x",
            "x1,x2",
            "--y",
            "y",
            "-m",
            "log(y) = b1 - b2*x1*exp(-b3*x2)",
            "--p0",
            "b1=2.5,b2=5e-9,b3=-0.05",
            "-q",
            "-f",
            "csv",
        ],
    )
    assert done.exit_code == 0, done.stderr
    values = [float(line.split(",")[1]) for line in done.stdout.splitlines()[1:]]
    np.testing.assert_allclose(values, data.nist.certified, rtol=1e-6)


def test_invalid_syntax_points_at_the_position():
    with pytest.raises(FormulaError) as error:
        FormulaModel.parse("b1 +* x")
    assert error.value.position == 4
    assert "column 5" in str(error.value)


HOSTILE = [
    ("__import__('os').system('touch /tmp/nlfit-pwned')", "not allowed"),
    ("().__class__", "attribute access"),
    ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("x.__class__", "attribute access"),
    ("__builtins__", "not allowed"),
    ("eval('1')*x", "unknown function 'eval'"),
    ("exec('import os')", "unknown function 'exec'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("import os", "invalid formula syntax"),
    ("lambda: 0", "lambda"),
    ("[a for a in x]", "comprehensions"),
    ("{a: 1 for a in x}", "comprehensions"),
    ("(a for a in x)", "comprehensions"),
    ("'a'*x", "strings"),
    ("f'{x}'", "strings"),
    ("b'x'*a", "strings"),
    ("a if x else b", "conditional"),
    ("x[0]*a", "indexing"),
    ("(a := 1)*x", "':=' is not allowed"),
    ("exp(x, a)", "exactly one argument"),
    ("exp(x=a)", "keyword"),
    ("a < x", "comparisons"),
    ("a*x; 1", "invalid formula syntax"),
    ("_secret*x", "may not start with '_'"),
    ("a*x = b = c", "at most one '='"),
    ("exp*x", "is a function"),
    ("(" * 300 + "a" + ")" * 300, "nested"),
]


@pytest.mark.parametrize("text, fragment", HOSTILE)
def test_hostile_formulas_are_rejected(tmp_path, text, fragment):
    with pytest.raises(NlfitError) as error:
        FormulaModel.parse(text, x_names=("x",))
    assert fragment in str(error.value)
    assert not (tmp_path / "nlfit-pwned").exists()


def test_hostile_formula_on_the_command_line_is_one_line_exit_2(runge_csv):
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "__import__('os').system('touch /tmp/nlfit-pwned')"])
    assert done.exit_code == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "not allowed" in done.stderr
    import os

    assert not os.path.exists("/tmp/nlfit-pwned")


def test_response_on_the_right_side_is_rejected():
    with pytest.raises(FormulaError, match="cannot appear on the right side"):
        FormulaModel.parse("a*y + x", x_names=("x",), y_name="y")


def test_left_side_without_the_response_column_is_rejected():
    with pytest.raises(FormulaError, match="left side"):
        FormulaModel.parse("log(z) = a*x", x_names=("x",), y_name="y")


def test_caret_is_power_with_power_precedence():
    x = np.linspace(0.0, 2.0, 5)
    from nlfit.models.expression import evaluate_numpy

    caret = FormulaModel.parse("a*x^2 + b", x_names=("x",))
    stars = FormulaModel.parse("a*x**2 + b", x_names=("x",))
    np.testing.assert_array_equal(evaluate_numpy(caret, [1.5, -0.5], x), evaluate_numpy(stars, [1.5, -0.5], x))
    np.testing.assert_allclose(evaluate_numpy(caret, [1.5, -0.5], x), 1.5 * x**2 - 0.5)
    with pytest.raises(FormulaError) as error:
        FormulaModel.parse("a^x + * b")
    assert error.value.position == 6  # the position in the text as typed, not in the rewritten one


def test_the_same_text_with_another_parameter_order_is_evaluated_with_its_own_order():
    """A NIST file names its parameters b1..bN whatever the order in the formula; a worker that
    first fitted the same text from a CSV file (order of appearance) must not reuse that
    evaluator with the names swapped."""
    x = np.array([0.0, 1.0, 2.0])
    appearance = FormulaModel.parse("b2*x + b1")
    assert appearance.parameter_names == ("b2", "b1")
    np.testing.assert_allclose(np.asarray(appearance.predict(np.array([2.0, 5.0]), x)), 2.0 * x + 5.0)
    nist = FormulaModel.parse("b2*x + b1", order=("b1", "b2"))
    assert nist.parameter_names == ("b1", "b2")
    np.testing.assert_allclose(np.asarray(nist.predict(np.array([5.0, 2.0]), x)), 2.0 * x + 5.0)
    np.testing.assert_allclose(nist.long_double_values()(np.array([5.0, 2.0]), x).astype(float), 2.0 * x + 5.0)
    renamed = FormulaModel.parse("b2*t + b1", x_names=("t",))
    np.testing.assert_allclose(np.asarray(renamed.predict(np.array([2.0, 5.0]), x)), 2.0 * x + 5.0)
