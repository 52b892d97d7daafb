"""The Dataset: the numbers a fit is made to, with the names they came with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class NistInfo:
    """What a NIST StRD file says beyond its data (``nlfit.io.nist``): its ``name``, the
    ``formula`` (NIST's text with ``[]`` as ``()`` and the ``+ e`` removed), the
    ``param_names``, two ``starts`` ({1: [...], 2: [...]}), the certified values and standard
    deviations, residual sum of squares and standard deviation, the degrees of freedom, and
    the data parsed in long double (``long_x``, ``long_y``: near an exact fit the float64
    rounding of the data is as large as the residuals; ``nlfit.refine`` uses them)."""

    name: str
    formula: str
    param_names: tuple[str, ...]
    starts: dict[int, tuple[float, ...]]
    certified: tuple[float, ...]
    certified_sd: tuple[float, ...]
    certified_rss: float
    certified_rsd: float
    dof: int
    long_x: np.ndarray = field(repr=False)
    long_y: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Dataset:
    """Predictor columns ``x`` (shape (m,) for one column, (m, k) for several), response ``y``.

    ``sigma`` holds per-point standard deviations, or is None for an unweighted fit.
    ``nist`` holds what a NIST StRD file says beyond the numbers (its formula, starts and
    certified values); it is None for other input. ``files``: the inputs read, each as
    given ("stdin" for ``-``); ``dropped``: the rows left out for a missing value in a used
    column (``read_dataset(..., missing="drop")``); ``inputs``: what the provenance of a
    result records of each input read (``nlfit.provenance``).
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
    nist: NistInfo | None = field(default=None, compare=False)
    inputs: tuple[dict, ...] = field(default=(), compare=False)  # each input's path, size and sha256 (``io.read.input_record``)
    empty_groups: tuple = field(default=(), compare=False)  # ((key, first row), ...): groups whose every row was dropped
    kept_rows: np.ndarray | None = field(default=None, compare=False, repr=False)  # where rows were dropped: the kept rows' places in the input
    dropped_by_group: dict = field(default_factory=dict, compare=False, repr=False)  # group key -> its rows dropped

    @property
    def formula(self) -> str | None:
        """The model the source itself names (a NIST file's), or None."""
        return None if self.nist is None else self.nist.formula

    @property
    def n_points(self) -> int:
        return int(self.y.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The predictor or response column called ``name``."""
        if name == self.y_name:
            return self.y
        index = self.x_names.index(name)
        return self.x if self.x.ndim == 1 else self.x[:, index]


# The codes of a group column the reader has already factorized, so that the fit does not
# factorize the 10^7 text keys again (``nlfit.prepare.group_rows``: 0.5-0.6 s of hashing at
# 10^7 rows). Keyed by the keys array itself, which is made read-only: an entry is found only
# for that very array, and dropped with it.
_GROUP_CODES: dict[int, tuple] = {}


def remember_group_codes(groups: np.ndarray, codes: np.ndarray, names: list) -> None:
    """Record that ``groups`` (one key per row) is ``names[codes]``, with ``names`` in order of
    first appearance, as ``pandas.factorize(groups, sort=False)`` gives them."""
    import weakref

    groups.flags.writeable = False
    _GROUP_CODES[id(groups)] = (weakref.ref(groups), codes, names)
    weakref.finalize(groups, _GROUP_CODES.pop, id(groups), None)


def group_codes(groups: np.ndarray) -> tuple | None:
    """(codes, names) recorded for this very ``groups`` array, or None."""
    entry = _GROUP_CODES.get(id(groups))
    if entry is None or entry[0]() is not groups:
        return None
    return entry[1], entry[2]
