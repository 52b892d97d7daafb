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


def resolve_p0(model, dataset, p0) -> np.ndarray:
    """The start: given by position, by name (the rest from the model's default), or the default.

    The default (a linearized fit for rational models) is computed only when it is needed."""
    names = list(model.param_names)

    def default():
        return model.default_p0(np.asarray(dataset.x), np.asarray(dataset.y))

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
