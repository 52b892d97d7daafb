"""The Model interface every built-in and user model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Model(ABC):
    """A model ``f(params, x)`` with named parameters.

    Models are frozen dataclasses, so they are hashable: the solver uses the model as a
    static argument of its compiled step. Data-dependent settings (a Chebyshev domain) are
    fixed when the model is built for a dataset.
    """

    spec: str

    @property
    @abstractmethod
    def param_names(self) -> tuple[str, ...]: ...

    @abstractmethod
    def predict(self, params, x):
        """Model values at ``x`` for the parameter vector ``params`` (JAX arrays)."""

    @property
    def is_linear(self) -> bool:
        """True when f is linear in the parameters (then no p0 is needed)."""
        return False

    def denominators(self, params, x) -> list:
        """The model's denominators at ``x`` (JAX arrays): where one changes sign between two
        data points the fitted curve has a pole there (``nlfit.diagnostics``)."""
        return []

    @property
    def linear_params(self) -> tuple[bool, ...]:
        """Which parameters the model is jointly affine in (their best values for the others
        fixed solve a linear least-squares problem). Multistart solves for them at every start."""
        return (self.is_linear,) * len(self.param_names)

    def default_p0(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """A start computed from the data, or None when the user must give one."""
        return np.zeros(len(self.param_names)) if self.is_linear else None

    def default_p0_groups(self, x: np.ndarray, y: np.ndarray, real: np.ndarray) -> np.ndarray | None:
        """``default_p0`` of B groups at once: x (B, L[, k]), y and the real-row mask (B, L)
        -> (B, n); None where the model has no such form (its groups then start one by one)."""
        if type(self).default_p0 is Model.default_p0 and self.is_linear:  # zeros, whatever the data
            return np.zeros((len(y), len(self.param_names)))
        return None

    def long_double_values(self):
        """A function (params, x) -> the model's values in ``np.longdouble`` (numpy), or None
        when the model has none (the default). A model that has one is polished near an exact
        fit with its residuals in extended precision (``nlfit.refine``)."""
        return None

    @property
    def fits_response_as_given(self) -> bool:
        """True when the fitted quantity is the response column itself (no transform): the
        data may then be re-read in extended precision (a NIST file's long-double copy)."""
        return True

    def transform_response(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The quantity that is fitted, computed from the response column (y itself)."""
        return y

    def to_json(self) -> dict:
        """What is needed to rebuild this model later (``nlfit predict``)."""
        return {"spec": self.spec}


class Series(Model):
    """A model linear in its coefficients c0 ... cD (a polynomial, a Chebyshev series): its
    subclasses are dataclasses with a ``degree`` field."""

    degree: int

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"c{i}" for i in range(self.degree + 1))

    @property
    def is_linear(self) -> bool:
        return True


def require_one_predictor(x: np.ndarray, spec: str) -> None:
    from nlfit.errors import ModelError

    if np.ndim(x) != 1:
        raise ModelError(f"model '{spec}' takes one predictor column; got {np.shape(x)[1]} (--x)")
