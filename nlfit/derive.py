"""Derived quantities (``nlfit fit --derive 'NAME=EXPR'``): a function of the parameters, such
as a half-life ``t_half=log(2)/k`` or ``EC50=10^LogEC50``, with its delta-method standard
error sqrt(g^T C g) (g the gradient of EXPR at the estimate, from JAX; C the covariance) and
the Wald interval value ± q·stderr with the fit's quantile; with ``--bootstrap N`` also the
percentile interval of EXPR over the bootstrap refits. EXPR is a formula (``nlfit.models.
expression``: the same safe parser) whose names are the model's parameters, pi and e."""

from __future__ import annotations

import numpy as np

from nlfit.errors import OptionError


def parse(texts, param_names) -> list[tuple[str, object, list[int]]]:
    """[(name, evaluate(params of the expression), positions in the model's vector)]."""
    from nlfit.models.expression import CONSTANTS, FormulaModel, formula_names

    out = []
    for text in texts or ():
        name, equals, expression = str(text).partition("=")
        name = name.strip()
        if not equals or not name.isidentifier() or not expression.strip():
            raise OptionError(f"--derive takes NAME=EXPRESSION, e.g. 't_half=log(2)/k'; got '{text}'")
        if name in param_names or name in (n for n, _, _ in out):
            raise OptionError(f"--derive {name}: the name is already a parameter or a derived quantity")
        used, _ = formula_names(expression)
        unknown = [n for n in used if n not in param_names and n not in CONSTANTS]
        if unknown:
            raise OptionError(
                f"--derive {name}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a parameter (parameters: {', '.join(param_names)})"
            )
        model = FormulaModel.parse(expression, x_names=(), y_name="__response", require_params=False)
        out.append((name, model, [list(param_names).index(n) for n in model.parameter_names]))
    return out


def derive(found, params, covariance, quantile: float, draws=None, converged=None, level: float = 0.95) -> dict:
    """{name: {value, stderr, ci, ci_method[, bootstrap_ci]}} for ``parse``'s expressions."""
    from nlfit._jax import jax, jnp
    from nlfit.models.expression import _compiled

    params = np.asarray(params, dtype=np.float64)
    out = {}
    for name, model, positions in found:
        evaluate = _compiled(model, "rhs")

        def value_of(theta, evaluate=evaluate, positions=positions):
            return jnp.asarray(evaluate(theta[jnp.asarray(positions, dtype=jnp.int32)] if positions else theta[:0], {}), dtype=jnp.float64)

        value = float(value_of(jnp.asarray(params)))
        gradient = np.asarray(jax.grad(value_of)(jnp.asarray(params)))
        stderr = None
        if covariance is not None:
            variance = float(gradient @ np.asarray(covariance, dtype=np.float64) @ gradient)
            stderr = float(np.sqrt(variance)) if np.isfinite(variance) and variance >= 0 else None
        interval = None if stderr is None or not np.isfinite(value) else [value - quantile * stderr, value + quantile * stderr]
        entry = {"value": value if np.isfinite(value) else None, "stderr": stderr, "ci": interval, "ci_method": "delta"}
        if draws is not None and converged is not None and np.count_nonzero(converged) >= 2:
            values = np.asarray(jax.vmap(value_of)(jnp.asarray(draws[converged])), dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size >= 2:
                entry["bootstrap_ci"] = [float(np.quantile(values, 0.5 - level / 2)), float(np.quantile(values, 0.5 + level / 2))]
        out[name] = entry
    return out
