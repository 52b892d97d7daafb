"""nlfit's own exception types.

Every error a user can cause is an :class:`NlfitError`. Each carries the process exit code
that the CLI uses, so the command line turns any of them into one line on stderr and that
code, with no traceback (``--debug`` shows the traceback).

Exit codes: 0 converged, 1 ran but did not converge, 2 usage or input error,
130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations


class NlfitError(Exception):
    """Base class for errors caused by the user's input or options."""

    exit_code: int = 2


class InputError(NlfitError):
    """Bad data: unreadable file, missing column, a cell that is not a number."""


class ModelError(NlfitError):
    """Unknown model, bad model specification, or a p0 that does not fit the model."""


class FormulaError(ModelError):
    """A user formula that cannot be parsed or is not allowed.

    ``position`` is the 0-based column in the formula where the problem is, when known.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.formula = formula
        self.position = position
        if formula is not None and position is not None:
            message = f"{message} (at column {position + 1}: {formula[:position]}\u2192{formula[position:]})"
        super().__init__(message)


class OptionError(NlfitError):
    """An option value that is not allowed (unknown method, negative tolerance, ...)."""


def printable(text) -> str:
    """``text`` with control characters shown escaped (``\\x1b``, ``\\n``), so a file name,
    a header or a cell quoted in a message cannot move the cursor or recolour the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


EXCERPT_CHARS = 48  # the most characters of a cell or a header quoted in a message


def excerpt(text, limit: int = EXCERPT_CHARS, quoted: bool = False) -> str:
    """``text`` as a message quotes it (``printable``; ``quoted``: as ``repr`` writes it), cut
    to its first ``limit`` characters, then '...' and its length: a cell or a header of a
    megabyte stays a few words of a one-line message."""
    text = str(text)
    shown = text[:limit]
    shown = printable(repr(shown) if quoted else shown)
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"
