"""Names of methods and globalizations, their aliases, defaults and descriptions (no JAX)."""

from __future__ import annotations

from nlfit.errors import OptionError

METHODS = ("gd", "newton", "gn", "lm")
GLOBALIZATIONS = ("line-search", "trust-region", "none")

METHOD_ALIASES = {
    "gd": "gd",
    "gradient-descent": "gd",
    "sgd": "gd",
    "newton": "newton",
    "gn": "gn",
    "gauss-newton": "gn",
    "lm": "lm",
    "levenberg-marquardt": "lm",
}
GLOBALIZATION_ALIASES = {
    "line-search": "line-search",
    "ls": "line-search",
    "trust-region": "trust-region",
    "tr": "trust-region",
    "none": "none",
}
DEFAULT_GLOBALIZATION = {"lm": "trust-region", "gn": "line-search", "newton": "trust-region", "gd": "line-search"}

METHOD_DESCRIPTIONS = {
    "gd": "steepest descent along -g, g = J^T r from one reverse pass (no Jacobian formed)",
    "newton": "Newton on the loss with the exact Hessian J^T J + sum r_i Hess(r_i) from JAX",
    "gn": "Gauss-Newton: the least-squares step of the linearized residuals (SVD)",
    "lm": "Levenberg-Marquardt: (J^T J + damping D^2) step = -g, D from Jacobian column norms",
}

CELL_DESCRIPTIONS = {
    ("gd", "none"): "fixed learning rate --step; optional heavy-ball --momentum; --batch-size for SGD",
    ("gd", "line-search"): "backtracking Armijo; the first trial doubles the last accepted step",
    ("gd", "trust-region"): "Cauchy point of the Gauss-Newton model in the trust region",
    ("newton", "none"): "the full Newton step H^-1 g (pseudo-inverse); may head for a saddle",
    ("newton", "line-search"): "eigenvalue-modified Newton (|lambda_i|, floored) + Armijo backtracking",
    ("newton", "trust-region"): "exact subproblem by eigendecomposition (More-Sorensen, hard case handled)",
    ("gn", "none"): "the full Gauss-Newton step, always taken",
    ("gn", "line-search"): "damped Gauss-Newton: GN direction + Armijo backtracking",
    ("gn", "trust-region"): "Powell's dogleg between the Cauchy point and the GN step",
    ("lm", "none"): "classical Marquardt rule: damping x10 on rejection, /10 on acceptance",
    ("lm", "line-search"): "LM direction, Nielsen's damping update from the gain ratio, Armijo backtracking",
    ("lm", "trust-region"): "More (1978): scaled trust region, damping from the secular equation (default)",
}


def implementation(base: type, name: str) -> type:
    """The subclass of ``base`` (a Direction or a Globalization) whose ``name`` is ``name``:
    the classes themselves are the registry, so a new one needs no factory of its own."""
    found, stack = [], [base]
    while stack:
        for cls in stack.pop().__subclasses__():
            stack.append(cls)
            if cls.__dict__.get("name") == name:
                found.append(cls)
    if len(found) != 1:
        raise LookupError(f"{len(found)} implementations of {base.__name__} named {name!r}")
    return found[0]


def resolve_method(name: str) -> str:
    key = name.strip().lower()
    if key not in METHOD_ALIASES:
        raise OptionError(f"unknown --method '{name}'; choose from {', '.join(METHOD_ALIASES)}")
    return METHOD_ALIASES[key]


def resolve_globalization(name: str | None, method: str) -> str:
    if name is None or name.strip().lower() in ("", "default"):
        return DEFAULT_GLOBALIZATION[method]
    key = name.strip().lower()
    if key not in GLOBALIZATION_ALIASES:
        raise OptionError(f"unknown --globalization '{name}'; choose from {', '.join(GLOBALIZATION_ALIASES)}")
    return GLOBALIZATION_ALIASES[key]
