"""nlfit: nonlinear least-squares fitting with JAX derivatives.

Public API (names are imported on first use, so ``import nlfit`` and the CLI's start-up
stay light; JAX is imported by the first fit)::

    from nlfit import fit, read_dataset
    result = fit(read_dataset("runge.csv"), "rational", method="lm")
    result.params, result.stderr, result.to_json()
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "nlfit.fitting",
    "FitResult": "nlfit.result",
    "FitOptions": "nlfit.options",
    "read_dataset": "nlfit.io.read",
    "NlfitError": "nlfit.errors",
    "METHODS": "nlfit.solvers.catalog",
    "GLOBALIZATIONS": "nlfit.solvers.catalog",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nlfit' has no attribute {name!r}")
