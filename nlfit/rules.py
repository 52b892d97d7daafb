"""The rules an option's value must pass, and the message when it does not.

A rule is a small object with ``expected`` (the words of the message) and ``check(value)``,
which returns the value normalized or raises ``Mismatch``; ``check_value`` turns a mismatch
into one OptionError line that names the flag or the config key. The rules are strict: a
boolean is not a number, and a string is never read as a number or a boolean.

This module is the bottom of the option layer: ``nlfit.options`` declares each field of
``FitOptions`` with one of these rules, and ``nlfit.schema`` (above both) adds the options of
``nlfit fit`` that are not the fit's own and checks config files and saved results. It
imports nothing of nlfit but the errors, so both can import it without importing each other.
"""

from __future__ import annotations

import json
import math

from nlfit.errors import OptionError

MAX_ITER_LIMIT = 10**9  # iterations: far beyond any real fit, well inside the solver's int64 counters
SEED_LIMIT = 2**32 - 1  # the solver's random keys are uint32 (jax), numpy's default_rng needs >= 0
STARTS_LIMIT = 10_000  # starts per fit (--starts auto uses at most 32); more only hangs
COMMAND_LINE = "command line"


class Mismatch(Exception):
    """A value that breaks a rule: what was expected, what was found, and where inside the
    value (``[2]`` of a list, ``.b1`` of a table), if not the value itself."""

    def __init__(self, expected: str, value, where: str = ""):
        super().__init__(expected)
        self.expected, self.value, self.where = expected, value, where


def describe(value, table: str = "a table") -> str:
    """The value as the message shows it: true, 5, 1.5, the string "0.5", a list, a table."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # more digits than Python converts
            return "an integer of thousands of digits"
        return text if len(text) <= 30 else f"{text[:12]}... (an integer of {len(text)} digits)"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 60 else value[:56] + "...", ensure_ascii=False)
        return f"the string {text}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return table
    return f"a {type(value).__name__.replace('datetime', 'date-time')}"  # TOML dates and times


def is_number(value) -> bool:
    """An int or a float, not a bool (a TOML or JSON boolean is not a number), and not an
    integer beyond the range of a float (a 400-digit integer in a JSON file)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, int) or abs(value).bit_length() <= 1024


def finite(value, expected: str = "a finite number", where: str = "") -> float:
    if not is_number(value):
        raise Mismatch(expected, value, where)
    try:
        number = float(value)
    except OverflowError:
        raise Mismatch(expected, value, where) from None
    if not math.isfinite(number):
        raise Mismatch(expected, value, where)
    return number


# ----------------------------------------------------------------------------- the rules


class Flag:
    expected = "true or false"

    def check(self, value):
        if not isinstance(value, bool):
            raise Mismatch(self.expected, value)
        return value


class Quiet:
    expected = "true, false, 0, 1 or 2"

    def check(self, value):
        if isinstance(value, bool) or (isinstance(value, int) and 0 <= value <= 2):
            return value
        raise Mismatch(self.expected, value)


class Integer:
    def __init__(self, low: int, high: int | None = None, auto: bool = False):
        self.low, self.high, self.auto = low, high, auto
        words = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        self.expected = f'"auto" or {words}' if auto else words

    def check(self, value):
        if self.auto and isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, int):
            raise Mismatch(self.expected, value)
        if value < self.low or (self.high is not None and value > self.high):
            raise Mismatch(self.expected, value)
        return value


class Number:
    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
                 expected: str | None = None):  # fmt: skip
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        if expected is None:
            if low is not None and high is not None:
                expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            elif low is not None:
                expected = f"a number {'>' if low_open else '>='} {low:g}"
            else:
                expected = "a finite number"
        self.expected = expected

    def check(self, value):
        number = finite(value, self.expected)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            raise Mismatch(self.expected, value)
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            raise Mismatch(self.expected, value)
        return number


class Text:
    """A string; ``listable``: or a list of them (joined with commas, as the flag takes
    them); ``column``: a data column, by name or by 1-based number (``y = 2``)."""

    def __init__(self, listable: bool = False, column: bool = False):
        self.listable, self.column = listable, column
        one = "a column name or number" if column else "a string"
        self.expected = f"{one} or a list of {'them' if column else 'strings'}" if listable else one
        self.item = "a column name or number" if column else "a non-empty string"

    def _one(self, value, where: str = "") -> str:
        if isinstance(value, str) and (value.strip() or not where):
            return value
        if self.column and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return str(value)
        raise Mismatch(self.item if where else self.expected, value, where)

    def check(self, value):
        if self.listable and isinstance(value, list):
            return ",".join(self._one(item, f"[{i}]") for i, item in enumerate(value))  # x = ["x1", "x2"] is --x x1,x2
        return self._one(value)


class Values:
    """Parameter values: a table name = number, with ``by_position`` also a list of numbers,
    or the flag's string (p0: ``Values(True, ...)``, fix: ``Values(False, ...)``)."""

    def __init__(self, by_position: bool, example: str):
        self.by_position = by_position
        table = "a table of name = number"
        self.expected = f"a list of numbers, {table}, or {example}" if by_position else f"{table} or {example}"

    def check(self, value):
        if isinstance(value, str):
            return value
        if self.by_position and isinstance(value, list):
            return [finite(item, "a finite number", f"[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {name: finite(item, "a finite number", f".{name}") for name, item in value.items()}
        raise Mismatch(self.expected, value)


class Bounds:
    """bounds: a table name = [low, high] or name = "low:high", or the flag's string."""

    expected = 'a table of name = [low, high] or a string such as "b1=0:inf,b2=-1:1"'
    entry = '[low, high] (two numbers, inf allowed) or a string "low:high"'

    def check(self, value):
        if isinstance(value, str):
            return value
        if not isinstance(value, dict):
            raise Mismatch(self.expected, value)
        out = {}
        for name, spec in value.items():
            if isinstance(spec, str):
                out[name] = spec
            elif isinstance(spec, (list, tuple)) and len(spec) == 2 and all(is_number(v) and not math.isnan(float(v)) for v in spec):
                out[name] = [float(v) for v in spec]
            else:
                raise Mismatch(self.entry, spec, f".{name}")
        return out


def check_value(rule, name: str, value, source: str = COMMAND_LINE, key: str | None = None):
    """``value`` of option ``name`` checked by ``rule`` and normalized; None (not given)
    passes. ``source``: COMMAND_LINE (the message names the flag: ``--max-iter must be
    ...``) or, for instance, ``"config file fit.toml"`` (``config file fit.toml: 'max-iter'
    must be ...``, with ``key`` as the file spells it). A mismatch is an OptionError."""
    if value is None:
        return None
    try:
        return rule.check(value)
    except Mismatch as bad:
        if source == COMMAND_LINE:
            subject = f"--{name.replace('_', '-')}{bad.where}"
        else:
            subject = f"{source}: '{key or name}{bad.where}'"
        raise OptionError(f"{subject} must be {bad.expected}; got {describe(bad.value)}") from None
