"""Model specifications -> Model objects. Listing and parsing import no JAX.

Built-in specifications: ``polynomial:D``, ``chebyshev:D``, ``rational``, ``rational:P/Q``.
Anything else that contains an operator, a parenthesis or ``=`` is a user formula
(see ``nlfit.models.expression``). A bare word that names no built-in model is an error,
so that a typo is not silently fitted as a constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from nlfit.errors import ModelError, excerpt


@dataclass(frozen=True)
class ModelInfo:
    syntax: str
    parameters: str
    description: str


BUILTIN_MODELS: dict[str, ModelInfo] = {
    "polynomial": ModelInfo("polynomial:D", "c0..cD", "c0 + c1 x + ... + cD x^D (monomial basis); linear, no p0 needed"),
    "chebyshev": ModelInfo(
        "chebyshev:D",
        "c0..cD",
        "c0 T0(t) + ... + cD TD(t), x mapped from the data range onto [-1, 1]; linear, no p0 needed",
    ),
    "rational": ModelInfo(
        "rational | rational:P/Q",
        "c0 c1 c2 | a0..aP b1..bQ",
        "1/(c0 + c1 x + c2 x^2) (a reciprocal quadratic), or (a0 + ... + aP x^P)/(1 + b1 x + ... + bQ x^Q); default p0 from the linearized fit",
    ),
    "formula": ModelInfo(
        '"b1*(1-exp(-b2*x))"',
        "every name that is not a data column",
        "a user formula; also 'log(y) = ...' to fit a transformed response",
    ),
}

_NAMED = re.compile(r"^\s*([A-Za-z_][A-Za-z_0-9]*)\s*(?::\s*(.*?))?\s*$")


def model_for(spec, dataset):
    """The model ``spec`` (a string, or a Model, returned as it is) set up for ``dataset``:
    its predictors and response names, and for a NIST file the file's parameter order."""
    if not isinstance(spec, str):
        return spec
    order = None if dataset.nist is None else dataset.nist.param_names
    return build_model(spec, np.asarray(dataset.x), y_name=dataset.y_name, x_names=dataset.x_names, order=order)


def build_model(spec: str, x: np.ndarray, y_name: str = "y", x_names: tuple[str, ...] = ("x",), order=None):
    """The Model for ``spec``, set up for predictors ``x`` (Chebyshev takes its domain)."""
    from nlfit.models.base import require_one_predictor

    spec = spec.strip()
    if not spec:
        raise ModelError("empty model specification; see 'nlfit models'")
    from nlfit.models.named import NamedModel, is_named

    if is_named(spec):
        return NamedModel.build(spec, x_names=tuple(x_names), y_name=y_name)
    match = _NAMED.match(spec)
    if not match:
        from nlfit.models.expression import FormulaModel, formula_names

        rhs, lhs = formula_names(spec)
        unused = [name for name in x_names if name not in rhs and name not in lhs]
        if unused:
            raise ModelError(f"predictor column {', '.join(excerpt(c, quoted=True) for c in unused)} is not used by the formula '{spec}'")
        return FormulaModel.parse(spec, x_names=x_names, y_name=y_name, order=order)
    name, argument = match.group(1).lower(), match.group(2)
    if name in ("polynomial", "poly"):
        from nlfit.models.polynomial import Polynomial

        require_one_predictor(x, spec)
        return Polynomial(degree=_degree(argument, spec), spec=f"polynomial:{_degree(argument, spec)}")
    if name in ("chebyshev", "cheb"):
        from nlfit.models.chebyshev import Chebyshev

        require_one_predictor(x, spec)
        degree = _degree(argument, spec)
        lo, hi = float(np.min(x)), float(np.max(x))
        if not hi > lo:
            raise ModelError("chebyshev needs at least two distinct x values to set its domain")
        return Chebyshev(degree=degree, lo=lo, hi=hi, spec=f"chebyshev:{degree}")
    if name == "rational":
        from nlfit.models.rational import RationalPQ, ReciprocalQuadratic

        require_one_predictor(x, spec)
        if argument is None:
            return ReciprocalQuadratic()
        parts = re.fullmatch(r"(\d+)\s*/\s*(\d+)", argument)
        if not parts:
            raise ModelError(f"bad model '{spec}': expected rational:P/Q with integer degrees, e.g. rational:3/3")
        p, q = (int(d) if len(d) < 10 else MAX_DEGREE + 1 for d in parts.groups())
        if max(p, q) > MAX_DEGREE:
            shown = max(p, q) if max(len(d) for d in parts.groups()) < 10 else "of 10 or more digits"
            raise ModelError(f"bad model '{spec}': degree {shown} is too large (at most {MAX_DEGREE} for P and for Q)")
        return RationalPQ(numerator_degree=p, denominator_degree=q, spec=f"rational:{p}/{q}")
    known = ", ".join(m.syntax for m in BUILTIN_MODELS.values())
    raise ModelError(f"unknown model '{spec}'; built-in models: {known}, the named models of 'nlfit models' (or a formula such as \"b1*exp(-b2*x)\")")


def is_formula(spec: str) -> bool:
    """True when ``spec`` is a user formula rather than a built-in or named model."""
    from nlfit.models.named import is_named

    return isinstance(spec, str) and bool(spec.strip()) and not _NAMED.match(spec.strip()) and not is_named(spec)


MAX_DEGREE = 200  # polynomial, chebyshev and rational degrees: beyond this no fit is meaningful in float64


def _degree(argument: str | None, spec: str) -> int:
    if argument is None or not re.fullmatch(r"\d+", argument):
        raise ModelError(f"bad model '{spec}': give the degree as a non-negative integer, e.g. {spec.split(':')[0]}:5")
    degree = int(argument) if len(argument) < 10 else MAX_DEGREE + 1
    if degree > MAX_DEGREE:
        raise ModelError(f"bad model '{spec}': degree {degree} is too large (at most {MAX_DEGREE})")
    return degree


def model_from_json(info: dict, x: np.ndarray | None = None):
    """Rebuild the Model a fit result describes (its ``model_info`` and ``data`` columns)."""
    import dataclasses

    spec = info.get("spec")
    if not isinstance(spec, str):
        raise ModelError("the fit result has no model specification (model_info.spec)")
    x_names = tuple(info.get("x") or ("x",))
    y_name = info.get("y") or "y"
    domain = info.get("domain")
    probe = np.asarray(domain if domain else [-1.0, 1.0], dtype=float)
    if len(x_names) > 1:
        probe = np.tile(probe[:, None], (1, len(x_names)))
    shared, groups = info.get("shared"), info.get("groups")
    model = build_model(spec, probe, y_name=y_name, x_names=x_names, order=None if groups else info.get("params"))
    if domain:
        model = dataclasses.replace(model, lo=float(domain[0]), hi=float(domain[1]))
    if isinstance(shared, list) and isinstance(groups, list) and groups:  # a global fit (--share)
        from nlfit.models.shared import GlobalModel

        model = GlobalModel(model, tuple(str(s) for s in shared), tuple(str(g) for g in groups), str(info.get("group_by") or "group"), x_names)
    return model
