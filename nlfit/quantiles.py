"""Quantiles of the normal and Student t distributions for confidence intervals, without scipy.

Every fit with standard errors needs one t quantile. scipy.special has it, but importing
any scipy subpackage first imports scipy's array-API layer, which touches every lazy
attribute of numpy (numpy.f2py among them): 0.1-0.25 s of a 1.4 s default fit from a new
process (``benchmarks/startup.py``). This module computes the same numbers without it.

Student t, upper tail Q(t) = I_x(v/2, 1/2) / 2 with x = v / (v + t^2) (Abramowitz &
Stegun 26.7.1 and 26.5.27); I is the regularized incomplete beta function, evaluated by its
continued fraction (A&S 26.5.8) with the modified Lentz method. The quantile is found by
Newton's method on t: Q is convex and decreasing for t > 0, so Newton from below the root
climbs to it without overshooting, and a first step from above lands below it (clipped at
0). It starts from whichever Newton moves least of the Cornish-Fisher expansion in 1/v
(A&S 26.7.5, four terms) and the heavy tail's own asymptote Q(t) ~ K v^((v-1)/2) t^-v. For v above
``EXPANSION_DOF`` the expansion alone is used: it is within 1e-15 of the quantile there up to
p = 0.9995 and within 3e-14 up to p = 1 - 1e-6, where the continued fraction would need many
terms. Near the centre Newton compares F(t) - 1/2 with p - 1/2 (both without cancellation), far
out in a heavy tail (t > 1e20, v < 1) the asymptote is the answer. ``tests/test_quantiles.py``
compares all of it with 40-digit mpmath values (``data/t_quantiles.json``).

The arithmetic is Python's on floats, one degree of freedom at a time (a fit has one; grouped
fits have one per distinct group size, each computed once and kept): 0.3-0.4 ms for one
value, where numpy's overhead on one-element arrays cost 5.6 ms.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np

EXPANSION_DOF = 2000.0
_TINY = 1e-300
_SERIES_FROM = 25.0  # _half_step's switch to its asymptotic series
# Q(t) = K v^((v-1)/2) t^-v (1 + O(v (v + 1) / t^2)): from t = 1e20 the asymptote's t is exact to
# rounding (relative error about (v + 1) / (2 t^2)), and t * t would overflow further out. Only
# v < 1 gets there: p = 1 - 2^-53 is t = 3e15 at v = 1.
_TAIL_EXACT = math.log(1e20)
_LOG_MAX = math.log(1.7976931348623157e308)


def normal(p: float) -> float:
    """The standard normal quantile at probability ``p``; as scipy's ndtri, +-inf at p = 1 or
    0 (0.5 + level / 2 rounds to 1 for the largest level below 1) and NaN outside [0, 1]."""
    return NormalDist().inv_cdf(p) if 0.0 < p < 1.0 else _edge(p)


def _edge(p: float) -> float:
    """Any quantile at a probability outside (0, 1): +-inf at 1 and 0, NaN elsewhere."""
    return math.inf if p == 1.0 else -math.inf if p == 0.0 else math.nan


def student_t(dof, p: float) -> np.ndarray:
    """Student's t quantile at probability ``p`` for each of ``dof`` (real); as scipy's
    stdtrit: +-inf at p = 1 or 0, NaN where dof is not positive or p is not a probability."""
    dof = np.asarray(dof, dtype=np.float64)
    out = np.full(dof.shape, math.nan)
    valid = dof > 0
    if np.any(valid):
        unique, inverse = np.unique(dof[valid], return_inverse=True)
        out[valid] = np.array([_quantile(float(v), float(p)) for v in unique])[inverse]
    return out


@functools.lru_cache(maxsize=4096)
def _quantile(v: float, p: float) -> float:
    """The t quantile for v > 0 degrees of freedom at probability p."""
    if not 0.0 < p < 1.0:
        return _edge(p)
    if p < 0.5:
        return -_quantile(v, 1.0 - p)
    if p == 0.5:
        return 0.0
    start = _expansion(v, normal(p))
    return start if v >= EXPANSION_DOF else _newton(v, p, start)


def _expansion(v: float, z: float) -> float:
    """The Cornish-Fisher expansion of the t quantile in 1/v around the normal one, z."""
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    u = 1.0 / v  # in powers of 1/v: v up to the float range (and inf) without overflow
    return z + u * (g1 + u * (g2 + u * (g3 + u * g4)))


def _newton(v: float, p: float, start: float) -> float:
    """The t with P(T <= t) = ``p`` (>= 1/2), by Newton's method from ``start``."""
    a = v / 2.0
    q, half = 1.0 - p, p - 0.5  # both exact (Sterbenz's lemma)
    log_density = _half_step(a) - 0.5 * math.log(v * math.pi)  # log of the density's constant
    log_tail = (log_density + (v - 1) / 2 * math.log(v) - math.log(q)) / v  # the asymptote, solved for log t
    if log_tail > _TAIL_EXACT:  # far out in a heavy tail (v well below 1): the asymptote is exact to rounding
        return math.exp(log_tail) if log_tail < _LOG_MAX else math.inf
    tail = math.exp(log_tail)

    def step(t: float) -> float:
        ratio = t * t / v
        value, central = _beta(a, ratio)
        # Q(t) - q, from whichever of the two tails _beta computed without cancellation: near
        # the centre F(t) - 1/2 = I_y(1/2, a) / 2 against p - 1/2, not Q(t) against q.
        error = half - value / 2 if central else value / 2 - q
        density = math.exp(log_density - (v + 1) / 2 * math.log1p(ratio))
        return max(t + error / max(density, _TINY), 0.0)

    # Of the two starts, the one Newton moves least: the expansion for large v, the
    # asymptote (which lies above the root) for heavy tails.
    moves = [(abs(step(s) - s), s) for s in (max(start, 0.0), tail)]
    t = step(min(moves)[1])
    for _ in range(100):
        new = step(t)
        if abs(new - t) <= 1e-7 * abs(new):  # Newton's error squares each step: one more
            return step(new)
        t = new
    return t


def _half_step(a: float) -> float:
    """log Gamma(a + 1/2) - log Gamma(a). The difference of two lgamma values loses their
    size in absolute precision (2e-13 at a = 1000), so from a = 25 on it comes from its
    asymptotic series (Gamma(a + 1/2) / Gamma(a) = sqrt(a) (1 - 1/(8a) + ...)), whose
    first omitted term is below 1e-16 there."""
    if a < _SERIES_FROM:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    return 0.5 * math.log(a) - 1 / (8 * a) + 1 / (192 * a**3) - 1 / (640 * a**5) + 17 / (14336 * a**7)


def _beta(a: float, ratio: float) -> tuple[float, bool]:
    """(I_x(a, 1/2), False), or (I_y(1/2, a) = 1 - I_x(a, 1/2), True) near the centre, at
    x = 1 / (1 + ratio) and y = 1 - x, both from ``ratio`` (so that each is known to full
    precision)."""
    b = 0.5
    log_x = -math.log1p(ratio)
    log_y = math.log(max(ratio, _TINY)) + log_x
    log_front = a * log_x + b * log_y - (0.5 * math.log(math.pi) - _half_step(a))  # B(a, 1/2) = Gamma(a) Gamma(1/2) / Gamma(a + 1/2)
    x = math.exp(log_x)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); otherwise it is
    # the one of I_y(b, a) = 1 - I_x(a, b).
    if x >= (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) / b * _fraction(b, a, math.exp(log_y)), True
    return math.exp(log_front) / a * _fraction(a, b, x), False


def _fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (A&S 26.5.8), by the modified Lentz method."""

    def tiny(value: float) -> float:
        return value if abs(value) >= _TINY else _TINY

    c = 1.0
    d = 1.0 / tiny(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 10000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 / tiny(1.0 + numerator * d)
            c = tiny(1.0 + numerator / c)
            delta = c * d
            h *= delta
        if abs(delta - 1.0) <= 1e-15:
            break
    return h
