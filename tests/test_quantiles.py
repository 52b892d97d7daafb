"""nlfit.quantiles against scipy.special, whose t quantiles are within 1e-15 of 40-digit
mpmath values at these points (checked once by hand; mpmath is not a test dependency).
nlfit's come from a continued fraction and Newton's method below EXPANSION_DOF and from the
Cornish-Fisher expansion above it, both within 3e-14 of mpmath's at these points; the
tolerance, 1e-12, leaves room for another platform's lgamma, exp and log."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtri, stdtr, stdtrit

from nlfit import quantiles

# Confidence levels from 0.2 to 0.999998, as (1 + level) / 2.
PROBABILITIES = [0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995, 0.99995, 0.999999]
# Heavy tails, fractional dof, the switch of _half_step (a = 25, dof 50) and of the expansion.
DOFS = np.array([0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 13, 30, 49, 50, 51, 100, 197, 500, 999, 1999, 2000, 2001, 1e4, 1e6, 1e9, np.inf])


@pytest.mark.parametrize("p", PROBABILITIES)
def test_t_quantiles_equal_scipys(p):
    ours = quantiles.student_t(DOFS, p)
    np.testing.assert_allclose(ours, stdtrit(DOFS, p), rtol=1e-12, atol=0)
    np.testing.assert_allclose(quantiles.student_t(DOFS, 1 - p), -ours, rtol=1e-12, atol=0)  # the lower tail by symmetry


def test_each_dof_of_many_groups_gets_its_own_quantile():
    """Grouped fits pass one dof per group: repeated values, any order, the array's shape kept."""
    dof = np.array([[3, 100, 3], [7, 1e5, 100]])
    ours = quantiles.student_t(dof, 0.975)
    assert ours.shape == dof.shape
    np.testing.assert_allclose(ours, stdtrit(dof, 0.975), rtol=1e-12, atol=0)


def test_the_quantile_gives_back_its_probability_near_the_centre():
    """Near p = 1/2 scipy's stdtrit is off by 4e-4 relative (at dof 4); the CDF of nlfit's t gives p back."""
    for dof in (4.0, 30.0):
        np.testing.assert_allclose(stdtr(dof, quantiles.student_t(dof, 0.5000001)), 0.5000001, rtol=1e-15)
    # dof 1, the Cauchy distribution: F(t) = 1/2 + atan(t) / pi.
    np.testing.assert_allclose(0.5 + np.arctan(quantiles.student_t(1.0, 0.5000001)) / np.pi, 0.5000001, rtol=1e-15)


@pytest.mark.parametrize("dof, p", [(0.01, 0.6), (0.01, 0.975), (0.05, 0.975), (0.1, 0.999), (0.3, 0.999999)])
def test_heavy_tails_far_out_equal_scipys(dof, p):
    """Below one degree of freedom the quantiles run to 1e128: there they come from the tail's
    asymptote, which is exact to rounding from t = 1e20 on."""
    assert quantiles.student_t(dof, p) == pytest.approx(float(stdtrit(dof, p)), rel=1e-9)


def test_degrees_of_freedom_at_the_ends_of_the_float_range():
    """A saved fit's dof is any non-negative number (``nlfit predict`` reads it from JSON)."""
    assert quantiles.student_t(1e300, 0.975) == pytest.approx(float(ndtri(0.975)), rel=1e-15)
    assert quantiles.student_t(1e-300, 0.975) == np.inf  # beyond the float range (scipy stops at 6704)
    assert quantiles.student_t(1e-3, 0.975) == np.inf  # above 1e308 (scipy stops at 2.1e152)


def test_edges_are_scipys():
    assert np.all(np.isnan(quantiles.student_t([0.0, -1.0, np.nan], 0.975)))
    assert np.array_equal(quantiles.student_t([2.0, 30.0], 1.0), [np.inf, np.inf])
    assert np.array_equal(quantiles.student_t([2.0, 30.0], 0.0), [-np.inf, -np.inf])
    assert np.array_equal(quantiles.student_t([2.0, 30.0], 0.5), [0.0, 0.0])
    assert np.isnan(quantiles.student_t(5.0, np.nan))


@pytest.mark.parametrize("p", [1e-10, 0.025, 0.5, 0.9, 0.975, 1 - 1e-10])
def test_normal_quantiles_equal_scipys(p):
    assert quantiles.normal(p) == pytest.approx(float(ndtri(p)), rel=1e-14, abs=1e-300)
