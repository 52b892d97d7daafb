"""nlfit: nonlinear least-squares fitting with JAX derivatives.

Public API (importing it does not import JAX; ``fit`` does on first use)::

    from nlfit import fit, read_dataset
    result = fit(read_dataset("runge.csv"), "rational", method="lm")
    result.params, result.stderr, result.to_json()
"""

from nlfit.api import FitResult, fit
from nlfit.errors import NlfitError
from nlfit.io.read import read_dataset
from nlfit.solvers.catalog import GLOBALIZATIONS, METHODS

__all__ = ["fit", "FitResult", "read_dataset", "NlfitError", "METHODS", "GLOBALIZATIONS"]
__version__ = "0.1.0"
