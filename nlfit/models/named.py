"""Named models with their own start rules: R's self-starting models, Prism's dose-response
and growth curves, peak shapes, and sums of them (``gaussian+gaussian+linear``).

Each named model is a formula (``nlfit.models.expression``) written in the data's own column
names, with R's (or lmfit's, or Prism's) parameter names and parameterization, so that a
result compares one to one with theirs. What the name adds to the formula:

- a start computed from the data (``default_p0``), as R's ``initial`` functions and lmfit's
  ``guess`` do. It is the multistart's first start. The rules profile the model over its
  nonlinear parameters on a grid, with the linear ones solved by least squares for each grid
  value (variable projection): the asymptotic regressions a + b exp(-k x) over log k, the
  biexponentials over pairs of rates, the logistic curves from a regression of the logit of
  the rescaled response on x (R's rule), peaks from the highest point and its half-maximum
  width (lmfit's rule);
- one order of labels where the model is symmetric under exchanging them (``relabel``):
  R's ``SSfol`` has lKe < lKa, ``SSbiexp`` lrc1 > lrc2, Prism's two-phase curves KFast > KSlow.

Listing the catalogue (``nlfit models``) imports no JAX.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nlfit.errors import ModelError
from nlfit.models.expression import CONSTANTS, FUNCTIONS, FormulaModel, evaluate_numpy

# --- start rules ------------------------------------------------------------------------------

RATE_GRID = 161  # log-spaced rates from 1e-4 to 1e4 per unit of the data's span (and their negatives where allowed)
PAIR_GRID = 61  # rates per axis of the two-rate grids


def _clean(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(y) & np.all(np.isfinite(x.reshape(len(y), -1)), axis=1)
    return x[keep], y[keep]


def _solve(columns: np.ndarray, y: np.ndarray):
    """Least squares of y on the columns (..., m, c) for a stack of designs: (coefficients
    (..., c), residual sums of squares (...,))."""
    with np.errstate(all="ignore"):
        pinv = np.linalg.pinv(np.nan_to_num(columns, nan=0.0, posinf=0.0, neginf=0.0))
        coefficients = np.einsum("...cm,m->...c", pinv, y)
        residuals = np.einsum("...mc,...c->...m", columns, coefficients) - y
        rss = np.einsum("...m,...m->...", residuals, residuals)
    return coefficients, np.where(np.isfinite(rss) & np.all(np.isfinite(columns), axis=(-1, -2)), rss, np.inf)


def _rates(x, signed: bool = False) -> np.ndarray:
    span = float(np.ptp(x)) or 1.0
    rates = np.logspace(-4, 4, RATE_GRID) / span
    return np.concatenate([-rates[::-1], rates]) if signed else rates


def _best_rate(x, y, columns: Callable, signed: bool = False):
    """(k, coefficients): the rate whose design ``columns(k, x)`` (K, m, c) fits y best, on the
    grid and then refined by golden-section search between its neighbours."""
    grid = _rates(x, signed)
    coefficients, rss = _solve(columns(grid, x), y)
    best = int(np.argmin(rss))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    if lo * hi > 0:  # refine on the log scale within one sign
        sign, a, b = np.sign(lo), np.log(abs(lo)), np.log(abs(hi))
        golden = (np.sqrt(5.0) - 1.0) / 2.0
        for _ in range(40):
            trial = np.array([b - golden * (b - a), a + golden * (b - a)])
            rss_trial = _solve(columns(sign * np.exp(trial), x), y)[1]
            if rss_trial[0] < rss_trial[1]:
                b = trial[1]
            else:
                a = trial[0]
        k = sign * np.exp(0.5 * (a + b))
        found, found_rss = _solve(columns(np.array([k]), x), y)
        if found_rss[0] <= rss[best]:
            return float(k), found[0]
    return float(grid[best]), coefficients[best]


def _best_pair(x, y, columns: Callable):
    """(k1, k2, coefficients) with k1 > k2 > 0 on a grid of pairs, for ``columns(k1, k2, x)``."""
    rates = np.logspace(-3, 3, PAIR_GRID) / (float(np.ptp(x)) or 1.0)
    first, second = np.meshgrid(rates, rates, indexing="ij")
    above = first > second
    k1, k2 = first[above], second[above]
    coefficients, rss = _solve(columns(k1, k2, x), y)
    best = int(np.argmin(rss))
    return float(k1[best]), float(k2[best]), coefficients[best]


def _exp_columns(constant: bool):
    def columns(k, x):
        decay = np.exp(-k[:, None] * x[None, :])
        return np.stack([np.ones_like(decay), decay], axis=-1) if constant else decay[..., None]

    return columns


def _asymptotic(x, y):
    """a + b exp(-k x) with k > 0: (a, b, k)."""
    x, y = _clean(x, y)
    k, (a, b) = _best_rate(x, y, _exp_columns(True))
    return a, b, k


def _logit_line(x, y, base=np.e):
    """R's start for the logistic curves: the response rescaled into (0, 1) with a 5 % margin at
    each end, its logit regressed on x: (intercept, slope) of logit(z) = intercept + slope x."""
    x, y = _clean(x, y)
    low, span = np.min(y), np.ptp(y) or 1.0
    z = (y - low + 0.05 * span) / (1.1 * span)
    logit = np.log(z / (1.0 - z)) / np.log(base)
    slope, intercept = np.polyfit(x, logit, 1)
    return intercept, slope


def _logistic_start(x, y):
    intercept, slope = _logit_line(x, y)
    xmid, scal = -intercept / slope, 1.0 / slope
    s = 1.0 / (1.0 + np.exp((xmid - x) / scal))
    asym = _solve(s[None, :, None], y)[0][0, 0]
    return np.array([asym, xmid, scal])


def _fpl_start(x, y):
    intercept, slope = _logit_line(x, y)
    xmid, scal = -intercept / slope, 1.0 / slope
    s = 1.0 / (1.0 + np.exp((xmid - x) / scal))
    a, b = _solve(np.stack([1.0 - s, s], axis=-1)[None], y)[0][0]
    return np.array([a, b, xmid, scal])


def _gompertz_start(x, y):
    """log|y| = log Asym - b2 exp(-k x) with b3 = exp(-k) (either sign of k)."""
    x, y = _clean(x, y)
    k, (a, c) = _best_rate(x, np.log(np.maximum(np.abs(y), np.finfo(float).tiny)), _exp_columns(True), signed=True)
    b2, b3 = -c, np.exp(-k)
    shape = np.exp(-b2 * b3**x)
    asym = _solve(shape[None, :, None], y)[0][0, 0]
    return np.array([asym, b2, b3])


def _weibull_start(x, y):
    """R's rule: the asymptotes from the ends of the sorted data, then the linearized
    log(-log((Asym - y) / Drop)) = lrc + pwr log(x)."""
    x, y = _clean(x, y)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    low, high = np.min(ys), np.max(ys)
    span = high - low or 1.0
    right = high + span / 8 if abs(high - ys[-1]) <= abs(low - ys[-1]) else low - span / 8
    left = low - span / 8 if abs(low - ys[0]) <= abs(high - ys[0]) else high + span / 8
    with np.errstate(all="ignore"):
        w = np.log(-np.log((right - ys) / (right - left)))
        ok = (xs > 0) & np.isfinite(w)
    pwr, lrc = np.polyfit(np.log(xs[ok]), w[ok], 1) if np.count_nonzero(ok) >= 2 else (1.0, -np.log(np.median(xs[xs > 0])))
    decay = np.exp(-np.exp(lrc) * xs**pwr)
    asym, drop = _solve(np.stack([np.ones_like(decay), -decay], axis=-1)[None], ys)[0][0]
    return np.array([asym, drop, lrc, pwr])


def _micmen_start(x, y):
    x, y = _clean(x, y)
    scale = np.max(np.abs(x)) or 1.0
    k_grid = np.logspace(-4, 4, RATE_GRID) * scale
    shape = x[None, :] / (k_grid[:, None] + x[None, :])
    coefficients, rss = _solve(shape[..., None], y)
    best = int(np.argmin(rss))
    return np.array([coefficients[best, 0], k_grid[best]])


def _asymp_start(x, y):
    a, b, k = _asymptotic(x, y)
    return np.array([a, a + b, np.log(k)])


def _asympoff_start(x, y):
    a, b, k = _asymptotic(x, y)
    with np.errstate(all="ignore"):
        c0 = np.log(-b / a) / k
    return np.array([a, np.log(k), c0 if np.isfinite(c0) else float(np.min(x))])


def _asymporig_start(x, y):
    x, y = _clean(x, y)

    def columns(k, x):
        return (1.0 - np.exp(-k[:, None] * x[None, :]))[..., None]

    k, (asym,) = _best_rate(x, y, columns)
    return np.array([asym, np.log(k)])


def _biexp_start(x, y):
    x, y = _clean(x, y)

    def columns(k1, k2, x):
        return np.stack([np.exp(-k1[:, None] * x[None, :]), np.exp(-k2[:, None] * x[None, :])], axis=-1)

    k1, k2, (a1, a2) = _best_pair(x, y, columns)
    return np.array([a1, np.log(k1), a2, np.log(k2)])


def _fol_start(x, y):
    """conc = c Dose (exp(-ke t) - exp(-ka t)) with c = ke ka / (Cl (ka - ke)): the rates on a
    grid of pairs, c by least squares, then lCl."""
    x, y = _clean(x, y)
    dose, time = x[:, 0], x[:, 1]

    def columns(ka, ke, t):
        return (dose[None, :] * (np.exp(-ke[:, None] * t[None, :]) - np.exp(-ka[:, None] * t[None, :])))[..., None]

    ka, ke, (c,) = _best_pair(time, y, columns)
    with np.errstate(all="ignore"):
        lcl = np.log(ke * ka / (c * (ka - ke)))
    return np.array([np.log(ke), np.log(ka), lcl if np.isfinite(lcl) else 0.0])


def _dose_response(x, y):
    """(Bottom, Top, LogEC50, HillSlope) on log10 doses ``x``."""
    intercept, slope = _logit_line(x, y, base=10.0)
    log_ec50, hill = -intercept / slope, slope
    s = 1.0 / (1.0 + 10.0 ** ((log_ec50 - x) * hill))
    bottom, top = _solve(np.stack([1.0 - s, s], axis=-1)[None], y)[0][0]
    return np.array([bottom, top, log_ec50, hill])


def _four_pl_start(x, y):
    return _dose_response(*_clean(x, y))


def _five_pl_start(x, y):
    return np.append(_dose_response(*_clean(x, y)), 1.0)


def _hill_start(x, y):
    x, y = _clean(x, y)
    positive = x > 0
    bottom, top, log_ec50, hill = _dose_response(np.log10(x[positive]), y[positive])
    return np.array([bottom, top, 10.0**log_ec50, hill])


def _decay_start(x, y):
    a, b, k = _asymptotic(x, y)
    return np.array([a + b, a, k])


def _association_start(x, y):
    a, b, k = _asymptotic(x, y)
    return np.array([a + b, a, k])


def _two_phase(association: bool):
    def start(x, y):
        x, y = _clean(x, y)

        def columns(k1, k2, x):
            fast, slow = np.exp(-k1[:, None] * x[None, :]), np.exp(-k2[:, None] * x[None, :])
            if association:
                fast, slow = 1.0 - fast, 1.0 - slow
            return np.stack([np.ones_like(fast), fast, slow], axis=-1)

        k1, k2, (c, fast, slow) = _best_pair(x, y, columns)
        return np.array([c, fast, k1, slow, k2])

    return start


def _peak(x, y):
    """(height, center, half width at half maximum) of the largest peak (or dip)."""
    x, y = _clean(x, y)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    base = np.median(ys) if len(ys) > 4 else 0.0
    dip = (base - np.min(ys)) > (np.max(ys) - base)
    signal = (base - ys) if dip else (ys - base)
    top = int(np.argmax(signal))
    half = signal[top] / 2.0
    left, right = top, top
    while left > 0 and signal[left - 1] > half:
        left -= 1
    while right < len(xs) - 1 and signal[right + 1] > half:
        right += 1
    spacing = np.median(np.diff(xs)) if len(xs) > 1 else 1.0
    hwhm = max(0.5 * (xs[right] - xs[left]), 0.5 * spacing, np.finfo(float).tiny)
    height = -signal[top] if dip else signal[top]
    return height, xs[top], hwhm


def _gaussian_start(x, y):
    height, center, hwhm = _peak(x, y)
    sigma = hwhm / np.sqrt(2.0 * np.log(2.0))
    return np.array([height * sigma * np.sqrt(2.0 * np.pi), center, sigma])


def _lorentzian_start(x, y):
    height, center, hwhm = _peak(x, y)
    return np.array([height * np.pi * hwhm, center, hwhm])


def _pvoigt_start(x, y):
    height, center, hwhm = _peak(x, y)
    return np.array([height * hwhm * 0.5 * (np.pi + np.sqrt(np.pi / np.log(2.0))), center, hwhm, 0.5])


def _voigt_start(x, y):
    """sigma = gamma, with the profile's full width at half maximum about 3.6 sigma then
    (Olivero and Longbothum's approximation), the amplitude from the height."""
    height, center, hwhm = _peak(x, y)
    sigma = 2.0 * hwhm / 3.6
    from scipy.special import voigt_profile

    return np.array([height / voigt_profile(0.0, sigma, sigma), center, sigma, sigma])


def _linear_start(x, y):
    slope, intercept = np.polyfit(*_clean(x, y), 1)
    return np.array([slope, intercept])


def _exponential_start(x, y):
    x, y = _clean(x, y)
    with np.errstate(all="ignore"):
        slope, _ = np.polyfit(x, np.log(np.maximum(np.abs(y), np.finfo(float).tiny)), 1)
    decay = -1.0 / slope if slope != 0 else float(np.ptp(x)) or 1.0
    amplitude = _solve(np.exp(-x / decay)[None, :, None], y)[0][0, 0]
    return np.array([amplitude, decay])


def _powerlaw_start(x, y):
    x, y = _clean(x, y)
    ok = (x > 0) & (y != 0)
    exponent, _ = np.polyfit(np.log(x[ok]), np.log(np.abs(y[ok])), 1) if np.count_nonzero(ok) >= 2 else (1.0, 0.0)
    with np.errstate(all="ignore"):
        amplitude = _solve(np.abs(x)[None, :, None] ** exponent, y)[0][0, 0]
    return np.array([amplitude, exponent])


# --- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A named model: its formula in the variables ``{x}`` (or ``{x1}``, ``{x2}``), its
    parameters in order, its start rule, and where it comes from."""

    name: str
    template: str
    params: tuple[str, ...]
    start: Callable = field(repr=False)
    rule: str
    source: str
    prefix: str = ""  # of its parameters in a sum of models: g -> g1_center
    variables: tuple[str, ...] = ("x",)
    swaps: tuple[tuple[tuple[int, ...], tuple[int, ...], int, str], ...] = ()  # (labels, their exchange, index compared, "<" or ">")
    peak: bool = False
    baseline: bool = False


def _entries() -> list[Entry]:
    x = "{x}"
    asymptotic = "a + b exp(-k x) profiled over log k, the linear a, b by least squares"
    logit = "the logit of y rescaled into (0, 1) regressed on x (R's rule)"
    peak = "the highest point (or deepest dip) and its half-maximum width (lmfit's rule)"
    return [
        Entry("logistic", f"Asym/(1+exp((xmid-{x})/scal))", ("Asym", "xmid", "scal"), _logistic_start, logit + "; Asym linear", "R SSlogis"),
        Entry("fpl", f"A+(B-A)/(1+exp((xmid-{x})/scal))", ("A", "B", "xmid", "scal"), _fpl_start, logit + "; A, B linear", "R SSfpl"),
        Entry("gompertz", f"Asym*exp(-b2*b3^{x})", ("Asym", "b2", "b3"), _gompertz_start, "log|y| = log Asym - b2 b3^x profiled over b3", "R SSgompertz"),
        Entry(
            "weibull",
            f"Asym-Drop*exp(-exp(lrc)*{x}^pwr)",
            ("Asym", "Drop", "lrc", "pwr"),
            _weibull_start,
            "asymptotes from the ends of the data, then log(-log((Asym-y)/Drop)) on log x (R's rule)",
            "R SSweibull",
        ),  # fmt: skip
        Entry("micmen", f"Vm*{x}/(K+{x})", ("Vm", "K"), _micmen_start, "K profiled on a log grid, Vm linear", "R SSmicmen"),
        Entry("asymp", f"Asym+(R0-Asym)*exp(-exp(lrc)*{x})", ("Asym", "R0", "lrc"), _asymp_start, asymptotic, "R SSasymp"),
        Entry("asympoff", f"Asym*(1-exp(-exp(lrc)*({x}-c0)))", ("Asym", "lrc", "c0"), _asympoff_start, asymptotic + "; c0 = log(-b/a)/k", "R SSasympOff"),
        Entry("asymporig", f"Asym*(1-exp(-exp(lrc)*{x}))", ("Asym", "lrc"), _asymporig_start, "lrc profiled on a log grid, Asym linear", "R SSasympOrig"),
        Entry(
            "biexp",
            f"A1*exp(-exp(lrc1)*{x})+A2*exp(-exp(lrc2)*{x})",
            ("A1", "lrc1", "A2", "lrc2"),
            _biexp_start,
            "the two rates on a grid of pairs, A1, A2 linear; labels lrc1 > lrc2",
            "R SSbiexp",
            swaps=(((0, 1, 2, 3), (2, 3, 0, 1), 1, ">"),),
        ),  # fmt: skip
        Entry(
            "fol",
            "{x1}*exp(lKe+lKa-lCl)*(exp(-exp(lKe)*{x2})-exp(-exp(lKa)*{x2}))/(exp(lKa)-exp(lKe))",
            ("lKe", "lKa", "lCl"),
            _fol_start,
            "ke < ka on a grid of pairs, the clearance by least squares; labels lKe < lKa; two variables: dose, then time",
            "R SSfol",
            variables=("x1", "x2"),
            swaps=(((0, 1), (1, 0), 0, "<"),),
        ),  # fmt: skip
        Entry(
            "4pl",
            f"Bottom+(Top-Bottom)/(1+10^((LogEC50-{x})*HillSlope))",
            ("Bottom", "Top", "LogEC50", "HillSlope"),
            _four_pl_start,
            logit.replace("logit", "log10 odds") + " (x: log dose); Bottom, Top linear",
            "Prism: log(agonist) vs response, variable slope",
        ),  # fmt: skip
        Entry(
            "5pl",
            f"Bottom+(Top-Bottom)/(1+10^((LogEC50+log10(2^(1/S)-1)/HillSlope-{x})*HillSlope))^S",
            ("Bottom", "Top", "LogEC50", "HillSlope", "S"),
            _five_pl_start,
            "as 4pl, with S = 1",
            "Prism: asymmetric (five parameter) logistic",
        ),  # fmt: skip
        Entry(
            "hill",
            f"Bottom+(Top-Bottom)*{x}^HillSlope/(EC50^HillSlope+{x}^HillSlope)",
            ("Bottom", "Top", "EC50", "HillSlope"),
            _hill_start,
            "as 4pl on log10 x (x > 0)",
            "Prism: agonist vs response, variable slope",
        ),  # fmt: skip
        Entry("decay", f"(Y0-Plateau)*exp(-K*{x})+Plateau", ("Y0", "Plateau", "K"), _decay_start, asymptotic, "Prism: one phase decay"),
        Entry(
            "decay2",
            f"Plateau+SpanFast*exp(-KFast*{x})+SpanSlow*exp(-KSlow*{x})",
            ("Plateau", "SpanFast", "KFast", "SpanSlow", "KSlow"),
            _two_phase(False),
            "the two rates on a grid of pairs, the rest linear; labels KFast > KSlow",
            "Prism: two phase decay",
            swaps=(((1, 2, 3, 4), (3, 4, 1, 2), 2, ">"),),
        ),  # fmt: skip
        Entry("association", f"Y0+(Plateau-Y0)*(1-exp(-K*{x}))", ("Y0", "Plateau", "K"), _association_start, asymptotic, "Prism: one phase association"),
        Entry(
            "association2",
            f"Y0+SpanFast*(1-exp(-KFast*{x}))+SpanSlow*(1-exp(-KSlow*{x}))",
            ("Y0", "SpanFast", "KFast", "SpanSlow", "KSlow"),
            _two_phase(True),
            "the two rates on a grid of pairs, the rest linear; labels KFast > KSlow",
            "Prism: two phase association",
            swaps=(((1, 2, 3, 4), (3, 4, 1, 2), 2, ">"),),
        ),  # fmt: skip
        Entry(
            "gaussian",
            f"amplitude/(sigma*sqrt(2*pi))*exp(-({x}-center)^2/(2*sigma^2))",
            ("amplitude", "center", "sigma"),
            _gaussian_start,
            peak,
            "lmfit GaussianModel (amplitude is the area)",
            prefix="g",
            peak=True,
        ),  # fmt: skip
        Entry(
            "lorentzian",
            f"amplitude/pi*sigma/(({x}-center)^2+sigma^2)",
            ("amplitude", "center", "sigma"),
            _lorentzian_start,
            peak,
            "lmfit LorentzianModel (amplitude is the area)",
            prefix="l",
            peak=True,
        ),  # fmt: skip
        Entry(
            "voigt",
            f"amplitude*voigt({x}-center,sigma,gamma)",
            ("amplitude", "center", "sigma", "gamma"),
            _voigt_start,
            peak + "; sigma = gamma",
            "lmfit VoigtModel with gamma free (amplitude is the area)",
            prefix="v",
            peak=True,
        ),
        Entry(
            "pvoigt",
            f"amplitude*((1-fraction)/(sigma/sqrt(2*log(2))*sqrt(2*pi))*exp(-({x}-center)^2/(2*(sigma/sqrt(2*log(2)))^2))"
            f"+fraction/pi*sigma/(({x}-center)^2+sigma^2))",
            ("amplitude", "center", "sigma", "fraction"),
            _pvoigt_start,
            peak + "; fraction 0.5",
            "lmfit PseudoVoigtModel (sigma: half width at half maximum of both parts)",
            prefix="pv",
            peak=True,
        ),  # fmt: skip
        Entry("linear", f"slope*{x}+intercept", ("slope", "intercept"), _linear_start, "least squares", "lmfit LinearModel", prefix="lin", baseline=True),
        Entry(
            "exponential",
            f"amplitude*exp(-{x}/decay)",
            ("amplitude", "decay"),
            _exponential_start,
            "a line through log|y|",
            "lmfit ExponentialModel",
            prefix="exp",
            baseline=True,
        ),  # fmt: skip
        Entry(
            "powerlaw",
            f"amplitude*{x}^exponent",
            ("amplitude", "exponent"),
            _powerlaw_start,
            "a line through log|y| against log x",
            "lmfit PowerLawModel",
            prefix="pow",
            baseline=True,
        ),  # fmt: skip
    ]


CATALOGUE: dict[str, Entry] = {entry.name: entry for entry in _entries()}
for _entry in list(CATALOGUE.values()):
    if not _entry.prefix:
        CATALOGUE[_entry.name] = Entry(**{**_entry.__dict__, "prefix": _entry.name})
del _entry

_SUM = re.compile(r"^\s*[A-Za-z_0-9]+(\s*\+\s*[A-Za-z_0-9]+)+\s*$")


def is_named(spec: str) -> bool:
    """True when ``spec`` names a catalogued model, or a sum of them ('gaussian+linear')."""
    if not isinstance(spec, str):
        return False
    words = [w.strip().lower() for w in spec.split("+")]
    return (len(words) == 1 or bool(_SUM.match(spec))) and all(w in CATALOGUE for w in words)


def formula_of(entry: Entry, x_names: tuple[str, ...], rename=None) -> str:
    """The entry's formula in the columns ``x_names``, its parameters renamed by ``rename``."""
    text = entry.template.format(**dict(zip(entry.variables, x_names, strict=True)))
    if rename:
        text = re.sub(r"\b[A-Za-z_][A-Za-z_0-9]*\b", lambda m: rename.get(m.group(0), m.group(0)) if m.group(0) not in x_names else m.group(0), text)
    return text


@dataclass(frozen=True)
class NamedModel(FormulaModel):
    """A catalogued model, or a sum of them, as a formula in the data's columns, with the
    start rule and label order of its entries (module docstring)."""

    components: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def build(cls, spec: str, x_names=("x",), y_name: str = "y") -> NamedModel:
        words = [w.strip().lower() for w in spec.split("+")]
        entries = [CATALOGUE[w] for w in words]
        needed = len(entries[0].variables)
        if any(len(e.variables) != needed for e in entries):
            raise ModelError(f"'{spec}': models of one variable and of two cannot be added")
        if len(x_names) != needed:
            what = "one predictor column" if needed == 1 else f"{needed} predictor columns ({', '.join(entries[0].variables)}), e.g. --x Dose,Time"
            raise ModelError(f"model '{spec}' takes {what}; got {len(x_names)} (--x)")
        for name in x_names:
            if not name.isidentifier() or name in FUNCTIONS or name in CONSTANTS or name.startswith("_"):
                raise ModelError(f"the column '{name}' cannot be a variable of model '{spec}': rename it to a plain name (letters, digits, _)")
        prefixes, order, parts = [], [], []
        for entry in entries:
            if len(entries) > 1:
                prefixes.append(f"{entry.prefix}{sum(p.startswith(entry.prefix) and p[len(entry.prefix) :].isdigit() for p in prefixes) + 1}")
                rename = {p: f"{prefixes[-1]}_{p}" for p in entry.params}
            else:
                prefixes.append("")
                rename = {}
            order += [rename.get(p, p) for p in entry.params]
            parts.append(formula_of(entry, x_names, rename))
        clash = [c for c in (*x_names, y_name) if c in order]
        if clash:
            raise ModelError(f"the column '{clash[0]}' has the name of a parameter of '{spec}' ({', '.join(order)}): rename the column")
        text = "+".join(f"({part})" if len(parts) > 1 else part for part in parts)
        parsed = FormulaModel.parse(text, x_names=tuple(x_names), y_name=y_name, order=tuple(order))
        canonical = "+".join(words)
        return cls(spec=canonical, x_names=parsed.x_names, y_name=y_name, parameter_names=tuple(order), rhs=parsed.rhs, lhs=None,
                   components=tuple(words), prefixes=tuple(prefixes))  # fmt: skip

    @property
    def formula(self) -> str:
        return ast.unparse(self.rhs).replace("**", "^")

    @property
    def entries(self) -> list[Entry]:
        return [CATALOGUE[c] for c in self.components]

    def component_slices(self) -> list[tuple[str, slice]]:
        out, at = [], 0
        for prefix, entry in zip(self.prefixes, self.entries, strict=True):
            out.append((prefix or entry.name, slice(at, at + len(entry.params))))
            at += len(entry.params)
        return out

    def component_models(self) -> list[tuple[str, NamedModel, slice]]:
        """Each component as a model of its own, with the slice of this model's parameters."""
        pairs = zip(self.component_slices(), self.components, strict=True)
        return [(label, NamedModel.build(c, self.x_names, self.y_name), part) for (label, part), c in pairs]

    def default_p0(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(self.components) > 1:
            return _sum_start(self, x, y)
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # e.g. the mean of no x > 0: the start is then NaN, replaced below
                start = np.asarray(self.entries[0].start(x, y), dtype=np.float64)
        except (np.linalg.LinAlgError, ValueError, IndexError, ZeroDivisionError, TypeError):
            start = np.full(len(self.parameter_names), np.nan)
        return np.where(np.isfinite(start), start, 1.0)

    def relabel(self, params: np.ndarray) -> np.ndarray:
        """(G, n) the permutation that puts each row of ``params`` in the documented label order
        (module docstring); the identity where the model has no exchangeable labels."""
        params = np.atleast_2d(np.asarray(params, dtype=np.float64))
        order = np.tile(np.arange(params.shape[1]), (params.shape[0], 1))
        for (_, part), entry in zip(self.component_slices(), self.entries, strict=True):
            for labels, exchanged, index, sense in entry.swaps:
                a, b = part.start + index, part.start + exchanged[labels.index(index)]
                swap = params[:, a] > params[:, b] if sense == "<" else params[:, a] < params[:, b]
                columns = [part.start + i for i in labels]
                targets = [part.start + i for i in exchanged]
                order[np.ix_(swap, columns)] = order[np.ix_(swap, targets)]
        return order

    def to_json(self) -> dict:
        return {**super().to_json(), "spec": self.spec, "name": self.spec, "formula": self.formula}


def _sum_start(model: NamedModel, x, y) -> np.ndarray:
    """A sum's start: the baseline components fitted first to the data's outer fifths, then each
    peak component at the next highest peak of what is left, then any other component at what
    is left (its own rule); the multistart then solves the linear parameters (amplitudes,
    slopes) at this start."""
    x, y = _clean(x, y)
    start = np.ones(len(model.parameter_names))
    remaining = y.copy()
    parts = model.component_models()
    kinds = [("baseline", [p for p in parts if CATALOGUE[p[1].components[0]].baseline]),
             ("peak", [p for p in parts if CATALOGUE[p[1].components[0]].peak]),
             ("other", [p for p in parts if not (CATALOGUE[p[1].components[0]].baseline or CATALOGUE[p[1].components[0]].peak)])]  # fmt: skip
    x1 = x if x.ndim == 1 else x[:, 0]
    for kind, members in kinds:
        for _, component, part in members:
            if kind == "baseline":
                low, high = np.quantile(x1, [0.2, 0.8])
                edges = (x1 <= low) | (x1 >= high)
                values = component.default_p0(x[edges], remaining[edges]) if np.count_nonzero(edges) >= 3 else component.default_p0(x, remaining)
            else:
                values = component.default_p0(x, remaining)
            start[part] = values
            with np.errstate(all="ignore"):
                curve = evaluate_numpy(component, values, x)
            if np.all(np.isfinite(curve)):
                remaining = remaining - curve
    return np.where(np.isfinite(start), start, 1.0)


def listing() -> list[tuple[str, str, str, str]]:
    """(name, formula, parameters, start rule and source) for ``nlfit models``."""
    rows = []
    for entry in CATALOGUE.values():
        shown = ("x1", "x2") if len(entry.variables) == 2 else ("x",)
        rows.append((entry.name, formula_of(entry, shown), ", ".join(entry.params), f"{entry.rule} [{entry.source}]"))
    return rows
