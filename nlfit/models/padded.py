"""One compiled program for every parameter count of a bucket: a model computed with more
parameters than it has, the extra ones held fixed.

The solver, the multistart and the polish are compiled for the shapes they see, and the
number of parameters is one of them. A single small fit therefore runs its model with its
parameter vector padded to a size of ``SIZES``: a polynomial of degree 5 runs as the
polynomial of degree 7 (``c6 = c7 = 0``), a formula of three parameters as one of four whose
fourth no instruction reads. The padded parameters are fixed (their lower and upper bounds
both equal their value), which every stage already handles: the solver freezes them, the
statistics and the checks leave them out as they leave out a parameter fixed with ``--fix``,
and the result drops them (``nlfit.result.Fits.unpadded``). A new degree, parameter count or
formula inside a bucket then compiles nothing.

``Padded`` is the static model of such a fit: its equality is that of ``inner`` alone (the
bucket), so two models of one bucket share every compiled program; the model itself
(``source``), where its parameters sit in the padded vector (``shown``) and the values of the
padded ones (``values``) are carried beside it, outside equality. The code outside the
compiled programs sees the padded parameters under names of their own (``HIDDEN``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIZES = (4, 8, 12, 16, 24, 32, 48, 64)  # parameter counts a padded fit is computed with
HIDDEN = "_padding"  # the names of the padded parameters start with this (never a model's own)


def padded_count(n: int) -> int | None:
    """The size of ``SIZES`` that ``n`` parameters are computed with, or None beyond the last."""
    return next((size for size in SIZES if size >= n), None)


@dataclass(frozen=True)
class Padded:
    """``source`` computed as ``inner`` with parameters padded (module docstring). ``shown``:
    the position of each of the source's parameters in the padded vector; ``values``: the
    padded vector of a start (the padded parameters' fixed values, and placeholders where a
    shown parameter sits)."""

    inner: object
    shown: tuple[int, ...] = field(compare=False)
    values: tuple[float, ...] = field(compare=False)
    source: object = field(compare=False, repr=False)

    def program_key(self) -> tuple:
        """What names this model's compiled programs on disk (``nlfit.programs``): the bucket."""
        inner = getattr(type(self.inner), "program_key", None)
        return ("padded.Padded", inner(self.inner) if inner is not None else self.inner)

    @property
    def size(self) -> int:
        return len(self.values)

    def pad(self, values: np.ndarray) -> np.ndarray:
        """(..., n) values of the source's parameters -> (..., size), the padded ones at theirs."""
        values = np.asarray(values, dtype=np.float64)
        out = np.broadcast_to(np.asarray(self.values, dtype=np.float64), (*values.shape[:-1], self.size)).copy()
        out[..., list(self.shown)] = values
        return out

    def pad_mask(self, mask: np.ndarray) -> np.ndarray:
        """(n,) booleans of the source's parameters -> (size,), False for the padded ones."""
        out = np.zeros(self.size, dtype=bool)
        out[list(self.shown)] = np.asarray(mask, dtype=bool)
        return out

    # what the compiled programs call: the inner model
    def predict(self, params, x):
        return self.inner.predict(params, x)

    def run(self, tape, params, x):
        return self.inner.run(tape, params, x)

    def denominators(self, params, x):
        return self.inner.denominators(params, x)

    # what the code around them reads: the source's, with the padded parameters beside
    @property
    def param_names(self) -> tuple[str, ...]:
        names = [f"{HIDDEN}{i}" for i in range(self.size)]
        for name, at in zip(self.source.param_names, self.shown, strict=True):
            names[at] = name
        return tuple(names)

    @property
    def linear_params(self) -> tuple[bool, ...]:
        return tuple(self.pad_mask(self.source.linear_params).tolist())

    @property
    def frequencies(self):
        return tuple((self.shown[i], k) for i, k in getattr(self.source, "frequencies", ()))

    @property
    def poles(self):
        return tuple((self.shown[i], *rest) for i, *rest in getattr(self.source, "poles", ()))

    @property
    def spec(self) -> str:
        return self.source.spec

    def __getattr__(self, name):
        if name.startswith("__") or name in ("inner", "shown", "values", "source"):
            raise AttributeError(name)
        if name == "values_on_grids" and hasattr(self.source, name):
            return lambda params, grids: self.source.values_on_grids(np.asarray(params)[..., list(self.shown)], grids)
        if name in ("long_double_values", "to_json", "fits_response_as_given", "transform_response", "default_p0", "is_linear"):
            return getattr(self.source, name)
        raise AttributeError(name)


def for_model(model) -> Padded | None:
    """The padded form of a built-in series or rational model (a polynomial, a Chebyshev
    series, ``rational:P/Q``), or None for other models. A Chebyshev series also takes its
    domain as two padded parameters, so a new data range compiles nothing either."""
    from nlfit.models.chebyshev import Chebyshev, ChebyshevOnDomain
    from nlfit.models.polynomial import Polynomial
    from nlfit.models.rational import RationalPQ

    if type(model) is Polynomial:
        size = padded_count(model.degree + 1)
        if size is None:
            return None
        return Padded(Polynomial(size - 1), tuple(range(model.degree + 1)), (0.0,) * size, model)
    if type(model) is Chebyshev:
        size = padded_count(model.degree + 3)
        if size is None:
            return None
        return Padded(ChebyshevOnDomain(size - 3), tuple(range(model.degree + 1)), (0.0,) * (size - 2) + (model.lo, model.hi), model)
    if type(model) is RationalPQ:
        numerator = padded_count(model.numerator_degree + 1)
        denominator = padded_count(model.denominator_degree) if model.denominator_degree else 0
        if numerator is None or denominator is None:
            return None
        shown = (*range(model.numerator_degree + 1), *range(numerator, numerator + model.denominator_degree))
        return Padded(RationalPQ(numerator - 1, denominator), shown, (0.0,) * (numerator + denominator), model)
    return None
