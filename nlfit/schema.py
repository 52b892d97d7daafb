"""The types of what nlfit reads back: the options of a config file and a saved fit result.

One declaration per option: ``OPTIONS`` here for the options of ``nlfit fit`` that are not
the fit's own, the fields of ``nlfit.options.FitOptions`` for the rest, each with a rule of
``nlfit.rules``. ``nlfit fit --config`` checks every key against them, and a command-line
value is checked by ``check_option``; ``check_fit_result`` is the one check of the JSON that
``nlfit predict`` reads. The rules are strict: a boolean is not a number (TOML ``plot = 1``
or ``max_iter = true`` is an error), and a string is never read as a number or a boolean
(``absolute_sigma = "false"`` is an error, not true). A TOML integer is fine where a number
is expected. Every mismatch is one line that names the key and says what was expected and
what was found, raised as an OptionError (options) or an InputError (a fit result), both
exit code 2.

The layers: ``nlfit.rules`` (the rules) < ``nlfit.options`` (the fit's options) < this
module, which knows both tables; neither of the others imports it.

This module imports neither JAX nor numpy at its top (``nlfit fit --help`` reads its
rules); ``check_fit_result`` rebuilds the model through the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nlfit.errors import InputError, NlfitError
from nlfit.options import RULES
from nlfit.rules import COMMAND_LINE, Flag, Integer, Mismatch, Quiet, Text, Values, check_value, describe, finite, is_number

# The limits are also read from here (the tests, older code): explicit re-exports.
from nlfit.rules import MAX_ITER_LIMIT as MAX_ITER_LIMIT
from nlfit.rules import SEED_LIMIT as SEED_LIMIT
from nlfit.rules import STARTS_LIMIT as STARTS_LIMIT

if TYPE_CHECKING:
    import numpy as np


# The options of ``nlfit fit`` beyond the fit's own (``nlfit.options.FitOptions`` declares
# those, each with its rule): data, output and reporting choices. Which names are accepted
# (an unknown model, format or engine) is checked where they are used.
OPTIONS: dict[str, object] = {
    "progress": Flag(),
    "quiet": Quiet(),
    "start": Integer(1),
    "model": Text(),
    "x": Text(listable=True, column=True),
    "y": Text(column=True),
    "sigma": Text(column=True),
    "format": Text(),
    "output": Text(),
    "plot": Text(),
    "group_by": Text(column=True),
    "share": Text(listable=True),
    "intervals": Text(),
    "bootstrap": Integer(1),
    "bootstrap_kind": Text(),
    "derive": Text(listable=True),
    "weights": Text(),
    "residual_tests": Flag(),
    "engine": Text(),
    "scheduler": Text(),
    "threads": Integer(1),
    "sep": Text(),
    "missing": Text(),
    "glob": Flag(),
    "p0": Values(True, 'a string such as "a=1,b=2"'),
}


def rule_of(name: str):
    """The rule of option ``name``: ``OPTIONS`` or a field of ``FitOptions``."""
    return OPTIONS[name] if name in OPTIONS else RULES[name]  # a KeyError here is a bug: every option is declared


def check_option(name: str, value, source: str = COMMAND_LINE, key: str | None = None):
    """``value`` of the fit option ``name`` (underscores, as in ``OPTIONS``), checked and
    normalized (a TOML int becomes a float where a number is expected; a list of columns or
    methods becomes the flag's comma list). None (not given) passes.

    ``source``: COMMAND_LINE (the message names the flag: ``--max-iter must be ...``) or, for
    instance, ``"config file fit.toml"`` (``config file fit.toml: 'max-iter' must be ...``,
    with ``key`` as the file spells it). A mismatch is an OptionError (exit code 2)."""
    if value is None:
        return None
    return check_value(rule_of(name), name, value, source, key)


# ------------------------------------------------------------------------ a saved fit result


@dataclass
class SavedFit:
    """What ``nlfit predict`` needs from a fit result, checked."""

    model: object
    params: np.ndarray  # (n,), NaN where the result has null (a non-finite value)
    covariance: np.ndarray | None  # (n, n) or None
    stats: dict  # conf_level (float or None), dof, sigma
    absolute_sigma: bool
    x_names: list[str]
    x_range: list | None = None  # [low, high] of the fitted x (one predictor), for predict --y
    y_name: str = "y"
    bootstrap: np.ndarray | None = None  # (k, n): the converged bootstrap refits (--bootstrap), for predict's bootstrap band


def check_fit_result(payload, source: str = "fit result") -> SavedFit:
    """Check a ``nlfit fit --format json`` result (also one NDJSON row of ``--group-by``) and
    rebuild its model. ``source`` starts every message, e.g. ``fit result r.json``. The
    parameters must be the model's, in its order, and the covariance n × n; a mismatch is
    an InputError (exit code 2) naming the key."""

    def fail(where: str, expected: str, value):
        raise InputError(f"{source}: '{where}' must be {expected}; got {describe(value, 'an object')}")

    if isinstance(payload, list):
        if payload and all(isinstance(item, dict) and "model_info" in item for item in payload):
            raise InputError(f"{source} is a method comparison (a list of {len(payload)} fits); save a single fit (one --method) for predict")
        raise InputError(f"{source} must be a JSON object (one fit result); got {describe(payload)}")
    if not isinstance(payload, dict):
        raise InputError(f"{source} must be a JSON object (one fit result); got {describe(payload, 'an object')}")
    for key in ("model_info", "params", "stats"):
        if key not in payload:
            raise InputError(f"{source} is not an nlfit fit result: it has no '{key}'")

    info = payload["model_info"]
    if not isinstance(info, dict):
        fail("model_info", "an object", info)
    spec = info.get("spec")
    if not isinstance(spec, str) or not spec.strip():
        fail("model_info.spec", "a model specification (a string)", spec)
    domain = info.get("domain")
    if domain is not None:
        if not (isinstance(domain, list) and len(domain) == 2 and all(is_number(v) and math.isfinite(float(v)) for v in domain)):
            fail("model_info.domain", "[low, high] (two finite numbers)", domain)
        if not domain[0] < domain[1]:
            raise InputError(f"{source}: 'model_info.domain' must have low < high; got {domain}")
    for key in ("x", "params"):
        if info.get(key) is not None:
            _names(info[key], f"model_info.{key}", fail)
    if info.get("y") is not None and not isinstance(info["y"], str):
        fail("model_info.y", "a string", info["y"])

    data = payload.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        fail("data", "an object", data)
    if data.get("x") is not None:
        _names(data["x"], "data.x", fail)
    if data.get("y") is not None and not isinstance(data["y"], str):
        fail("data.y", "a string", data["y"])
    own = list(info.get("x") or [])
    if info.get("groups") and info.get("x") is not None:  # a global fit (--share): its data's predictors and the group column
        own = [*own, str(info.get("group_by"))]
    if data.get("x") is not None and info.get("x") is not None and list(data["x"]) != own:
        raise InputError(f"{source}: 'model_info.x' {info['x']} and 'data.x' {data['x']} name different predictors")
    x_names = list(info["x"]) if info.get("groups") and info.get("x") else list(data.get("x") or info.get("x") or ["x"])

    params = payload["params"]
    if not isinstance(params, dict):
        fail("params", "an object {name: {value: number, ...}}", params)
    if not params:
        raise InputError(f"{source}: 'params' is empty")
    values = []
    for name, entry in params.items():
        if not isinstance(entry, dict) or "value" not in entry:
            fail(f"params.{name}", "an object with a 'value'", entry)
        value = entry["value"]
        if value is None:  # the contract writes a non-finite value as null
            values.append(math.nan)
            continue
        try:
            values.append(finite(value))
        except Mismatch:
            fail(f"params.{name}.value", "a finite number or null", value)

    stats = payload["stats"]
    if not isinstance(stats, dict):
        fail("stats", "an object", stats)
    level, dof, sigma = stats.get("conf_level"), stats.get("dof"), stats.get("sigma")
    if level is not None and not (is_number(level) and 0.0 < float(level) < 1.0):
        fail("stats.conf_level", "a number between 0 and 1 or null", level)
    for key, value in (("dof", dof), ("sigma", sigma)):
        if value is not None and not (is_number(value) and 0.0 <= float(value) < math.inf):
            fail(f"stats.{key}", "a non-negative number or null", value)
    absolute = payload.get("absolute_sigma", False)
    if not isinstance(absolute, bool):
        fail("absolute_sigma", "true or false", absolute)

    covariance = payload.get("covariance")
    if covariance is not None:
        if not isinstance(covariance, list) or not all(isinstance(row, list) for row in covariance):
            fail("covariance", "null or a list of rows of numbers", covariance)
        for i, row in enumerate(covariance):
            for j, value in enumerate(row):
                if value is not None and not (is_number(value) and math.isfinite(float(value))):
                    fail(f"covariance[{i}][{j}]", "a finite number or null", value)

    import numpy as np

    from nlfit.models.registry import model_from_json

    rebuild = dict(info)
    rebuild.setdefault("x", data.get("x"))
    rebuild.setdefault("y", data.get("y"))
    try:
        model = model_from_json(rebuild)
    except NlfitError as exc:
        raise InputError(f"{source}: 'model_info' does not describe a model nlfit can rebuild: {exc}") from None

    names, given = list(model.param_names), list(params)
    listed = f"the model {spec} has parameters {', '.join(names)}"
    missing = [name for name in names if name not in params]
    if missing:
        raise InputError(f"{source}: 'params' lacks the parameter '{missing[0]}' ({listed})")
    extra = [name for name in given if name not in names]
    if extra:
        raise InputError(f"{source}: 'params' has '{extra[0]}', which is not a parameter of the model ({listed})")
    if given != names:
        raise InputError(f"{source}: 'params' must list the parameters in the model's order ({', '.join(names)}); got {', '.join(given)}")

    n = len(names)
    if covariance is not None:
        if len(covariance) != n or any(len(row) != n for row in covariance):
            lengths = {len(row) for row in covariance} or {0}
            shape = f"{len(covariance)}×{lengths.pop()}" if len(lengths) == 1 else f"{len(covariance)} rows of different lengths"
            raise InputError(f"{source}: 'covariance' must be a {n}×{n} list of numbers (the model has {n} parameters); got {shape}")
        covariance = np.array([[math.nan if v is None else float(v) for v in row] for row in covariance], dtype=float).reshape(n, n)

    sample = _bootstrap_sample(payload.get("bootstrap"), n, fail)
    return SavedFit(
        model=model,
        params=np.array(values, dtype=float),
        covariance=covariance,
        stats={"conf_level": None if level is None else float(level), "dof": dof, "sigma": sigma},
        absolute_sigma=absolute,
        x_names=x_names,
        x_range=_x_range(data.get("x_range")),
        y_name=data.get("y") if isinstance(data.get("y"), str) else "y",
        bootstrap=sample,
    )


def _bootstrap_sample(boot, n: int, fail):
    """``bootstrap.sample`` (k rows of the n parameters, finite numbers), or None where the
    result has none."""
    import numpy as np

    if not isinstance(boot, dict) or boot.get("sample") is None:
        return None
    sample = boot["sample"]
    if not isinstance(sample, list) or not sample or not all(isinstance(row, list) and len(row) == n for row in sample):
        fail("bootstrap.sample", f"a non-empty list of rows of {n} numbers (the model's parameters)", sample)
    try:
        values = np.array(sample, dtype=float)
    except (TypeError, ValueError):
        fail("bootstrap.sample", "rows of finite numbers", sample)
    if not np.all(np.isfinite(values)):
        fail("bootstrap.sample", "rows of finite numbers", sample)
    return values


def _x_range(value) -> list | None:
    """``data.x_range`` when it is two finite numbers in order, else None."""
    if isinstance(value, list) and len(value) == 2 and all(is_number(v) and math.isfinite(float(v)) for v in value) and value[0] <= value[1]:
        return [float(value[0]), float(value[1])]
    return None


def _names(value, where: str, fail) -> list[str]:
    if not isinstance(value, list) or not value:
        fail(where, "a non-empty list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            fail(f"{where}[{i}]", "a non-empty string", item)
    return value
