"""Quantiles of the normal and Student t distributions for confidence intervals, in numpy.

Every fit with standard errors needs one t quantile. scipy.special has it, but importing
any scipy subpackage first imports scipy's array-API layer, which touches every lazy
attribute of numpy (numpy.f2py among them): 0.1-0.25 s of a 1.4 s default fit from a new
process (``benchmarks/startup.py``). This module computes the same numbers without it.

Student t, upper tail Q(t) = I_x(v/2, 1/2) / 2 with x = v / (v + t^2) (Abramowitz &
Stegun 26.7.1 and 26.5.27); I is the regularized incomplete beta function, evaluated by its
continued fraction (A&S 26.5.8) with the modified Lentz method. The quantile is found by
Newton's method on t: Q is convex and decreasing for t > 0, so Newton from below the root
climbs to it without overshooting, and a first step from above lands below it (clipped at
0). It starts from the larger of the Cornish-Fisher expansion in 1/v (A&S 26.7.5, four
terms) and the heavy tail's own asymptote Q(t) ~ K v^((v-1)/2) t^-v. For v above
``EXPANSION_DOF`` the expansion alone is used: it is within 1e-15 of scipy's quantile there
up to p = 0.9995 and within 3e-14 up to p = 1 - 1e-6, where the continued fraction would need
many terms. ``tests/test_quantiles.py`` compares both with scipy.special.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

EXPANSION_DOF = 2000.0
_TINY = 1e-300


def normal(p: float) -> float:
    """The standard normal quantile at probability ``p`` (0 < p < 1)."""
    return NormalDist().inv_cdf(p)


def student_t(dof, p: float) -> np.ndarray:
    """Student's t quantile at probability ``p`` for each of ``dof`` (real); as scipy's
    stdtrit: +-inf at p = 1 or 0, NaN where dof is not positive or p is not a probability."""
    dof = np.asarray(dof, dtype=np.float64)
    if not 0.0 < p < 1.0:
        edge = math.inf if p == 1.0 else -math.inf if p == 0.0 else math.nan
        return np.where(dof > 0, edge, math.nan)
    if p < 0.5:
        return -student_t(dof, 1.0 - p)
    out = np.full(dof.shape, math.nan)
    valid = dof > 0
    if p == 0.5 or not np.any(valid):
        return np.where(valid, 0.0, out)
    unique, inverse = np.unique(dof[valid], return_inverse=True)
    values = _expansion(unique, normal(p))
    exact = unique < EXPANSION_DOF
    if np.any(exact):
        values[exact] = _newton(unique[exact], 1.0 - p, values[exact])
    out[valid] = values[inverse]
    return out


def _expansion(v: np.ndarray, z: float) -> np.ndarray:
    """The Cornish-Fisher expansion of the t quantile in 1/v around the normal one, z."""
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4


def _newton(v: np.ndarray, q: float, start: np.ndarray) -> np.ndarray:
    """The t with upper tail ``q`` (<= 1/2) for each of ``v``, by Newton's method from ``start``."""
    a = v / 2.0
    log_density = _half_step(a) - 0.5 * np.log(v * math.pi)  # log of the density's constant
    tail = np.exp((log_density + (v - 1) / 2 * np.log(v) - np.log(v) - math.log(q)) / v)  # the asymptote, solved for t

    def step(t):
        ratio = t * t / v
        upper = 0.5 * _beta(a, ratio)
        density = np.exp(log_density - (v + 1) / 2 * np.log1p(ratio))
        return np.maximum(t + (upper - q) / np.maximum(density, _TINY), 0.0)

    # Of the two starts, the one Newton moves least: the expansion for large v, the
    # asymptote (which lies above the root) for heavy tails.
    starts = np.maximum(np.stack([start, tail]), 0.0)
    moved = np.stack([step(starts[0]), step(starts[1])])
    t = np.where(np.abs(moved[0] - starts[0]) <= np.abs(moved[1] - starts[1]), moved[0], moved[1])
    close = False
    for _ in range(100):
        new = step(t)
        if close:  # the step after a relative step of 1e-7 (Newton's error squares each step)
            return new
        close = bool(np.all(np.abs(new - t) <= 1e-7 * np.abs(new)))
        t = new
    return t


def _half_step(a: np.ndarray) -> np.ndarray:
    """log Gamma(a + 1/2) - log Gamma(a). The difference of two lgamma values loses their
    size in absolute precision (2e-13 at a = 1000), so from a = 25 on it comes from its
    asymptotic series (Gamma(a + 1/2) / Gamma(a) = sqrt(a) (1 - 1/(8a) + ...)), whose
    first omitted term is below 1e-16 there."""
    direct = np.array([math.lgamma(x + 0.5) - math.lgamma(x) for x in np.minimum(a, 25.0)])
    big = np.maximum(a, 25.0)
    series = 0.5 * np.log(big) - 1 / (8 * big) + 1 / (192 * big**3) - 1 / (640 * big**5) + 17 / (14336 * big**7)
    return np.where(a < 25.0, direct, series)


def _beta(a: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """I_x(a, 1/2) at x = 1 / (1 + ratio), from ``ratio`` (so that x and 1 - x are both
    known to full precision)."""
    b = 0.5
    log_x, log_y = -np.log1p(ratio), np.log(np.maximum(ratio, _TINY)) - np.log1p(ratio)
    x = np.exp(log_x)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); otherwise
    # I_x(a, b) = 1 - I_y(b, a).
    swap = x >= (a + 1.0) / (a + b + 2.0)
    aa, bb = np.where(swap, b, a), np.where(swap, a, b)
    xx = np.where(swap, np.exp(log_y), x)
    log_front = np.where(swap, b * log_y + a * log_x, a * log_x + b * log_y)
    log_beta = 0.5 * math.log(math.pi) - _half_step(a)  # B(a, 1/2) = Gamma(a) Gamma(1/2) / Gamma(a + 1/2)
    value = np.exp(log_front - log_beta) / aa * _fraction(aa, bb, xx)
    return np.where(swap, 1.0 - value, value)


def _fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The continued fraction of I_x(a, b) (A&S 26.5.8), by the modified Lentz method."""
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
    h = d.copy()
    for m in range(1, 10000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
            c = 1.0 + numerator / c
            c = np.where(np.abs(c) < _TINY, _TINY, c)
            delta = c * d
            h = h * delta
        if np.all(np.abs(delta - 1.0) <= 1e-15):
            break
    return h
