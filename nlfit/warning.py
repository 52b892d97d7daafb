"""One kind of warning for every part of a fit: the reader's, the statistics', the checks'
and the solver's all become :class:`FitWarning` values, and every JSON result carries them
as objects ``{"kind", "message", "fatal", "params"}``.

``fatal`` says that the result is known to be wrong (a converged status then becomes
``suspect``); ``params`` names the parameters concerned (empty when none is).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FitWarning:
    kind: str
    message: str
    fatal: bool = False
    params: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fatal": self.fatal, "params": list(self.params)}

    def __str__(self) -> str:
        return self.message


def from_json(value) -> FitWarning:
    """A warning read back from a JSON result (objects; plain strings from older files)."""
    if isinstance(value, str):
        return FitWarning("other", value)
    return FitWarning(str(value.get("kind", "other")), str(value.get("message", "")), bool(value.get("fatal", False)), tuple(value.get("params") or ()))
