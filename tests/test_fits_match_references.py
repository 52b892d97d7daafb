"""The default LM fit against scipy, linear models against numpy, Jacobian modes, Thurber."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NIST_DIR, lre, runge_data
from scipy.optimize import least_squares

from nlfit import fit, read_dataset


def test_rational_lm_matches_scipy_least_squares(runge):
    result = fit(runge, "rational", method="lm")
    assert result.success, result.message
    x, y = runge.x, runge.y

    def residuals(c):
        return 1.0 / (c[0] + c[1] * x + c[2] * x * x) - y

    def jacobian(c):
        f2 = (1.0 / (c[0] + c[1] * x + c[2] * x * x)) ** 2
        return np.column_stack([-f2, -f2 * x, -f2 * x * x])

    reference = least_squares(residuals, [1.0, 0.0, 10.0], jac=jacobian, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert reference.success
    np.testing.assert_allclose(result.params, reference.x, rtol=1e-6)
    np.testing.assert_allclose(result.stats["rss"], 2 * reference.cost, rtol=1e-12)


def test_default_start_of_rational_comes_from_linearized_fit(runge):
    from nlfit.models.rational import ReciprocalQuadratic

    start = ReciprocalQuadratic().default_p0(runge.x, runge.y)
    # y * (c0 + c1 x + c2 x^2) ~ 1 is solved exactly in the least-squares sense
    design = np.column_stack([runge.y, runge.y * runge.x, runge.y * runge.x**2])
    np.testing.assert_allclose(start, np.linalg.lstsq(design, np.ones_like(runge.y), rcond=None)[0])


def test_chebyshev_11_matches_numpy_chebyshev_fit(runge):
    result = fit(runge, "chebyshev:11")
    assert result.success, result.message
    expected = np.polynomial.Chebyshev.fit(runge.x, runge.y, 11).coef
    np.testing.assert_allclose(result.params, expected, rtol=1e-8, atol=1e-12 * np.max(np.abs(expected)))


def test_chebyshev_domain_follows_data_range():
    data = runge_data(n=60, noise=0.05, seed=3)
    shifted = type(data)(x=3.0 * data.x + 5.0, y=data.y, x_names=("x",), y_name="y")
    result = fit(shifted, "chebyshev:7")
    expected = np.polynomial.Chebyshev.fit(shifted.x, shifted.y, 7).coef
    np.testing.assert_allclose(result.params, expected, rtol=1e-8, atol=1e-12)


def test_polynomial_5_matches_numpy_polyfit(runge):
    result = fit(runge, "polynomial:5")
    assert result.success, result.message
    expected = np.polynomial.polynomial.polyfit(runge.x, runge.y, 5)
    np.testing.assert_allclose(result.params, expected, rtol=1e-8)


@pytest.mark.parametrize("mode", ["fwd", "rev", "fd"])
def test_jacobian_modes_give_the_same_fit(runge, mode):
    exact = fit(runge, "rational", jac="fwd")
    result = fit(runge, "rational", jac=mode)
    assert result.success, result.message
    assert result.jac_mode == mode
    np.testing.assert_allclose(result.params, exact.params, rtol=1e-6 if mode == "fd" else 1e-10)


def test_auto_mode_picks_forward_for_tall_and_reverse_for_wide():
    from nlfit.derivatives import resolve_mode

    assert resolve_mode("auto", 200, 3) == "fwd"
    assert resolve_mode("auto", 2, 5) == "rev"


def test_jacobians_agree_with_each_other(runge):
    from nlfit._jax import jnp
    from nlfit.derivatives import jacobian
    from nlfit.models.rational import ReciprocalQuadratic
    from nlfit.problem import make_problem

    problem = make_problem(ReciprocalQuadratic(), runge)
    params = jnp.array([1.0, 0.3, 9.0])
    _, forward = jacobian(params, problem, "fwd")
    _, reverse = jacobian(params, problem, "rev")
    _, differences = jacobian(params, problem, "fd")
    x = runge.x
    f2 = (1.0 / (1.0 + 0.3 * x + 9.0 * x * x)) ** 2
    analytic = np.column_stack([-f2, -f2 * x, -f2 * x * x])
    np.testing.assert_allclose(forward, analytic, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(reverse, analytic, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(differences, analytic, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("start", [1, 2])
def test_thurber_rational_3_3_reaches_certified_values(start):
    data = read_dataset(str(NIST_DIR / "Thurber.dat"))
    result = fit(data, "rational:3/3", p0=data.nist.starts[start])
    assert result.success, result.message
    assert lre(result.params, data.nist.certified) >= 6.0


def test_p0_by_name_fills_the_rest_from_the_default(runge):
    from nlfit.models.rational import ReciprocalQuadratic
    from nlfit.start import resolve_p0

    model = ReciprocalQuadratic()
    start = resolve_p0(model, runge, {"c2": 10.0})
    default = model.default_p0(runge.x, runge.y)
    assert start[2] == 10.0
    np.testing.assert_allclose(start[:2], default[:2])
