"""The Dataset: the numbers a fit is made to, with the names they came with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Predictor columns ``x`` (shape (m,) for one column, (m, k) for several), response ``y``.

    ``sigma`` holds per-point standard deviations, or is None for an unweighted fit.
    ``extra`` carries what a source knows beyond the numbers (a NIST file's formula, starts
    and certified values); it is empty for CSV input. ``files``: the inputs read, each as
    given ("stdin" for ``-``); ``dropped``: the rows left out for a missing value in a used
    column (``read_dataset(..., missing="drop")``).
    """

    x: np.ndarray
    y: np.ndarray
    x_names: tuple[str, ...]
    y_name: str
    sigma: np.ndarray | None = None
    source: str = ""
    groups: np.ndarray | None = None  # the --group-by column as text, one key per row
    files: tuple[str, ...] = ()
    dropped: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def n_points(self) -> int:
        return int(self.y.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The predictor or response column called ``name``."""
        if name == self.y_name:
            return self.y
        index = self.x_names.index(name)
        return self.x if self.x.ndim == 1 else self.x[:, index]
