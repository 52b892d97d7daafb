"""Where a fit starts: the start the user gave (``--p0``), completed from the data file's own
(a NIST file's start 1 or 2) or from the model's default, and the box of ``--bounds`` and
``--fix`` it must lie in. ``choose_start`` is the one chooser every command uses (``fit``,
``check-jac``, and each group of a grouped fit)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from nlfit.errors import ModelError, OptionError


def choose_start(model, dataset, p0=None, file_start: int | None = None) -> tuple[np.ndarray, bool]:
    """(start, given): the start of a fit of ``model`` to ``dataset`` and whether the user
    chose it (a given start must lie inside the bounds; a default one is moved into them).

    ``p0``: None, values by position, or {name: value}. A NIST file (``dataset.nist``)
    brings its own starts: ``file_start`` (1 or 2, default 1) is used when ``p0`` is None,
    and completes a ``p0`` by name. Otherwise names left out come from the model's default."""
    nist = dataset.nist
    if nist is not None and (p0 is None or isinstance(p0, Mapping)):
        number = file_start or 1
        if number not in nist.starts:
            raise OptionError(f"--start must be 1 or 2 for a NIST file; got {number}")
        starting = list(nist.starts[number])
        if p0 is None:
            p0 = starting  # by position, so it also serves a built-in model such as rational:3/3
        elif set(p0) <= set(nist.param_names):
            p0 = {**dict(zip(nist.param_names, starting, strict=True)), **p0}  # the file's start, named ones replaced
    return resolve_p0(model, dataset, p0), p0 is not None


# Rows a model's default start is computed from: evenly spaced ones beyond this (a start from
# a linearized least-squares fit needs no more; at 10^7 rows its design matrix cost 1.8 s).
START_ROWS = 1 << 16


def default_start(model, x, y):
    """``model.default_p0`` from the data, or from START_ROWS evenly spaced rows of more."""
    x, y = np.asarray(x), np.asarray(y)
    if len(y) > START_ROWS:
        rows = np.rint(np.linspace(0.0, len(y) - 1, START_ROWS)).astype(np.int64)
        x, y = x[rows], y[rows]
    return model.default_p0(x, y)


def resolve_p0(model, dataset, p0) -> np.ndarray:
    """The start: given by position, by name (the rest from the model's default), or the default.

    The default (a linearized fit for rational models) is computed only when it is needed."""
    names = list(model.param_names)

    def default():
        return default_start(model, dataset.x, dataset.y)

    if p0 is None or (isinstance(p0, (Sequence, Mapping)) and len(p0) == 0):
        start = default()
        if start is None:
            raise ModelError(f"model '{model.spec}' needs a starting point: give --p0 with {len(names)} values ({', '.join(names)})")
        return np.asarray(start, dtype=np.float64)
    if isinstance(p0, Mapping):
        unknown = [k for k in p0 if k not in names]
        if unknown:
            raise ModelError(f"--p0 names unknown parameter(s) {', '.join(unknown)}; the parameters are {', '.join(names)}")
        missing = [k for k in names if k not in p0]
        start = np.zeros(len(names))
        if missing:
            fallback = default()
            if fallback is None:
                raise ModelError(f"--p0 must set every parameter of '{model.spec}'; missing: {', '.join(missing)}")
            start = np.array(fallback, dtype=np.float64)
        for k, v in p0.items():
            start[names.index(k)] = float(v)
        return _check_finite(start)
    values = np.asarray([float(v) for v in p0], dtype=np.float64)
    if values.size != len(names):
        raise ModelError(f"--p0 has {values.size} value(s) but model '{model.spec}' has {len(names)} parameters ({', '.join(names)})")
    return _check_finite(values)


def _check_finite(values: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise ModelError("--p0 values must be finite numbers")
    return values


def box(model, bounds, fix, start, given: bool = True):
    """(lower, upper, start) from --bounds {name: (lo, hi)} and --fix {name: value}.

    A start the user gave must lie inside the bounds; a default start is moved into them."""
    names = list(model.param_names)
    lower, upper = np.full(len(names), -np.inf), np.full(len(names), np.inf)
    for option, table in (("--bounds", bounds or {}), ("--fix", fix or {})):
        unknown = [k for k in table if k not in names]
        if unknown:
            raise OptionError(f"{option} names unknown parameter(s) {', '.join(unknown)}; the parameters are {', '.join(names)}")
    for name, (lo, hi) in (bounds or {}).items():
        if not lo <= hi:
            raise OptionError(f"--bounds {name}: the lower bound {lo} is above the upper bound {hi}")
        lower[names.index(name)], upper[names.index(name)] = lo, hi
    start = np.array(start, dtype=np.float64)
    for name, value in (fix or {}).items():
        if not math.isfinite(value):
            raise OptionError(f"--fix {name}: the value must be a finite number")
        i = names.index(name)
        lower[i] = upper[i] = start[i] = value
    if names and np.all(lower == upper):
        raise OptionError("every parameter is fixed (--fix, or --bounds with equal ends): there is nothing to fit; 'nlfit predict' evaluates a model")
    if not given:
        start = np.clip(start, lower, upper)
    outside = [names[i] for i in range(len(names)) if not lower[i] <= start[i] <= upper[i]]
    if outside:
        i = names.index(outside[0])
        raise OptionError(f"the start {outside[0]}={start[i]:g} is outside its bounds [{lower[i]:g}, {upper[i]:g}]; give a --p0 inside")
    return lower, upper, start


SPECTRUM_ROWS = 512  # at most this many evenly picked rows enter the periodogram
SPECTRUM_FREQUENCIES = 2 * SPECTRUM_ROWS  # a step of at most about a quarter of the resolution 2 pi / span
SPECTRUM_PEAKS = 2
SPECTRUM_VALUES = 1 << 22  # the periodograms of as many groups as fill this many (frequency, row) values are formed at once


def guided_starts(model, x, y, counts) -> tuple[np.ndarray, list[str]]:
    """Starts read off the data where the formula's structure says what a parameter is, for
    G groups (``x``, ``y`` (G, L), the first ``counts`` rows real): (starts (G, S, n), NaN
    for the parameters they leave as they are; labels). A fit can run off to a limit where
    its model degenerates (``nlfit.diagnostics.undetermined``); these starts begin away
    from it:

    - a frequency b of sin(k b x) or cos(k b x): the SPECTRUM_PEAKS highest peaks of the
      periodogram |sum (y - mean) exp(-i w x)|^2 over angular frequencies w from pi / span
      to the Nyquist frequency pi / (median spacing) (uneven x allowed: the sum is taken at
      the points themselves), b = w / k; the limit b -> 0 makes a*sin(b x) a straight line;
    - a pole position b of a / (x - b): the midpoints next to the point that deviates most
      from the median of y (a pole inside the data shows there), and half the data's span
      beyond each end; the limit |b| -> infinity makes the term a straight line.

    The multistart solves the linear parameters at each of them."""
    frequencies, poles = getattr(model, "frequencies", ()), getattr(model, "poles", ())
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    groups, n = y.shape[0], len(model.param_names)
    if x.ndim != 2 or not (frequencies or poles):
        return np.full((groups, 0, n), np.nan), []
    rows = np.arange(y.shape[1])[None, :] < np.asarray(counts)[:, None]
    columns, labels = [], []
    with np.errstate(all="ignore"):
        if frequencies:
            step = max(1, SPECTRUM_VALUES // (SPECTRUM_FREQUENCIES * min(y.shape[1], SPECTRUM_ROWS)))
            peaks = np.concatenate([_spectral_peaks(x[i : i + step], y[i : i + step], rows[i : i + step]) for i in range(0, groups, step)])
            for peak in range(SPECTRUM_PEAKS):
                start = np.full((groups, n), np.nan)
                for index, k in frequencies:
                    start[:, index] = peaks[:, peak] / k
                columns.append(start)
                labels.append(f"spectrum peak {peak + 1}")
        if poles:
            names = ("pole at the largest deviation", "pole after it", "pole below the data", "pole above the data")
            for position, label in zip(_pole_positions(x, y, rows), names, strict=True):
                start = np.full((groups, n), np.nan)
                for index, sign in poles:
                    start[:, index] = sign * position
                columns.append(start)
                labels.append(label)
    starts = np.stack(columns, axis=1)
    return np.where(np.isfinite(starts), starts, np.nan), labels


def _spectral_peaks(x, y, rows) -> np.ndarray:
    """(G, SPECTRUM_PEAKS) angular frequencies of the highest periodogram peaks (NaN when
    there are fewer)."""
    groups, width = y.shape
    count = np.count_nonzero(rows, axis=1)
    pick = np.rint(np.linspace(0.0, 1.0, min(width, SPECTRUM_ROWS))[None, :] * np.maximum(count - 1, 0)[:, None]).astype(np.int64)
    xs, ys = np.take_along_axis(x, pick, axis=1), np.take_along_axis(y, pick, axis=1)
    real = (count >= 4)[:, None] & np.isfinite(xs) & np.isfinite(ys)
    ordered = np.sort(np.where(real, xs, np.nan), axis=1)
    span = np.nanmax(ordered, axis=1) - np.nanmin(ordered, axis=1)
    steps = np.diff(ordered, axis=1)
    spacing = np.nanmedian(np.where(steps > 0, steps, np.nan), axis=1)
    low, high = np.pi / span, np.pi / spacing
    grid = low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, SPECTRUM_FREQUENCIES)[None, :]
    centred = np.where(real, ys - np.nanmean(np.where(real, ys, np.nan), axis=1, keepdims=True), 0.0)
    phase = grid[:, :, None] * np.where(real, xs, 0.0)[:, None, :]
    power = np.sum(centred[:, None, :] * np.cos(phase), axis=2) ** 2 + np.sum(centred[:, None, :] * np.sin(phase), axis=2) ** 2
    inner = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    peak = np.concatenate([power[:, :1] > power[:, 1:2], inner, power[:, -1:] > power[:, -2:-1]], axis=1) & np.isfinite(power)
    order = np.argsort(np.where(peak, -power, np.inf), axis=1)[:, :SPECTRUM_PEAKS]
    found = np.take_along_axis(np.where(peak, grid, np.nan), order, axis=1)
    return np.where(np.isfinite(span)[:, None] & (span > 0)[:, None], found, np.nan)


def _pole_positions(x, y, rows) -> list[np.ndarray]:
    """Four (G,) pole positions: the midpoints before and after the point farthest from the
    median of y (between distinct sorted x values), and half the span below and above the
    data."""
    real = rows & np.isfinite(x) & np.isfinite(y)
    order = np.argsort(np.where(real, x, np.inf), axis=1)
    xs, ys, ok = (np.take_along_axis(v, order, axis=1) for v in (x, y, real))
    xs = np.where(ok, xs, np.nan)
    deviation = np.abs(ys - np.nanmedian(np.where(ok, ys, np.nan), axis=1, keepdims=True))
    worst = np.argmax(np.where(ok, deviation, -np.inf), axis=1)
    last = np.maximum(np.count_nonzero(ok, axis=1) - 1, 0)
    at = np.arange(x.shape[0])
    before = 0.5 * (xs[at, np.maximum(worst - 1, 0)] + xs[at, worst])
    after = 0.5 * (xs[at, worst] + xs[at, np.minimum(worst + 1, last)])
    low, high = np.nanmin(xs, axis=1), np.nanmax(xs, axis=1)
    span = high - low
    return [before, after, low - 0.5 * span, high + 0.5 * span]
