"""nlfit.quantiles against 40-digit values of mpmath (data/t_quantiles.json, written by
data/t_quantiles.py; mpmath is not a test dependency). nlfit's t quantiles come from a
continued fraction and Newton's method below EXPANSION_DOF, from the Cornish-Fisher expansion
above it and from the heavy tail's asymptote far out; all are within 1.3e-13 of mpmath's at
these points (2.2e-14 from one degree of freedom up). The tolerance, 1e-12, leaves room for
another platform's lgamma, exp and log. scipy's stdtrit is not the reference: before scipy
1.17 it was off by up to 6e-10, and 1.17's is off by 4e-4 at dof 4, p = 0.5000001."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nlfit import quantiles

REFERENCES = json.loads((Path(__file__).resolve().parent.parent / "data" / "t_quantiles.json").read_text())
T_CASES = [(v, p, float(t)) for v, p, t in REFERENCES["t"]]


@pytest.mark.parametrize("p", sorted({p for _, p, _ in T_CASES}))
def test_t_quantiles_equal_mpmaths(p):
    cases = [(v, t) for v, q, t in T_CASES if q == p]
    dof, expected = (np.array(column) for column in zip(*cases, strict=True))
    ours = quantiles.student_t(dof, p)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(quantiles.student_t(dof, 1 - p), -ours, rtol=1e-12, atol=0)  # the lower tail by symmetry


def test_each_dof_of_many_groups_gets_its_own_quantile():
    """Grouped fits pass one dof per group: repeated values, any order, the array's shape kept."""
    reference = {v: t for v, p, t in T_CASES if p == 0.975}
    dof = np.array([[3, 100, 3], [7, 1e6, 100]])
    ours = quantiles.student_t(dof, 0.975)
    assert ours.shape == dof.shape
    np.testing.assert_allclose(ours, np.vectorize(reference.get)(dof), rtol=1e-12, atol=0)


def test_degrees_of_freedom_at_the_ends_of_the_float_range():
    """A saved fit's dof is any non-negative number (``nlfit predict`` reads it from JSON)."""
    normal = dict(REFERENCES["normal"])
    assert quantiles.student_t(1e300, 0.975) == pytest.approx(float(normal[0.975]), rel=1e-15)
    assert quantiles.student_t(np.inf, 0.975) == pytest.approx(float(normal[0.975]), rel=1e-15)
    assert quantiles.student_t(1e-300, 0.975) == np.inf  # far beyond the float range
    assert quantiles.student_t(1e-3, 0.975) == np.inf  # above 1e308


def test_edges_are_scipys():
    assert np.all(np.isnan(quantiles.student_t([0.0, -1.0, np.nan], 0.975)))
    assert np.array_equal(quantiles.student_t([2.0, 30.0], 1.0), [np.inf, np.inf])
    assert np.array_equal(quantiles.student_t([2.0, 30.0], 0.0), [-np.inf, -np.inf])
    assert np.array_equal(quantiles.student_t([2.0, 30.0], 0.5), [0.0, 0.0])
    assert np.isnan(quantiles.student_t(5.0, np.nan))
    assert quantiles.student_t([], 0.975).shape == (0,)


@pytest.mark.parametrize("p, expected", REFERENCES["normal"])
def test_normal_quantiles_equal_mpmaths(p, expected):
    assert quantiles.normal(p) == pytest.approx(float(expected), rel=1e-14)


def test_normal_quantiles_at_the_ends():
    """0.5 + level / 2 is 1.0 for the largest level below 1: +inf, as scipy's ndtri, not an error."""
    assert quantiles.normal(0.5 + 0.9999999999999999 / 2) == np.inf
    assert quantiles.normal(0.0) == -np.inf
    assert np.isnan(quantiles.normal(1.5)) and np.isnan(quantiles.normal(np.nan))
