"""The solver's ``Settings``: the numbers of a fit that change no compiled code.

They are traced arguments of the compiled iteration (``nlfit.solvers.loop``), so editing
one never recompiles. The type lives here, apart from the loop, because
``nlfit.options.FitOptions.settings`` makes it from the options and the options must be
importable without JAX and without the solver (``nlfit fit --help`` reads them); the loop
imports the options' layer indirectly, so the options importing the loop would be a cycle.

This module imports nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import jax


class Settings(NamedTuple):
    """Numbers that change no compiled code (traced, so editing them never recompiles). Made
    from the options by ``nlfit.options.FitOptions.settings``, which holds their defaults."""

    ftol: float | jax.Array
    xtol: float | jax.Array
    gtol: float | jax.Array
    max_iter: int | jax.Array
    step: float | jax.Array
    momentum: float | jax.Array
