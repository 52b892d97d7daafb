"""``nlfit fit --weights EXPR``: weights from an expression of the data's columns (the
predictors and the response), e.g. ``1/y^2`` (relative error), ``1/y`` (Poisson) or
``1/x``, as Prism's weighting choices. A weight w is the same as a sigma of 1/sqrt(w): the
fit minimizes sum(w r^2), and without --absolute-sigma the scale of the weights does not
matter (the residual variance is estimated). The expression uses the formula parser
(``nlfit.models.expression``); every weight must be a finite number above 0."""

from __future__ import annotations

import dataclasses

import numpy as np

from nlfit.errors import InputError, OptionError


def apply(dataset, text: str):
    """``dataset`` with sigma = 1 / sqrt(weights) from ``text``."""
    from nlfit.models.expression import CONSTANTS, FormulaModel, evaluate_numpy, formula_names

    if dataset.sigma is not None:
        raise OptionError("--weights and --sigma both set the weights: give one")
    columns = (*dataset.x_names, dataset.y_name)
    used, _ = formula_names(text)
    unknown = [n for n in used if n not in columns and n not in CONSTANTS]
    if unknown:
        raise OptionError(f"--weights '{text}': {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a column of the fit ({', '.join(columns)})")
    model = FormulaModel.parse(text, x_names=columns, y_name="__response", require_params=False)
    values = np.column_stack([np.asarray(dataset.x, dtype=np.float64).reshape(dataset.n_points, -1), np.asarray(dataset.y, dtype=np.float64)])
    weights = evaluate_numpy(model, np.zeros(0), values)
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights > 0)))
    if bad.size:
        row = int(bad[0])
        rows = f"{bad.size} such row{'s' if bad.size > 1 else ''}"
        raise InputError(f"--weights '{text}' is {weights[row]:g} at data row {row + 1} ({rows}): every weight must be a finite number above 0")
    return dataclasses.replace(dataset, sigma=1.0 / np.sqrt(weights))
