"""``FitOptions``: every option of a fit, its type, range, default and help, declared once.

The command line (``nlfit fit``'s help texts), the TOML config file (its keys and their
checks, ``nlfit.schema.check_option``), the JSON echo of a result (``FitOptions.to_json``)
and the solver's traced numbers (``FitOptions.settings``) are all derived from the fields
below. Adding an option is one field here, one typer parameter in ``nlfit/cli/fit.py``, and
the code that uses it.

This module imports no JAX, and nothing above it: the rules come from ``nlfit.rules``, the
solver's ``Settings`` type from ``nlfit.solvers.settings`` (``nlfit.schema``, which checks
config files against these fields, imports this module, never the other way round).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from nlfit.errors import OptionError, printable
from nlfit.rules import MAX_ITER_LIMIT, SEED_LIMIT, STARTS_LIMIT, Bounds, Flag, Integer, Mismatch, Number, Text, Values, check_value
from nlfit.solvers.catalog import DEFAULT_GLOBALIZATION, resolve_globalization, resolve_method
from nlfit.solvers.settings import Settings

JAC_MODES = ("auto", "fwd", "rev", "fd")
FACTORIZATIONS = ("auto", "svd", "qr", "gram", "cholesky")
LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")


class Choice(Text):
    """One of a fixed list of names (the message lists them)."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = names
        self.expected = f"one of {', '.join(names)}"

    def check(self, value):
        if not isinstance(value, str) or value not in self.names:
            raise Mismatch(self.expected, value)
        return value


def option(default, rule, help: str):
    """A field of FitOptions: its default, the rule its value must pass (``nlfit.rules``),
    and the flag's help text (``{default}`` is replaced by the default)."""
    return field(default=default, metadata={"rule": rule, "help": help})


@dataclass(frozen=True)
class FitOptions:
    """The options of one fit, checked and normalized when the object is made: ``None`` for
    any field means its default, a bad value is an OptionError that names the flag.

    ``method`` and ``globalization`` hold the canonical names (``levenberg-marquardt`` is
    ``lm``; no globalization is the method's default); ``bounds`` is {name: (low, high)} and
    ``fix`` {name: value}, parsed from the flag's text or a config table."""

    method: str = option("lm", Text(listable=True), "gd | newton | gn | lm (default {default}); a comma list compares methods.")
    globalization: str | None = option(
        None, Text(), "line-search | trust-region | none (default per method: " + ", ".join(f"{m} {g}" for m, g in DEFAULT_GLOBALIZATION.items()) + ")."
    )
    jac: str = option("auto", Choice(JAC_MODES), "auto | fwd | rev | fd (default {default}: fwd when there are more residuals than parameters).")
    ftol: float = option(1e-15, Number(0.0), "Relative loss-reduction tolerance (default {default}).")
    xtol: float = option(1e-15, Number(0.0), "Relative step tolerance (default {default}).")
    gtol: float = option(1e-15, Number(0.0), "Gradient tolerance (default {default}).")
    max_iter: int = option(2000, Integer(1, MAX_ITER_LIMIT), "Maximum iterations (default {default}).")
    step: float = option(1e-3, Number(0.0, low_open=True), "gd: learning rate (none) or first trial step (line search). Default {default}.")
    momentum: float = option(0.0, Number(0.0, 1.0, high_open=True), "gd with --globalization none: heavy-ball momentum beta in [0, 1) (default {default}).")
    batch_size: int | None = option(None, Integer(1), "gd with --globalization none: minibatch size (stochastic gradient descent).")
    seed: int = option(0, Integer(0, SEED_LIMIT), "Random seed of the random starts and of --batch-size (default {default}).")
    timeout: float | None = option(None, Number(0.0, low_open=True), "Stop after this many seconds with the best result so far.")
    absolute_sigma: bool = option(False, Flag(), "--sigma are true standard deviations (as scipy's curve_fit absolute_sigma).")
    factorization: str = option(
        "auto",
        Choice(FACTORIZATIONS),
        "auto | svd | qr | gram | cholesky: steps from J and its SVD, a streaming QR, J^T J, or J^T J with a closed-form Cholesky (default {default}: "
        "cholesky for grouped LM fits of at most 10 parameters, else svd; qr from 100k points; gram for large batches).",
    )
    loss: str = option("linear", Choice(LOSSES), "linear | soft_l1 | huber | cauchy | arctan (scipy's robust losses; default {default}).")
    f_scale: float = option(1.0, Number(0.0, low_open=True), "Robust loss: residual scale C at which it starts to flatten (default {default}).")
    bounds: Mapping[str, tuple[float, float]] | None = option(None, Bounds(), "Parameter bounds, e.g. b1=0:inf,b2=-1:1.")
    fix: Mapping[str, float] | None = option(None, Values(False, 'a string such as "b2=0.5"'), "Hold parameters at values, e.g. b2=0.5.")
    conf_level: float = option(
        0.95,
        Number(0.0, 1.0, low_open=True, high_open=True, expected="a number between 0 and 1 (e.g. 0.95)"),
        "Level of the confidence intervals (default {default}).",
    )
    starts: int | str = option(
        "auto",
        Integer(1, STARTS_LIMIT, auto=True),
        "Starts to try: auto (default: several for models nonlinear in their parameters) or a count; 1 is the given start alone.",
    )

    def __post_init__(self):
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None:
                value = spec.default
            elif spec.name == "starts" and isinstance(value, str) and value.strip().isdigit():
                value = int(value)  # --starts 8 arrives as text (it also takes "auto")
            value = check_value(spec.metadata["rule"], spec.name, value)
            object.__setattr__(self, spec.name, value)
        method = resolve_method(self.method)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "globalization", resolve_globalization(self.globalization, method))
        object.__setattr__(self, "bounds", parse_bounds(self.bounds))
        object.__setattr__(self, "fix", parse_fix(self.fix))
        simple_gd = method == "gd" and self.globalization == "none"
        if self.momentum and not simple_gd:
            raise OptionError("--momentum applies to --method gd with --globalization none")
        if self.batch_size is not None and not simple_gd:
            raise OptionError("--batch-size (stochastic gradient descent) applies to --method gd with --globalization none")

    @classmethod
    def of(cls, given: Mapping | None = None, **more) -> FitOptions:
        """From a mapping of option names (underscores) to values; None means the default, a
        name that is not an option is an OptionError."""
        values = {**(given or {}), **more}
        unknown = set(values) - set(NAMES)
        if unknown:
            raise OptionError(f"unknown fit option(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    def replace(self, **changes) -> FitOptions:
        """A copy with ``changes``, checked again (``globalization=None`` is the method's default)."""
        return dataclasses.replace(self, **changes)

    def settings(self) -> Settings:
        """The numbers the compiled solver takes as traced arguments (``nlfit.solvers.settings``)."""
        return Settings(**{name: getattr(self, name) for name in Settings._fields})

    def to_json(self) -> dict:
        """Every option in force, defaults included, in the form a config file takes back
        (bounds as "low:high" text, so infinities survive JSON)."""
        out = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "bounds" and value is not None:
                value = {name: f"{_number_text(low)}:{_number_text(high)}" for name, (low, high) in value.items()}
            elif spec.name == "fix" and value is not None:
                value = dict(value)
            out[spec.name] = value
        return out


def help_text(name: str) -> str:
    """The help of ``--name`` with the default it shows taken from the field."""
    spec = next(spec for spec in fields(FitOptions) if spec.name == name)
    return spec.metadata["help"].format(default=_number_text(spec.default) if isinstance(spec.default, float) else spec.default)


def _number_text(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def parse_bounds(value) -> dict | None:
    """'b1=0:inf,b2=-1:1' (or a table {b1 = [0, inf]} / {b1 = "0:inf"}) -> {name: (low, high)}."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        items = value.items()
    else:
        items = []
        for part in str(value).split(","):
            if part.strip():
                name, sep, rest = part.partition("=")
                if not sep:
                    raise OptionError(f"--bounds entry '{part.strip()}' is not name=low:high")
                items.append((name.strip(), rest))
    out = {}
    for name, spec in items:
        try:
            low, high = spec if isinstance(spec, (list, tuple)) else str(spec).split(":")
            out[str(name)] = (float(low), float(high))
        except (ValueError, TypeError):
            raise OptionError(f"--bounds {name}: expected low:high such as 0:inf or -1:1; got '{spec}'") from None
    return out


def parse_fix(value) -> dict | None:
    """'b2=0.5,b3=1' (or a table) -> {name: value}."""
    parsed = parse_p0(value, "--fix")
    if parsed is not None and not isinstance(parsed, dict):
        raise OptionError("--fix must be name=value pairs, e.g. b2=0.5")
    return parsed


def parse_number_list(text: str, option: str) -> list[float]:
    """'1,0,10' -> [1.0, 0.0, 10.0]; nan and inf are refused (no fit or prediction uses them)."""
    try:
        numbers = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"{option} must be comma-separated numbers; got '{printable(text)}'") from None
    if not all(math.isfinite(v) for v in numbers):
        raise OptionError(f"{option} must be finite numbers; got '{printable(text)}'")
    return numbers


def parse_p0(value, option: str = "--p0"):
    """'1,0,10' -> [1.0, 0.0, 10.0]; 'c0=1,c2=10' -> {'c0': 1.0, 'c2': 10.0}; TOML lists and
    tables (and the library's dicts) pass, as numbers. ``option`` names the flag in messages."""
    if value is None:
        return None
    try:
        if isinstance(value, Mapping):
            return {str(k): float(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
    except (TypeError, ValueError):
        raise OptionError(f"{option} values must be numbers") from None
    text = str(value).strip()
    if "=" in text:
        out = {}
        for part in text.split(","):
            if not part.strip():
                continue
            name, _, number = part.partition("=")
            try:
                out[name.strip()] = float(number)
            except ValueError:
                raise OptionError(f"{option} entry '{part.strip()}' is not name=number") from None
        return out
    return parse_number_list(text, option)


NAMES = tuple(spec.name for spec in fields(FitOptions))
RULES = {spec.name: spec.metadata["rule"] for spec in fields(FitOptions)}
DEFAULTS = FitOptions()
