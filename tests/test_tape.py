"""Formulas as data (``nlfit.models.tape``): the tape gives what the formula's own compiled
program gives, and a new formula of a known shape compiles nothing."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from conftest import NIST_DIR, NIST_NAMES, compile_events

from nlfit import fit, read_dataset
from nlfit._jax import jax, jnp
from nlfit.io.dataset import Dataset
from nlfit.models import tape
from nlfit.models.expression import FormulaModel
from nlfit.models.padded import padded_count

FORMULAS = [
    ("b1*(1-exp(-b2*x))", [2.0, 0.5]),
    ("a/(1+exp(-(x-m)/s)) + c*x^2 - sqrt(abs(x))*d", [1.0, 0.3, 0.7, 0.1, 0.2]),
    ("c0/(1 + c1*x + c2*x^2)", [1.0, 0.1, 10.0]),
    ("a*sin(w*x + p) + log(1+x^2)*k - 2*pi + 0*e", [1.3, 2.0, 0.1, 0.5]),
    ("tanh(a*x)*cosh(b) + arctan(c*x) - x^-2*d + sinh(0.1*x)*f", [0.5, 0.2, 1.0, 0.01, 0.3]),
    ("arcsin(x/3)*a + acos(x/4)*b + tan(c*x) + log10(1+x^2)*d - a*a*x", [0.2, 0.4, 0.3, 1.5]),
    ("a*exp(-b*x)*(1 + 0*x) + (a*exp(-b*x))^2", [1.1, 0.4]),  # a repeated subexpression
    ("b*x^a + c^x", [1.5, 2.0, 1.2]),  # a parameter in the exponent; a column in the exponent
]


def _close(a, b, tol=1e-12):
    """Equal to ``tol`` relative to the largest entry (norm-wise: an entry that cancels to
    nearly zero, such as cos near pi/2, is not held to its own relative precision)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    both = np.isfinite(b)
    np.testing.assert_array_equal(np.isfinite(a), both)
    assert np.max(np.abs(a[both] - b[both]), initial=0.0) <= tol * np.max(np.abs(b[both]), initial=0.0)


ROWS = 24  # the rows every case is checked at: cases of one bucket share one compiled check


def _cases():
    x = np.linspace(0.05, 2.0, ROWS)
    for text, params in FORMULAS:
        yield pytest.param(FormulaModel.parse(text), x, np.array(params), id=text)
    for name in NIST_NAMES:
        data = read_dataset(str(NIST_DIR / f"{name}.dat"))
        model = FormulaModel.parse(data.nist.formula, x_names=data.x_names, order=tuple(f"b{i + 1}" for i in range(len(data.nist.certified))))
        x = np.asarray(data.x)[np.linspace(0, len(data.x) - 1, ROWS).round().astype(int)]  # from first to last
        yield pytest.param(model, x, np.asarray(data.nist.certified, dtype=float), id=f"NIST-{name}")


def _four(values, p):
    """Values, forward and reverse Jacobians and the Hessian of the sum of squares at ``p``."""
    return values(p), jax.jacfwd(values)(p), jax.jacrev(values)(p), jax.hessian(lambda q: jnp.sum(values(q) ** 2))(p)


@partial(jax.jit, static_argnames="runner")
def _taped(runner, arrays, p, x):
    """The four from the tape: one program per bucket (runners of one bucket are equal),
    whatever the formula."""
    return _four(lambda q: runner.run(arrays, q, x), p)


def _direct(model, p, x):
    """The same four from the formula's own compiled program."""
    return _four(lambda q: jnp.broadcast_to(model.predict(q, x), x.shape[:1]), p)


@pytest.mark.parametrize("model, x, params", list(_cases()))
def test_the_tape_gives_the_values_and_derivatives_of_the_compiled_formula(model, x, params):
    compiled = tape.model_tape(model)
    assert compiled is not None and compiled.length in tape.LENGTHS
    runner = tape.Runner(compiled.n_params, compiled.n_columns, compiled.length)
    arrays = tuple(jnp.asarray(a) for a in compiled.arrays())
    p, x = jnp.asarray(params), jnp.asarray(x)
    values, forward, reverse, hessian = _taped(runner, arrays, p, x)
    expected = jax.jit(partial(_direct, model))(p, x)  # one program (run op by op: ~100 compiles)
    _close(values, expected[0])
    _close(forward, expected[1])
    _close(reverse, expected[2])  # reverse mode: no NaN from the operations not taken
    _close(hessian, expected[3], 1e-10)


@pytest.mark.parametrize(
    "name, start",
    [("MGH09", 1), ("Eckerle4", 1), ("Thurber", 2), ("Nelson", 2), ("Misra1a", 1), ("Rat42", 1)],
)
def test_a_fit_from_the_tape_equals_the_fit_from_the_compiled_formula(monkeypatch, name, start):
    data = read_dataset(str(NIST_DIR / f"{name}.dat"))
    monkeypatch.setattr(tape, "MAX_WORK", 1 << 40)  # every formula from its tape
    taped = fit(data, data.nist.formula, p0=data.nist.starts[start])
    monkeypatch.setattr(tape, "MAX_WORK", -1)  # every formula compiled
    direct = fit(data, data.nist.formula, p0=data.nist.starts[start])
    assert taped.success == direct.success  # which of two stopping tests fired first may differ in the last bits
    assert abs(taped.stats["rss"] - direct.stats["rss"]) <= 1e-10 * direct.stats["rss"]
    # The two programs round differently in the last bit (a fused multiply-add in one, a pow
    # in the other), which moves the minimum by about cond(J) * eps: 1e-10 relative where J
    # is well conditioned; on an ill-conditioned problem (Thurber: 7e-9 relative, measured)
    # far below the standard errors instead.
    gap = np.abs(taped.params - direct.params)
    assert np.linalg.norm(gap) <= 1e-10 * np.linalg.norm(direct.params) or np.all(gap <= 1e-5 * direct.stderr), gap / direct.stderr
    np.testing.assert_allclose(taped.stderr, direct.stderr, rtol=1e-6)


def _data(seed: int, truth) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, 50)
    return Dataset(x=x, y=truth(x) + rng.normal(0.0, 0.01, x.size), x_names=("x",), y_name="y")


def test_a_second_formula_of_the_same_shape_compiles_nothing(monkeypatch):
    fit(_data(0, lambda x: 2.0 * (1 - np.exp(-0.7 * x))), "b1*(1-exp(-b2*x))")
    found = {}

    def others():
        found["mm"] = fit(_data(1, lambda x: 1.5 * x / (0.8 + x)), "Vm*x/(K + x)")
        found["exp"] = fit(_data(2, lambda x: 3.0 * np.exp(-0.4 * x)), "A*exp(-k*x)")
        # another parameter count of the same bucket (nlfit.models.padded): three and four
        found["three"] = fit(_data(4, lambda x: 3.0 * np.exp(-0.4 * x) + 0.5), "A*exp(-k*x) + c")
        found["four"] = fit(_data(5, lambda x: 2.0 * np.exp(-0.5 * x) + 0.1 * x + 0.3), "A*exp(-k*x) + s*x + c")

    assert compile_events(others) == {}
    assert all(result.success for result in found.values())
    np.testing.assert_allclose(found["mm"].params, [1.5, 0.8], rtol=2e-2)
    np.testing.assert_allclose(found["exp"].params, [3.0, 0.4], rtol=2e-2)
    assert found["three"].param_names == ("A", "k", "c")
    np.testing.assert_allclose(found["three"].params, [3.0, 0.4, 0.5], rtol=2e-2)
    assert found["four"].param_names == ("A", "k", "s", "c")
    monkeypatch.setattr(tape, "MAX_WORK", -1)  # the formula's own compiled program, four parameters unpadded
    direct = fit(_data(5, lambda x: 2.0 * np.exp(-0.5 * x) + 0.1 * x + 0.3), "A*exp(-k*x) + s*x + c")
    np.testing.assert_allclose(found["four"].params, direct.params, rtol=1e-6)
    # the padded parameters are not estimated: nothing of them shows, and they take no degree of freedom
    assert found["three"].stats["dof"] == 50 - 3 and found["three"].covariance.shape == (3, 3)


def test_the_same_text_in_another_parameter_order_fits_with_its_own_names():
    data = _data(3, lambda x: 0.5 * x + 2.0)
    first = fit(data, FormulaModel.parse("b2*x + b1"))
    second = fit(data, FormulaModel.parse("b2*x + b1", order=("b1", "b2")))
    assert first.param_names == ("b2", "b1") and second.param_names == ("b1", "b2")
    np.testing.assert_allclose(first.params, [0.5, 2.0], rtol=1e-2)
    np.testing.assert_allclose(second.params, [2.0, 0.5], rtol=1e-2)
    assert tape.model_tape(FormulaModel.parse("b2*x + b1")) is not tape.model_tape(FormulaModel.parse("b2*x + b1", order=("b1", "b2")))


def test_large_fits_and_long_formulas_use_the_compiled_formula():
    model = FormulaModel.parse("a*exp(-b*x)")
    compiled = tape.model_tape(model, padded_count(2))  # two parameters, computed as four (nlfit.models.padded)
    assert compiled.n_params == 4
    work = (compiled.n_params + 1) * compiled.used
    assert tape.runner_for(model, tape.MAX_WORK // work) is not None
    assert tape.runner_for(model, tape.MAX_WORK // work + 1) is None
    assert tape.runner_for(model, 100, grouped=True) is None  # grouped fits: the compiled formula
    long = FormulaModel.parse(" + ".join(f"a{i}*exp(-b{i}*x)" for i in range(60)))
    assert tape.model_tape(long) is None and tape.runner_for(long, 100) is None


@pytest.mark.parametrize(
    "formula, truth, x",
    [
        ("a*sqrt(x) + b", lambda x: 2 * np.sqrt(x) + 1, np.linspace(0.0, 4.0, 20)),  # d sqrt(x) is infinite at x = 0
        ("a*x^b", lambda x: 2 * x**0.4, np.linspace(0.0, 4.0, 20)),  # so is d x^b / dx for b < 1
        ("a*arccos(x) + b", lambda x: 0.5 * np.arccos(x) + 0.2, np.linspace(-1.0, 1.0, 30)),  # and d arccos at +-1
    ],
)
def test_a_part_free_of_parameters_with_an_infinite_derivative_gives_no_nan(monkeypatch, formula, truth, x):
    """The data's own derivatives are never formed: sqrt(x) at x = 0 multiplies nothing."""
    rng = np.random.default_rng(4)
    data = Dataset(x=x, y=truth(x) + rng.normal(0.0, 0.01, x.size), x_names=("x",), y_name="y")
    assert tape.runner_for(FormulaModel.parse(formula), x.size) is not None
    taped = fit(data, formula, p0=[1.0, 0.5], starts=1)
    monkeypatch.setattr(tape, "MAX_WORK", -1)
    direct = fit(data, formula, p0=[1.0, 0.5], starts=1)
    assert taped.success and direct.success, (taped.status, direct.status)
    np.testing.assert_allclose(taped.params, direct.params, rtol=1e-9)
    np.testing.assert_allclose(taped.stderr, direct.stderr, rtol=1e-6)


def test_check_jac_of_a_new_formula_compiles_nothing_and_reports_what_it_did():
    from nlfit import derivatives
    from nlfit.cli.checkjac import _problem
    from nlfit.problem import make_problem

    def report(text, truth, seed, direct=False):
        data = _data(seed, truth)
        model = FormulaModel.parse(text)
        params = np.full(len(model.param_names), 0.9)
        if direct:  # the formula's own operations, one by one (what check-jac ran before the tape)
            return derivatives.compare(jnp.asarray(params), make_problem(model, data))
        padded, problem, rows, columns = _problem(model, data, params)
        assert problem.tape is not None and rows == 50 and len(problem.y) > rows and list(columns) == list(range(len(params)))
        return derivatives.compare(jnp.asarray(padded), problem, rows, columns)

    report("b1*(1-exp(-b2*x))", lambda x: 2.0 * (1 - np.exp(-0.7 * x)), 0)
    found = []
    assert compile_events(lambda: found.append(report("A*exp(-k*x) + c", lambda x: 3.0 * np.exp(-0.4 * x) + 0.5, 4))) == {}
    taped, direct = found[0], report("A*exp(-k*x) + c", lambda x: 3.0 * np.exp(-0.4 * x) + 0.5, 4, direct=True)
    for mode in ("fwd", "rev", "fd", "central"):
        _close(taped["jacobians"][mode], direct["jacobians"][mode], 1e-12 if mode in ("fwd", "rev") else 1e-6)
    assert taped["cond"] == pytest.approx(direct["cond"], rel=1e-10)
    assert found[0]["jacobians"]["fwd"].shape == (50, 3)
