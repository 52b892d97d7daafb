"""``nlfit fit --weights EXPR``: weights from an expression of the data's columns (the
predictors and the response), e.g. ``1/y^2`` (relative error), ``1/y`` (Poisson) or
``1/x``, as Prism's weighting choices. A weight w is the same as a sigma of 1/sqrt(w): the
fit minimizes sum(w r^2), and without --absolute-sigma the scale of the weights does not
matter (the residual variance is estimated). The expression uses the formula parser
(``nlfit.models.expression``); every weight must be a finite number above 0.

``--weights fitted:EXPR`` (e.g. ``fitted:1/y^2``): the response's name in EXPR stands for the
fitted curve, not the data, as Prism's "weight by 1/Y^2" where Y is the curve. The weights
then depend on the parameters, so they are recomputed from the curve until they settle:
the unweighted fit first, then refits (one start each, from the last parameters) with the
weights of the last curve, until the parameters change by less than ``SETTLED`` (relative)
or ``MAX_REFITS`` refits have run (then a warning: the weights did not settle). The result
is the fixed point Prism's iteration reaches: the parameters that minimize sum(w r^2) with
w computed from their own curve and held fixed in the derivatives."""

from __future__ import annotations

import dataclasses

import numpy as np

from nlfit.errors import InputError, OptionError

FITTED = "fitted:"
MAX_REFITS = 50
SETTLED = 1e-10


def is_fitted(text: str) -> bool:
    """Whether ``--weights text`` asks for weights from the fitted curve."""
    return text.strip().startswith(FITTED)


def apply(dataset, text: str):
    """``dataset`` with sigma = 1 / sqrt(weights) from ``text`` (of the data's columns)."""
    return _weighted(dataset, text, _expression(dataset, text), dataset.y, "data")


def _expression(dataset, text: str):
    from nlfit.models.expression import CONSTANTS, FormulaModel, formula_names

    if dataset.sigma is not None:
        raise OptionError("--weights and --sigma both set the weights: give one")
    columns = (*dataset.x_names, dataset.y_name)
    used, _ = formula_names(text)
    unknown = [n for n in used if n not in columns and n not in CONSTANTS]
    if unknown:
        raise OptionError(f"--weights '{text}': {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a column of the fit ({', '.join(columns)})")
    return FormulaModel.parse(text, x_names=columns, y_name="__response", require_params=False)


def _weighted(dataset, text: str, expression, response, where: str):
    from nlfit.models.expression import evaluate_numpy

    values = np.column_stack([np.asarray(dataset.x, dtype=np.float64).reshape(dataset.n_points, -1), np.asarray(response, dtype=np.float64)])
    with np.errstate(all="ignore"):
        weights = evaluate_numpy(expression, np.zeros(0), values)
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights > 0)))
    if bad.size:
        row = int(bad[0])
        rows = f"{bad.size} such row{'s' if bad.size > 1 else ''}"
        raise InputError(
            f"--weights '{text}' is {weights[row]:g} at data row {row + 1} ({rows}{', from the fitted curve' if where == 'curve' else ''}): "
            "every weight must be a finite number above 0"
        )
    return dataclasses.replace(dataset, sigma=1.0 / np.sqrt(weights))


def fit_with_fitted_weights(dataset, text: str, fit_once, p0=None):
    """``--weights fitted:EXPR``: ``(result, weighted dataset, summary)``. ``fit_once(data,
    p0, first)`` fits ``data`` (``first``: the unweighted fit, with the user's start and
    starts; else a refit from ``p0``). The summary goes into the JSON as ``weights``."""
    body = text.strip()[len(FITTED) :]
    expression = _expression(dataset, body)
    result, refits, settled = fit_once(dataset, p0, True), 0, False
    weighted = dataset
    while result.success and refits < MAX_REFITS:
        curve = np.asarray(result.model.predict(result.params, dataset.x), dtype=np.float64)
        weighted = _weighted(dataset, body, expression, curve, "curve")
        refit = fit_once(weighted, np.asarray(result.params), False)
        refits += 1
        change = np.max(np.abs(np.asarray(refit.params) - result.params) / np.maximum(np.abs(result.params), 1e-300)) if len(result.params) else 0.0
        result = refit
        if change <= SETTLED:
            settled = True
            break
    summary = {"expression": body, "from": "fitted curve", "refits": refits, "settled": settled}
    if not result.success and refits == 0:
        from nlfit.warning import FitWarning

        result.warnings.append(FitWarning("weights-unsettled", f"the fitted weights '{body}' were not applied: the unweighted fit before them failed"))
    elif result.success and not settled:
        from nlfit.warning import FitWarning

        message = f"the fitted weights '{body}' did not settle in {MAX_REFITS} refits: the result may depend on where they stopped"
        result.warnings.append(FitWarning("weights-unsettled", message))
    return result, weighted, summary
